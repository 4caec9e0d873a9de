//! The version-sentinel transaction of a download, on disk
//! (`docs/download.md#the-sentinel-transaction`). `version.ini` is the
//! commit record: while a download runs there is none, so a crash at any
//! point leaves a game that is not "downloaded"; the new sentinel appears
//! only after every other byte is durable.
//!
//! Blocking filesystem work; callers run it off the async threads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use lanspread_proto::model::GameFileDescription;

use crate::library::SENTINEL;

/// Where the old sentinel is parked during an update.
pub const DISCARDED: &str = ".version.ini.discarded";
/// Where the new sentinel is staged before the atomic rename.
pub const STAGED: &str = ".version.ini.tmp";

/// Why a step of the transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SentinelError {
    let path = path.to_owned();
    move |source| SentinelError::Io {
        action,
        path,
        source,
    }
}

/// Fewer files than this written since the last journal save are synced
/// one by one (`fdatasync`); this many or more with one `syncfs` of the
/// game root's filesystem, which costs one flush however many files were
/// written (150 000 one-chunk files would otherwise take 150 000 syncs).
pub const SYNCFS_MIN_FILES: usize = 16;

/// Makes the chunks written into one game root durable, opened by
/// [`begin`] before the first chunk is written.
#[derive(Debug)]
pub struct Durability {
    /// The game root, open since before the first write: `syncfs` reports
    /// every writeback error on its filesystem since this descriptor was
    /// opened (Linux 5.8 and later), so no failed write goes unnoticed.
    root: File,
    root_path: PathBuf,
    /// Every pre-created file is on the root's filesystem, so one `syncfs`
    /// covers them all (a folder mounted from elsewhere inside the root
    /// means per-file syncs, always).
    one_filesystem: bool,
}

/// Step 3: parks an old `version.ini`, creates folders, and pre-creates
/// every non-sentinel file at least at its final size, in one pass over
/// the list. Existing data is kept (a resumed download and local reuse
/// rely on it); a file that is too short is grown, one that is too long
/// keeps its tail until [`trim`]. Also returns, per entry of
/// `files`, how many bytes of it were on disk before (0 for a new file, a
/// folder or the sentinel): only those can hold reusable chunks.
pub fn begin(
    root: &Path,
    files: &[GameFileDescription],
) -> Result<(Durability, Vec<u64>), SentinelError> {
    std::fs::create_dir_all(root).map_err(io("create", root))?;
    let root_dir = File::open(root).map_err(io("open", root))?;
    let root_dev = root_dir.metadata().map_err(io("stat", root))?.dev();
    let mut one_filesystem = true;
    let sentinel = root.join(SENTINEL);
    if sentinel.exists() {
        std::fs::rename(&sentinel, root.join(DISCARDED)).map_err(io("park", &sentinel))?;
    }
    // Files of one folder usually follow each other: its parent is
    // created once, not once per file.
    let mut last_parent: Option<PathBuf> = None;
    let mut old_sizes = vec![0; files.len()];
    for (file, old_size) in files.iter().zip(&mut old_sizes) {
        let path = root.join(&file.relative_path);
        if file.is_dir {
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
            continue;
        }
        if file.relative_path == SENTINEL {
            continue;
        }
        if let Some(parent) = path.parent()
            && last_parent.as_deref() != Some(parent)
        {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            last_parent = Some(parent.to_owned());
        }
        let handle = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("create", &path))?;
        let metadata = handle.metadata().map_err(io("stat", &path))?;
        one_filesystem &= metadata.dev() == root_dev;
        *old_size = metadata.len();
        // Grown now; shrunk only at the end ([`trim`]): the bytes past the
        // new end may be what a moved chunk is assembled from.
        if metadata.len() < file.size {
            handle.set_len(file.size).map_err(io("size", &path))?;
        }
    }
    sync_dir(root)?;
    let durability = Durability {
        root: root_dir,
        root_path: root.to_owned(),
        one_filesystem,
    };
    Ok((durability, old_sizes))
}

impl Durability {
    /// Makes every chunk written so far to `paths` (all inside the root)
    /// durable, data and metadata: with one `syncfs` of the root's
    /// filesystem when there are [`SYNCFS_MIN_FILES`] or more and they all
    /// live on it, else with one `fdatasync` per file.
    pub fn sync(&self, paths: &[PathBuf]) -> Result<(), SentinelError> {
        if self.one_filesystem && paths.len() >= SYNCFS_MIN_FILES {
            return nix::unistd::syncfs(&self.root)
                .map_err(|errno| io("sync the filesystem of", &self.root_path)(errno.into()));
        }
        for path in paths {
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| file.sync_data())
                .map_err(io("sync", path))?;
        }
        Ok(())
    }
}

/// Before the commit: cuts every file that is longer than the new version
/// says (its old tail was kept for local reuse) and syncs it.
pub fn trim(root: &Path, files: &[GameFileDescription]) -> Result<(), SentinelError> {
    for file in files {
        if file.is_dir || file.relative_path == SENTINEL {
            continue;
        }
        let path = root.join(&file.relative_path);
        let len = std::fs::metadata(&path).map_err(io("stat", &path))?.len();
        if len > file.size {
            let handle = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io("open", &path))?;
            handle.set_len(file.size).map_err(io("size", &path))?;
            handle.sync_all().map_err(io("sync", &path))?;
        }
    }
    Ok(())
}

