//! A game's file manifest with per-chunk BLAKE3 hashes, as `GetGame`
//! serves it. Hashes are cached in the library index and recomputed only
//! for files whose size or mtime changed. Blocking: run it off the async
//! threads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lanspread_proto::model::{GameFileDescription, GameId};
use lanspread_proto::wire::CHUNK_SIZE;

use super::beneath::{OpenBeneathError, open_beneath};
use super::index::mtime_ns;
use super::{LibraryIndex, LocalFile};

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
}

/// The manifest of the game `id` rooted at `root`, listing `files`. Newly
/// computed hashes are kept in `index` and, when `state_dir` is given,
/// saved there so a restart does not hash again.
pub fn game_manifest(
    root: &Path,
    id: &GameId,
    files: &[LocalFile],
    index: &Mutex<LibraryIndex>,
    state_dir: Option<&Path>,
) -> Result<Vec<GameFileDescription>, ManifestError> {
    let lock = || {
        index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let mut manifest = Vec::with_capacity(files.len());
    let mut computed = Vec::new();
    for file in files {
        if file.is_dir {
            manifest.push(GameFileDescription {
                relative_path: file.relative_path.clone(),
                is_dir: true,
                size: 0,
                chunk_hashes: Vec::new(),
            });
            continue;
        }
        let path = root.join(&file.relative_path);
        let read_error = |source| ManifestError::Read {
            path: path.clone(),
            source,
        };
        // Opened beneath the root without following links, and measured
        // through the descriptor, so the hashes are of the file served.
        let mut opened =
            open_beneath(root, &file.relative_path).map_err(|source| ManifestError::Open {
                root: root.to_owned(),
                source,
            })?;
        let meta = opened.metadata().map_err(read_error)?;
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        // The lock is held only for the lookup, never while hashing.
        let cached = lock().cached_hashes(id, &file.relative_path, size, mtime);
        let hashes = match cached {
            Some(hashes) => hashes,
            None => {
                let hashes = hash_chunks(&mut opened).map_err(read_error)?;
                computed.push((file.relative_path.clone(), size, mtime, hashes.clone()));
                hashes
            }
        };
        manifest.push(GameFileDescription {
            relative_path: file.relative_path.clone(),
            is_dir: false,
            size,
            chunk_hashes: hashes,
        });
    }
    if !computed.is_empty() {
        let mut index = lock();
        for (relative_path, size, mtime, hashes) in computed {
            index.store_hashes(id, &relative_path, size, mtime, hashes);
        }
        if let Some(state_dir) = state_dir
            && let Err(err) = index.save(state_dir)
        {
            tracing::warn!(cause = %err, "cannot save library index");
        }
    }
    Ok(manifest)
}

/// Hex BLAKE3 hash of each [`CHUNK_SIZE`] chunk of `reader`, in order (none
/// for an empty input).
pub fn hash_chunks(reader: &mut impl Read) -> std::io::Result<Vec<String>> {
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
