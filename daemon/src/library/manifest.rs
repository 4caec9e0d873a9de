//! A game's file manifest with per-chunk BLAKE3 hashes, as peers fetch it
//! (`docs/peer-protocol.md`). Built in the background by the preparer
//! (`crate::prepare`), never inside a request: hashes are cached in the
//! library index and recomputed only for files whose size or mtime
//! changed; the rest is hashed by one worker thread per core, at the
//! lowest CPU priority, with progress. Blocking: run it off the async
//! threads.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lanspread_proto::model::{GameFileDescription, GameId};
use lanspread_proto::wire::CHUNK_SIZE;

use super::beneath::{OpenBeneathError, open_beneath};
use super::index::{CachedHashes, mtime_ns};
use super::{LibraryIndex, LocalFile};

/// How often a preparation reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a manifest could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot open a file of {}", root.display())]
    Open {
        root: PathBuf,
        #[source]
        source: OpenBeneathError,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed while it was hashed", path.display())]
    Changed { path: PathBuf },
    #[error("preparation cancelled")]
    Cancelled,
}

/// One chunk (or a whole small file) to hash.
struct Job {
    file: usize,
    chunk: usize,
}

/// Size and modification time of a file when its hashes were taken: while
/// both hold, its bytes are those the hashes describe.
pub type FileStamp = (u64, Option<i128>);

/// The manifest of the game `id` rooted at `root`, listing `files`.
/// Hashes cached in `index` (valid for the file's size and mtime) are
/// reused; the others are computed by `workers` threads and stored in
/// `index` (and saved to `state_dir` when given). `progress` is called
/// with the bytes covered so far at most every [`PROGRESS_EVERY`];
/// `cancel` stops the work early. Each entry comes with its [`FileStamp`]
/// (`None` for a directory), so a server can tell later whether a file
/// still holds the bytes its hashes describe.
pub fn game_manifest(
    root: &Path,
    id: &GameId,
    files: &[LocalFile],
    index: &Mutex<LibraryIndex>,
    state_dir: Option<&Path>,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<(Vec<GameFileDescription>, Vec<Option<FileStamp>>), ManifestError> {
    let lock = || {
        index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    // The lock is held only to read or store the cache, never while hashing.
    let cached = lock().cached_root(id);
    let mut manifest = Vec::with_capacity(files.len());
    let mut stats = Vec::with_capacity(files.len());
    let mut jobs = Vec::new();
    let mut reused = 0u64;
    for file in files {
        let path = root.join(&file.relative_path);
        if file.is_dir {
            manifest.push(GameFileDescription {
                relative_path: file.relative_path.clone(),
                is_dir: true,
                size: 0,
                chunk_hashes: Vec::new(),
            });
            stats.push(None);
            continue;
        }
        // Opened beneath the root without following links, and measured
        // through the descriptor, so the hashes are of the file served.
        let opened = open_file(root, &file.relative_path)?;
        let meta = opened
            .metadata()
            .map_err(|source| ManifestError::Read { path, source })?;
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        let hit = cached
            .get(&file.relative_path)
            .filter(|c| c.size == size && Some(c.mtime) == mtime);
        let chunk_hashes = match hit {
            Some(hit) => {
                reused += size;
                hit.hashes.clone()
            }
            None => {
                let chunks = size.div_ceil(CHUNK_SIZE) as usize;
                jobs.extend((0..chunks).map(|chunk| Job {
                    file: manifest.len(),
                    chunk,
                }));
                vec![String::new(); chunks]
            }
        };
        manifest.push(GameFileDescription {
            relative_path: file.relative_path.clone(),
            is_dir: false,
            size,
            chunk_hashes,
        });
        stats.push(Some((size, mtime)));
    }
    let hashed = hash_jobs(root, &manifest, &jobs, reused, progress, cancel)?;
    let mut touched: HashMap<usize, ()> = HashMap::new();
    for (job, hash) in jobs.iter().zip(hashed) {
        manifest[job.file].chunk_hashes[job.chunk] = hash;
        touched.insert(job.file, ());
    }
    // A file that changed while it was hashed is not trusted.
    for &file in touched.keys() {
        let path = root.join(&manifest[file].relative_path);
        let now = open_file(root, &manifest[file].relative_path)?
            .metadata()
            .map_err(|source| ManifestError::Read {
                path: path.clone(),
                source,
            })
            .map(|m| (m.len(), mtime_ns(&m)))?;
        if Some(now) != stats[file] {
            return Err(ManifestError::Changed { path });
        }
    }
    if !touched.is_empty() {
        let computed = touched
            .keys()
            .filter_map(|&file| {
                let (size, mtime) = stats[file]?;
                Some((
                    manifest[file].relative_path.clone(),
                    CachedHashes {
                        size,
                        mtime: mtime?,
                        hashes: manifest[file].chunk_hashes.clone(),
                    },
                ))
            })
            .collect();
        let mut index = lock();
        index.store_root_hashes(id, computed);
        if let Some(state_dir) = state_dir
            && let Err(err) = index.save(state_dir)
        {
            tracing::warn!(cause = %err, "cannot save library index");
        }
    }
    progress(manifest.iter().map(|f| f.size).sum());
    Ok((manifest, stats))
}

/// Hashes every job's chunk with one thread per core (each at the lowest
/// CPU priority, so a game being played keeps its CPU), reporting progress
/// from the calling thread. Returns the hex hashes in job order.
fn hash_jobs(
    root: &Path,
    manifest: &[GameFileDescription],
    jobs: &[Job],
    reused: u64,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &AtomicBool,
) -> Result<Vec<String>, ManifestError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let done_bytes = AtomicU64::new(reused);
    let running = AtomicUsize::new(workers);
    let results: Vec<Mutex<Vec<(usize, String)>>> =
        (0..workers).map(|_| Mutex::new(Vec::new())).collect();
    let failure: Mutex<Option<ManifestError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for slot in &results {
            let (next, done_bytes, running, failure) = (&next, &done_bytes, &running, &failure);
            scope.spawn(move || {
                lower_priority();
                let mut out = Vec::new();
                let mut buffer = vec![0u8; CHUNK_SIZE as usize];
                let mut open: Option<(usize, std::fs::File)> = None;
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(at) else { break };
                    if cancel.load(Ordering::Relaxed) || failure.lock().unwrap().is_some() {
                        break;
                    }
                    let file = &manifest[job.file];
                    let path = root.join(&file.relative_path);
                    let hashed = (|| {
                        if open.as_ref().is_none_or(|(f, _)| *f != job.file) {
                            let opened = open_beneath(root, &file.relative_path)
                                .map_err(std::io::Error::other)?;
                            open = Some((job.file, opened));
                        }
                        let handle = &open.as_ref().expect("opened above").1;
                        let offset = job.chunk as u64 * CHUNK_SIZE;
                        let length = (file.size - offset).min(CHUNK_SIZE) as usize;
                        handle.read_exact_at(&mut buffer[..length], offset)?;
                        let hash = blake3::hash(&buffer[..length]).to_hex().to_string();
                        Ok::<_, std::io::Error>((hash, length as u64))
                    })();
                    match hashed {
                        Ok((hash, length)) => {
                            out.push((at, hash));
                            done_bytes.fetch_add(length, Ordering::Relaxed);
                        }
                        Err(source) => {
                            let mut failure = failure.lock().unwrap();
                            failure.get_or_insert(ManifestError::Read { path, source });
                            break;
                        }
                    }
                }
                *slot.lock().unwrap() = out;
                running.fetch_sub(1, Ordering::Release);
            });
        }
        while running.load(Ordering::Acquire) > 0 {
            progress(done_bytes.load(Ordering::Relaxed));
            std::thread::park_timeout(PROGRESS_EVERY);
        }
    });
    if let Some(err) = failure.into_inner().unwrap() {
        return Err(err);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(ManifestError::Cancelled);
    }
    let mut hashes = vec![String::new(); jobs.len()];
    for slot in results {
        for (at, hash) in slot.into_inner().unwrap() {
            hashes[at] = hash;
        }
    }
    Ok(hashes)
}