/// Step 5: stages the new sentinel, then renames it into place atomically
/// and drops the parked old one.
pub fn commit(root: &Path, sentinel_bytes: &[u8]) -> Result<(), SentinelError> {
    let staged = root.join(STAGED);
    let mut file = File::create(&staged).map_err(io("stage", &staged))?;
    file.write_all(sentinel_bytes)
        .map_err(io("stage", &staged))?;
    file.sync_all().map_err(io("sync", &staged))?;
    drop(file);
    let sentinel = root.join(SENTINEL);
    std::fs::rename(&staged, &sentinel).map_err(io("commit", &sentinel))?;
    remove_if_present(&root.join(DISCARDED))?;
    sync_dir(root)
}

/// A failed or cancelled download: removes both temporary names; the old
/// sentinel is not restored (the old version's files may be overwritten
/// already, so the game is honestly "not downloaded").
pub fn abort(root: &Path) -> Result<(), SentinelError> {
    remove_if_present(&root.join(STAGED))?;
    remove_if_present(&root.join(DISCARDED))?;
    sync_dir(root)
}

fn remove_if_present(path: &Path) -> Result<(), SentinelError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path)(err)),
        _ => Ok(()),
    }
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), SentinelError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Step 4 as the download does it (`store::ChunkWriter`), unverified.
    fn write_chunk(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all_at(data, offset)
    }

    use crate::download::test_file as file;

    #[test]
    fn an_update_parks_the_old_sentinel_and_commits_the_new_one_last() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(SENTINEL), b"1.0").unwrap();
        std::fs::write(root.join("data.eti"), b"old data that is longer").unwrap();
        let files = [
            file("data.eti", 8),
            file("maps/a.eti", 3),
            file("empty", 0),
            file(SENTINEL, 3),
            GameFileDescription {
                relative_path: "dir".into(),
                is_dir: true,
                size: 0,
                chunk_hashes: vec![],
            },
        ];
        let (_, old_sizes) = begin(&root, &files).unwrap();
        assert_eq!(old_sizes, [23, 0, 0, 0, 0], "what each file held before");
        assert!(!root.join(SENTINEL).exists());
        assert_eq!(std::fs::read(root.join(DISCARDED)).unwrap(), b"1.0");
        assert_eq!(
            std::fs::metadata(root.join("data.eti")).unwrap().len(),
            23,
            "a shrinking file keeps its old tail until trim"
        );
        assert_eq!(std::fs::metadata(root.join("maps/a.eti")).unwrap().len(), 3);
        assert!(root.join("empty").is_file() && root.join("dir").is_dir());

        write_chunk(&root.join("maps/a.eti"), 1, b"yz").unwrap();
        assert_eq!(std::fs::read(root.join("maps/a.eti")).unwrap(), b"\0yz");
        write_chunk(&root.join("maps/a.eti"), 0, b"x").unwrap();
        assert_eq!(
            std::fs::read(root.join("maps/a.eti")).unwrap(),
            b"xyz",
            "no truncation"
        );

        trim(&root, &files).unwrap();
        assert_eq!(std::fs::read(root.join("data.eti")).unwrap(), b"old data");
        commit(&root, b"2.0").unwrap();
        assert_eq!(std::fs::read(root.join(SENTINEL)).unwrap(), b"2.0");
        assert!(!root.join(DISCARDED).exists() && !root.join(STAGED).exists());
    }

    #[test]
    fn many_written_files_are_synced_with_one_syncfs_and_few_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        let files: Vec<_> = (0..SYNCFS_MIN_FILES)
            .map(|i| file(&format!("d{}/f{i}", i % 3), 2))
            .collect();
        let (durability, _) = begin(&root, &files).unwrap();
        assert!(durability.one_filesystem);
        let paths: Vec<PathBuf> = files.iter().map(|f| root.join(&f.relative_path)).collect();
        for path in &paths {
            write_chunk(path, 0, b"ok").unwrap();
        }
        // Many files: one syncfs of the root's filesystem.
        durability.sync(&paths).unwrap();
        // Few files: each one synced by name, so a vanished one is an error
        // that names it.
        std::fs::remove_file(&paths[0]).unwrap();
        let err = durability.sync(&paths[..1]).unwrap_err();
        assert!(err.to_string().contains("f0"), "{err}");
        for path in &paths[1..] {
            assert_eq!(std::fs::read(path).unwrap(), b"ok");
        }
    }

    #[test]
    fn an_abort_removes_both_temporary_names_and_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(SENTINEL), b"1.0").unwrap();
        begin(root, &[file("a", 1)]).unwrap();
        std::fs::write(root.join(STAGED), b"2.0").unwrap();
        abort(root).unwrap();
        assert!(!root.join(SENTINEL).exists());
        assert!(!root.join(DISCARDED).exists() && !root.join(STAGED).exists());
        abort(root).unwrap(); // idempotent
    }
}
