//! Storing one fetched chunk (`docs/download.md#storing-a-chunk`): its
//! pieces are hashed and written (`pwritev`, straight from the pieces) in
//! batches small enough to stay in the CPU cache between the two, so the
//! chunk's bytes are read from memory once and never copied by us; the
//! chunk counts only when the hash of the whole matched.
//!
//! Writing before the verdict is safe because of [`Claims`]: one fetch at
//! a time may write a chunk's region (the endgame and a complete holder's
//! choice among alternatives can deliver one chunk twice), and a region
//! that verified is never written again (it is being served to the swarm).
//! Bytes that failed leave the region unverified; the chunk is fetched
//! again and overwrites them.
//!
//! Blocking work; callers run it off the async threads.

use std::fs::OpenOptions;
use std::io::IoSlice;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::transport::ChunkData;

use super::plan::ChunkId;
use super::sentinel::SentinelError;

/// Bytes hashed and then written in one go: well inside a core's L2 cache,
/// so the write copies from cache what the hash just read.
const SLICE_BYTES: usize = 256 * 1024;

/// Most pieces one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Where each chunk's region stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Nothing verified in it; a fetch may claim it.
    Open,
    /// A fetch is writing it (not verified yet).
    Writing,
    /// It holds the verified chunk; never written again.
    Verified,
}

/// Which chunk regions are being written or hold verified bytes; shared by
/// every fetch of one download.
#[derive(Debug)]
pub struct Claims {
    regions: Mutex<Vec<Region>>,
    changed: Condvar,
}

impl Claims {
    /// `count` chunks; `verified(id)` says which a resumed download
    /// already holds.
    pub fn new(count: usize, verified: impl Fn(ChunkId) -> bool) -> Self {
        let regions = (0..count)
            .map(|id| {
                if verified(id) {
                    Region::Verified
                } else {
                    Region::Open
                }
            })
            .collect();
        Self {
            regions: Mutex::new(regions),
            changed: Condvar::new(),
        }
    }

    fn regions(&self) -> MutexGuard<'_, Vec<Region>> {
        self.regions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The right to write chunk `id`'s region; waits while another fetch
    /// writes it (a few milliseconds: a page-cache write); `None` once the
    /// region holds the verified chunk.
    fn claim(&self, id: ChunkId) -> Option<Claim<'_>> {
        let mut regions = self.regions();
        while regions[id] == Region::Writing {
            regions = self
                .changed
                .wait(regions)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if regions[id] == Region::Verified {
            return None;
        }
        regions[id] = Region::Writing;
        Some(Claim {
            claims: self,
            id,
            verified: false,
        })
    }
}

/// A fetch's right to write one region; dropped, it leaves the region
/// verified or open again (also when the write failed or panicked).
struct Claim<'a> {
    claims: &'a Claims,
    id: ChunkId,
    verified: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claims.regions()[self.id] = if self.verified {
            Region::Verified
        } else {
            Region::Open
        };
        self.claims.changed.notify_all();
    }
}

/// Hashes `pieces` and writes them at `offset` of `file`, a batch of at
/// most [`SLICE_BYTES`] at a time: the batch is hashed, then written with
/// one `pwritev` straight from the pieces while they are still in the CPU
/// cache (no copy into a buffer of our own).
fn write_pieces(
    file: &std::fs::File,
    pieces: &[bytes::Bytes],
    mut offset: u64,
    hasher: &mut blake3::Hasher,
) -> std::io::Result<()> {
    let mut rest = pieces;
    while !rest.is_empty() {
        // A batch: whole pieces up to SLICE_BYTES (at least one), no more
        // than the kernel takes in one call.
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len()
            && take < MAX_IOVECS
            && (take == 0 || bytes + rest[take].len() <= SLICE_BYTES)
        {
            bytes += rest[take].len();
            take += 1;
        }
        let (batch, after) = rest.split_at(take);
        for piece in batch {
            hasher.update(piece);
        }
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = rustix::io::pwritev(file, slices, offset).map_err(std::io::Error::from)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            offset += n as u64;
            IoSlice::advance_slices(&mut slices, n);
        }
        rest = after;
    }
    Ok(())
}

/// What became of a fetched chunk.
#[derive(Debug)]
pub enum Stored {
    /// The chunk's region holds the verified bytes (written by this fetch,
    /// or already by another one of the same chunk).
    InPlace,
    /// The bytes do not match the chunk's hash.
    BadData,
    /// Our own disk failed.
    Disk(SentinelError),
}

