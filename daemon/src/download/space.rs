//! Free space before a download starts (`docs/download.md#free-space`):
//! the bytes the download will write, minus what it can reuse, plus the
//! space its install will need, against what the game directory's
//! filesystem has free. Blocking (one `stat` per file and a `statvfs`);
//! runs on a blocking thread, before anything is written.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lanspread_proto::model::GameFileDescription;

use crate::install::archives::is_archive_name;

/// What a download needs on disk, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceNeed {
    /// Bytes of the files the download writes.
    pub write: u64,
    /// Of those, bytes already allocated on disk at the same paths: files
    /// are written in place without truncating, so these blocks are
    /// reused (a resumed or updated download).
    pub reusable: u64,
    /// The install's estimate: the size of the top-level archives, once
    /// more (extraction writes at least about as much as a game archive
    /// holds compressed; the uncompressed size is not known before
    /// extraction).
    pub install: u64,
    /// Free space for unprivileged users on the game directory's
    /// filesystem.
    pub free: u64,
}

impl SpaceNeed {
    /// Bytes that must be free.
    pub fn needed(&self) -> u64 {
        (self.write - self.reusable) + self.install
    }

    pub fn fits(&self) -> bool {
        self.needed() <= self.free
    }
}

/// Measures what downloading `files` into `root` (inside `game_dir`) needs.
pub fn space_need(
    game_dir: &Path,
    root: &Path,
    files: &[GameFileDescription],
) -> std::io::Result<SpaceNeed> {
    let mut need = SpaceNeed {
        write: 0,
        reusable: 0,
        install: 0,
        free: 0,
    };
    for file in files.iter().filter(|f| !f.is_dir) {
        need.write += file.size;
        if let Ok(meta) = std::fs::symlink_metadata(root.join(&file.relative_path))
            && meta.is_file()
        {
            need.reusable += (meta.blocks() * 512).min(file.size);
        }
        if !file.relative_path.contains('/') && is_archive_name(&file.relative_path) {
            need.install += file.size;
        }
    }
    let stats = nix::sys::statvfs::statvfs(game_dir).map_err(std::io::Error::from)?;
    need.free = stats.blocks_available() as u64 * stats.fragment_size() as u64;
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::download::test_file as file;

    #[test]
    fn archives_count_twice_and_bytes_on_disk_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        std::fs::create_dir_all(root.join("data")).unwrap();
        // 64 KiB already written at its final path: reusable.
        std::fs::write(root.join("pak0.eti"), vec![1u8; 65536]).unwrap();
        let files = [
            file("pak0.eti", 1 << 20),
            file("data/inner.zip", 4096),
            file("readme.txt", 100),
            file("version.ini", 14),
        ];
        let need = space_need(dir.path(), &root, &files).unwrap();
        assert_eq!(need.write, (1 << 20) + 4096 + 100 + 14);
        assert_eq!(need.reusable, 65536);
        // Only the top-level archive is extracted.
        assert_eq!(need.install, 1 << 20);
        assert_eq!(need.needed(), need.write - 65536 + (1 << 20));
        assert!(need.free > 0);
    }
}
