//! Reusing bytes already on disk (`docs/download.md#reusing-local-bytes`):
//! before anything crosses the network, each chunk the download still
//! needs is looked for where the new version puts it — same file, same
//! offset — among the bytes that file held before the download began; a
//! region whose BLAKE3 hash is the chunk's counts as done without being
//! written. An update that changed a few files in place, or a first
//! download into a root that already holds some of them, fetches only the
//! rest.
//!
//! Nothing is written here, so no bytes another chunk could need are ever
//! overwritten, and an interrupted pass costs nothing but its time.
//!
//! Blocking work; callers run it off the async threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lanspread_proto::model::GameFileDescription;

use super::plan::ChunkId;
use super::sentinel::SentinelError;

/// A chunk the download still needs, where it goes.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub id: ChunkId,
    /// Index into the download's file list.
    pub file: usize,
    pub offset: u64,
    pub length: u64,
    /// BLAKE3, hex.
    pub hash: String,
}

/// How far the pass got, for progress events (shared with the task that
/// reports them).
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read and hashed so far.
    pub checked: AtomicU64,
    /// Bytes found in place so far.
    pub reused: AtomicU64,
}

/// The chunks of `wanted` already in place under `root`. `old_sizes[f]`
/// is how many bytes file `f` held before the download began (what
/// `sentinel::begin` reports): only chunks that lie wholly inside them are
/// read, so a new or grown file costs no reads. Stops early (with what it
/// found) once `stop` is set.
pub fn find_in_place(
    root: &Path,
    files: &[GameFileDescription],
    old_sizes: &[u64],
    wanted: &[Wanted],
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<ChunkId>, SentinelError> {
    let mut found = Vec::new();
    let mut buffer = Vec::new();
    let mut open: Option<(usize, File)> = None;
    for chunk in wanted {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if chunk.offset + chunk.length > old_sizes[chunk.file] || chunk.length == 0 {
            continue;
        }
        let path = root.join(&files[chunk.file].relative_path);
        let io = |action: &'static str| {
            let path = path.clone();
            move |source| SentinelError::Io {
                action,
                path,
                source,
            }
        };
        if open.as_ref().is_none_or(|(f, _)| *f != chunk.file) {
            open = Some((chunk.file, File::open(&path).map_err(io("open"))?));
        }
        let (_, file) = open.as_ref().expect("opened above");
        buffer.resize(chunk.length as usize, 0);
        file.read_exact_at(&mut buffer, chunk.offset)
            .map_err(io("read"))?;
        progress.checked.fetch_add(chunk.length, Ordering::Relaxed);
        if blake3::hash(&buffer).to_hex().as_str() == chunk.hash {
            progress.reused.fetch_add(chunk.length, Ordering::Relaxed);
            found.push(chunk.id);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::download::test_file as file;

    fn wanted(id: ChunkId, file: usize, offset: u64, bytes: &[u8]) -> Wanted {
        Wanted {
            id,
            file,
            offset,
            length: bytes.len() as u64,
            hash: blake3::hash(bytes).to_hex().to_string(),
        }
    }

    #[test]
    fn only_chunks_wholly_inside_the_old_bytes_are_read_and_matched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // "a" held 10 bytes before; the new version keeps 0..4, changes
        // 4..8 and grows past 10 (the grown region is zeros on disk now).
        std::fs::write(root.join("a"), b"keepXXXXtail\0\0\0\0").unwrap();
        std::fs::write(root.join("b"), b"").unwrap();
        let files = [file("a", 16), file("b", 4)];
        let old_sizes = [10, 0];
        let wanted = [
            wanted(0, 0, 0, b"keep"),      // in place: reused
            wanted(1, 0, 4, b"NEW!"),      // changed: fetched
            wanted(2, 0, 8, b"ta\0\0"),    // straddles the old end: not read
            wanted(3, 0, 12, b"\0\0\0\0"), // beyond the old end: not read
            wanted(4, 1, 0, b"\0\0\0\0"),  // a new file: not read
        ];
        let progress = Progress::default();
        let stop = AtomicBool::new(false);
        let found = find_in_place(root, &files, &old_sizes, &wanted, &progress, &stop).unwrap();
        assert_eq!(found, [0]);
        assert_eq!(
            progress.checked.load(Ordering::Relaxed),
            8,
            "two chunks read"
        );
        assert_eq!(progress.reused.load(Ordering::Relaxed), 4);
        // Stopped before it starts: nothing.
        stop.store(true, Ordering::Relaxed);
        let found = find_in_place(root, &files, &old_sizes, &wanted, &progress, &stop).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn a_file_that_vanished_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = [file("gone", 4)];
        let err = find_in_place(
            dir.path(),
            &files,
            &[4],
            &[wanted(0, 0, 0, b"abcd")],
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