/// Hashes `data` and writes it at `offset` of `path`, slice by slice, if
/// no other fetch did or does; `expected` is the chunk's hash (hex).
pub fn store_chunk(
    claims: &Claims,
    id: ChunkId,
    data: &ChunkData,
    expected: &str,
    path: &Path,
    offset: u64,
) -> Stored {
    let Some(mut claim) = claims.claim(id) else {
        // Another fetch stored it; this copy is still checked, so a peer
        // that sent bad bytes is blamed all the same.
        return if data.hash().to_hex().as_str() == expected {
            Stored::InPlace
        } else {
            Stored::BadData
        };
    };
    let io = |action: &'static str| {
        let path = path.to_owned();
        move |source| SentinelError::Io {
            action,
            path,
            source,
        }
    };
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(err) => return Stored::Disk(io("open")(err)),
    };
    let mut hasher = blake3::Hasher::new();
    let written = write_pieces(&file, data.pieces(), offset, &mut hasher);
    if let Err(err) = written {
        return Stored::Disk(io("write")(err));
    }
    if hasher.finalize().to_hex().as_str() == expected {
        claim.verified = true;
        Stored::InPlace
    } else {
        Stored::BadData
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pieces(bytes: &[u8], size: usize) -> ChunkData {
        let mut data = ChunkData::default();
        for piece in bytes.chunks(size) {
            data.push_piece(Bytes::copy_from_slice(piece));
        }
        data
    }

    fn setup(len: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        (dir, path)
    }

    #[test]
    fn a_chunk_of_many_pieces_is_written_whole_and_verified() {
        // Pieces that straddle slice boundaries, as QUIC hands them out.
        let bytes: Vec<u8> = (0..SLICE_BYTES * 3 + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (_dir, path) = setup(bytes.len() + 10);
        let claims = Claims::new(1, |_| false);
        let hash = blake3::hash(&bytes).to_hex();
        let stored = store_chunk(&claims, 0, &pieces(&bytes, 1350), &hash, &path, 10);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[10..], &bytes[..]);
        assert_eq!(&on_disk[..10], &[0u8; 10], "nothing before the offset");
        assert_eq!(claims.regions()[0], Region::Verified);
        // Pieces so small that a batch is bounded by the iovec limit.
        let (_dir, path) = setup(bytes.len());
        let claims = Claims::new(1, |_| false);
        let stored = store_chunk(&claims, 0, &pieces(&bytes, 7), &hash, &path, 0);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_verified_region_is_never_written_again_and_bad_bytes_leave_it_open() {
        let good = vec![7u8; 100_000];
        let bad = vec![9u8; 100_000];
        let hash = blake3::hash(&good).to_hex();
        let (_dir, path) = setup(good.len());
        let claims = Claims::new(2, |_| false);
        // Bad bytes first: written, not verified, the region stays open.
        let stored = store_chunk(&claims, 0, &pieces(&bad, 4096), &hash, &path, 0);
        assert!(matches!(stored, Stored::BadData), "{stored:?}");
        assert_eq!(claims.regions()[0], Region::Open);
        // Good bytes overwrite them.
        let stored = store_chunk(&claims, 0, &pieces(&good, 4096), &hash, &path, 0);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        // A late duplicate with bad bytes is blamed and writes nothing.
        let stored = store_chunk(&claims, 0, &pieces(&bad, 4096), &hash, &path, 0);
        assert!(matches!(stored, Stored::BadData), "{stored:?}");
        assert_eq!(std::fs::read(&path).unwrap(), good);
        // A late good duplicate: in place, nothing written.
        let stored = store_chunk(&claims, 0, &pieces(&good, 4096), &hash, &path, 0);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        // A resumed download's chunk counts as verified from the start.
        let resumed = Claims::new(2, |id| id == 1);
        assert_eq!(*resumed.regions(), [Region::Open, Region::Verified]);
    }

    #[test]
    fn two_fetches_of_one_chunk_never_write_it_at_once() {
        // Many rounds of a good and a bad copy racing: whatever the order,
        // the region ends verified and holding the good bytes.
        let good: Vec<u8> = (0..SLICE_BYTES * 2).map(|i| (i % 13) as u8).collect();
        let bad = vec![0xeeu8; good.len()];
        let hash = blake3::hash(&good).to_hex().to_string();
        for _ in 0..20 {
            let (_dir, path) = setup(good.len());
            let claims = Claims::new(1, |_| false);
            std::thread::scope(|scope| {
                let a =
                    scope.spawn(|| store_chunk(&claims, 0, &pieces(&bad, 1200), &hash, &path, 0));
                let b =
                    scope.spawn(|| store_chunk(&claims, 0, &pieces(&good, 1200), &hash, &path, 0));
                assert!(matches!(a.join().unwrap(), Stored::BadData));
                assert!(matches!(b.join().unwrap(), Stored::InPlace));
            });
            assert_eq!(std::fs::read(&path).unwrap(), good);
            assert_eq!(claims.regions()[0], Region::Verified);
        }
    }

    #[test]
    fn a_missing_file_is_a_disk_error_and_releases_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(1, |_| false);
        let data = pieces(b"abc", 2);
        let hash = blake3::hash(b"abc").to_hex();
        let stored = store_chunk(&claims, 0, &data, &hash, &dir.path().join("gone"), 0);
        assert!(matches!(stored, Stored::Disk(_)), "{stored:?}");
        assert_eq!(claims.regions()[0], Region::Open);
    }
}
