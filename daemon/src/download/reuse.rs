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

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lanspread_proto::model::GameFileDescription;
use lanspread_proto::wire::CHUNK_SIZE;

use super::plan::ChunkId;
use super::sentinel::SentinelError;
use crate::prepare::PreparedManifest;

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

/// Per entry of `files`, the chunk hashes of the same path in `replaces`
/// (the file list this host serves for the version on disk) when the file
/// still has the size and modification time it was hashed at: those
/// hashes stand for its bytes, as they do when this host serves them.
/// Call before anything writes to the files.
pub fn known_hashes(
    root: &Path,
    files: &[GameFileDescription],
    replaces: Option<&PreparedManifest>,
) -> Vec<Option<Vec<String>>> {
    let Some(replaces) = replaces else {
        return vec![None; files.len()];
    };
    let by_path: HashMap<&str, usize> = replaces
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.relative_path.as_str(), i))
        .collect();
    files
        .iter()
        .map(|file| {
            let &old = by_path.get(file.relative_path.as_str())?;
            let stamp = replaces.stamps[old]?;
            let meta = std::fs::symlink_metadata(root.join(&file.relative_path)).ok()?;
            let now = (meta.len(), crate::library::mtime_ns(&meta));
            (meta.is_file() && now == stamp).then(|| replaces.files[old].chunk_hashes.clone())
        })
        .collect()
}

/// The chunks of `wanted` already in place under `root`. `old_sizes[f]`
/// is how many bytes file `f` held before the download began (what
/// `sentinel::begin` reports): only chunks that lie wholly inside them are
/// read, so a new or grown file costs no reads. A chunk whose hash
/// `known[f]` (see [`known_hashes`]) has at its place is found without
/// reading. Stops early (with what it found) once `stop` is set.
pub fn find_in_place(
    root: &Path,
    files: &[GameFileDescription],
    old_sizes: &[u64],
    known: &[Option<Vec<String>>],
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
        let index = (chunk.offset / CHUNK_SIZE) as usize;
        if let Some(hashes) = &known[chunk.file]
            && chunk.offset % CHUNK_SIZE == 0
            && hashes.get(index) == Some(&chunk.hash)
        {
            progress.reused.fetch_add(chunk.length, Ordering::Relaxed);
            found.push(chunk.id);
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
        let known = [None, None];
        let found =
            find_in_place(root, &files, &old_sizes, &known, &wanted, &progress, &stop).unwrap();
        assert_eq!(found, [0]);
        assert_eq!(
            progress.checked.load(Ordering::Relaxed),
            8,
            "two chunks read"
        );
        assert_eq!(progress.reused.load(Ordering::Relaxed), 4);
        // Stopped before it starts: nothing.
        stop.store(true, Ordering::Relaxed);
        let known = [None, None];
        let found =
            find_in_place(root, &files, &old_sizes, &known, &wanted, &progress, &stop).unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn hashes_of_the_version_on_disk_stand_for_unchanged_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("same"), b"keep").unwrap();
        std::fs::write(root.join("touched"), b"keep").unwrap();
        let stamp = |name: &str| {
            let meta = std::fs::metadata(root.join(name)).unwrap();
            Some((meta.len(), crate::library::mtime_ns(&meta)))
        };
        let hashed = |name: &str| GameFileDescription {
            chunk_hashes: vec![blake3::hash(b"keep").to_hex().to_string()],
            ..file(name, 4)
        };
        let old_files = vec![hashed("same"), hashed("touched")];
        let replaces = PreparedManifest {
            manifest: crate::manifest_id::ManifestId::of(
                &lanspread_proto::model::Version::new("1"),
                &old_files,
            ),
            table: crate::manifest_id::ChunkTable::new(&old_files),
            stamps: vec![stamp("same"), stamp("touched")],
            files: std::sync::Arc::new(old_files),
        };
        // Rewritten since it was hashed (other size): its hashes say
        // nothing any more.
        std::fs::write(root.join("touched"), b"changed").unwrap();
        let files = [file("same", 4), file("touched", 4), file("new", 4)];
        let known = known_hashes(root, &files, Some(&replaces));
        assert!(known[0].is_some(), "unchanged: its hashes stand");
        assert_eq!(known[1], None, "changed since it was hashed");
        assert_eq!(known[2], None, "not in the version on disk");
        assert_eq!(known_hashes(root, &files, None), [None, None, None]);
        // A chunk the known hashes name is found without a read.
        let progress = Progress::default();
        let found = find_in_place(
            root,
            &files,
            &[4, 7, 0],
            &known,
            &[wanted(0, 0, 0, b"keep")],
            &progress,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(found, [0]);
        assert_eq!(progress.checked.load(Ordering::Relaxed), 0, "nothing read");
        assert_eq!(progress.reused.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_file_that_vanished_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = [file("gone", 4)];
        let err = find_in_place(
            dir.path(),
            &files,
            &[4],
            &[None],
            &[wanted(0, 0, 0, b"abcd")],
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