/// `relative_path` opened beneath `root`, never through a link.
fn open_file(root: &Path, relative_path: &str) -> Result<std::fs::File, ManifestError> {
    open_beneath(root, relative_path).map_err(|source| ManifestError::Open {
        root: root.to_owned(),
        source,
    })
}

/// Puts the calling thread at the lowest CPU priority (nice 19). Best
/// effort: a failure only costs politeness.
fn lower_priority() {
    if let Err(err) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(cause = %err, "cannot lower the hashing thread's priority");
    }
}

/// Hex BLAKE3 hash of each [`CHUNK_SIZE`] chunk of `reader`, in order (none
/// for an empty input).
pub fn hash_chunks(reader: &mut impl std::io::Read) -> std::io::Result<Vec<String>> {
    let mut hashes = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let mut hasher = blake3::Hasher::new();
        let mut in_chunk = 0u64;
        while in_chunk < CHUNK_SIZE {
            let want = (CHUNK_SIZE - in_chunk).min(buffer.len() as u64) as usize;
            let n = match reader.read(&mut buffer[..want]) {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            in_chunk += n as u64;
        }
        if in_chunk == 0 {
            return Ok(hashes);
        }
        hashes.push(hasher.finalize().to_hex().to_string());
        if in_chunk < CHUNK_SIZE {
            return Ok(hashes);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_hashes_cover_each_chunk_and_nothing_more() {
        assert!(hash_chunks(&mut &[][..]).unwrap().is_empty());
        let small = b"hello";
        assert_eq!(
            hash_chunks(&mut &small[..]).unwrap(),
            [blake3::hash(small).to_hex().to_string()]
        );
        let size = CHUNK_SIZE as usize * 2 + 10;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let hashes = hash_chunks(&mut &data[..]).unwrap();
        let chunk = CHUNK_SIZE as usize;
        assert_eq!(
            hashes,
            [
                blake3::hash(&data[..chunk]).to_hex().to_string(),
                blake3::hash(&data[chunk..2 * chunk]).to_hex().to_string(),
                blake3::hash(&data[2 * chunk..]).to_hex().to_string(),
            ]
        );
        // Exactly one chunk: no empty trailing hash.
        assert_eq!(hash_chunks(&mut &data[..chunk]).unwrap().len(), 1);
    }
}
