//! The rolling scan (`docs/download.md#data-that-moved`): slides a
//! window of one signature block over each local file, one byte at a
//! time, and records where each wanted block's bytes are. A window whose
//! rolling checksum is a wanted block's must also pass that block's
//! strong check; after a match the window jumps a whole block ahead (as
//! rsync's does).
//!
//! Blocking work; callers run it off the async threads. It only reads.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::download::sentinel::SentinelError;
use crate::signature::{self, BLOCK, BlockSignature};

/// Bytes read from a file at a time.
const READ_BYTES: usize = 8 * 1024 * 1024;

/// Bits of the pre-filter in front of the block index (a bit set indexed
/// by the checksum's top bits: 128 KiB, so most windows are turned away
/// from the L2 cache without a hash-map lookup).
const FILTER_BITS: u32 = 20;

/// Strong checks a file may fail per block of its length before the scan
/// gives up on it (content built to collide with the rolling checksum
/// would otherwise cost a BLAKE3 hash per byte).
const FALSE_CANDIDATES_PER_BLOCK: u64 = 4;

/// A file the scan reads.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    /// Bytes of it to read (what it held before the download began).
    pub len: u64,
    /// The entry of the new version's file list at this path, if any:
    /// the download writes into this file, so reads from it must come
    /// before those writes (see `order`).
    pub written: Option<usize>,
}

/// Where a wanted block's bytes are: local file `local`, from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub local: usize,
    pub offset: u64,
}

/// How far the scan got, for progress events.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read so far.
    pub read: AtomicU64,
}

/// Finds the blocks of `wanted` (per chunk, its blocks' signatures) in
/// `locals`, in that order, until every block is found or the files end.
/// Returns, per chunk and block, where it was found. Blocks shorter than
/// [`BLOCK`] (the last of a file) are only looked for right after the
/// block before them. Stops early once `stop` is set.
pub fn find_blocks(
    locals: &[LocalFile],
    wanted: &[Vec<BlockSignature>],
    lengths: &[u64],
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<Vec<Option<Found>>>, SentinelError> {
    let mut index: HashMap<u64, Vec<(u32, u16)>> = HashMap::new();
    let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
    let mut found: Vec<Vec<Option<Found>>> = wanted.iter().map(|b| vec![None; b.len()]).collect();
    let mut remaining = 0usize;
    for (chunk, blocks) in wanted.iter().enumerate() {
        for (block, signature) in blocks.iter().enumerate() {
            if block_len(lengths[chunk], block) == BLOCK {
                index
                    .entry(signature.weak)
                    .or_default()
                    .push((chunk as u32, block as u16));
                let bit = signature.weak >> (64 - FILTER_BITS);
                filter[(bit >> 6) as usize] |= 1 << (bit & 63);
                remaining += 1;
            }
        }
    }
    let mut scan = Scan {
        wanted,
        index: &index,
        filter: &filter,
        found: &mut found,
        remaining,
        progress,
        stop,
    };
    for (local, file) in locals.iter().enumerate() {
        if scan.remaining == 0 || stop.load(Ordering::Relaxed) {
            break;
        }
        scan.file(local, file)?;
    }
    find_short_tails(locals, wanted, lengths, &mut found)?;
    Ok(found)
}

/// The bytes of block `block` of a chunk of `length` bytes.
pub fn block_len(length: u64, block: usize) -> usize {
    (length - block as u64 * BLOCK as u64).min(BLOCK as u64) as usize
}

struct Scan<'a> {
    wanted: &'a [Vec<BlockSignature>],
    index: &'a HashMap<u64, Vec<(u32, u16)>>,
    filter: &'a [u64],
    found: &'a mut Vec<Vec<Option<Found>>>,
    remaining: usize,
    progress: &'a Progress,
    stop: &'a AtomicBool,
}

impl Scan<'_> {
    fn file(&mut self, local: usize, file: &LocalFile) -> Result<(), SentinelError> {
        let io = |action: &'static str| {
            let path = file.path.clone();
            move |source| SentinelError::Io {
                action,
                path,
                source,
            }
        };
        let len = file.len;
        let window = BLOCK as u64;
        if len < window {
            return Ok(());
        }
        let handle = File::open(&file.path).map_err(io("open"))?;
        let mut false_budget = (len / window + 1) * FALSE_CANDIDATES_PER_BLOCK;
        // `buffer` holds the file's bytes from `base` on.
        let mut buffer: Vec<u8> = Vec::new();
        let mut base = 0u64;
        let mut pos = 0u64;
        let mut hash: Option<u64> = None;
        while pos + window <= len {
            // The window and the byte after it (if any) must be in memory.
            let need = (pos + window + 1).min(len);
            if need > base + buffer.len() as u64 {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                buffer.drain(..(pos - base) as usize);
                base = pos;
                let end = (base + READ_BYTES as u64 + window).min(len);
                let have = buffer.len();
                buffer.resize((end - base) as usize, 0);
                handle
                    .read_exact_at(&mut buffer[have..], base + have as u64)
                    .map_err(io("read"))?;
                self.progress
                    .read
                    .fetch_add((buffer.len() - have) as u64, Ordering::Relaxed);
            }
            let at = (pos - base) as usize;
            let bytes = &buffer[at..at + BLOCK];
            let weak = hash.unwrap_or_else(|| signature::weak(bytes));
            let bit = weak >> (64 - FILTER_BITS);
            if self.filter[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
                && let Some(candidates) = self.index.get(&weak)
            {
                let strong = signature::strong(bytes);
                let mut matched = false;
                for &(chunk, block) in candidates {
                    let (chunk, block) = (chunk as usize, block as usize);
                    if self.wanted[chunk][block].strong != strong {
                        continue;
                    }
                    matched = true;
                    let slot = &mut self.found[chunk][block];
                    if slot.is_none() {
                        *slot = Some(Found { local, offset: pos });
                        self.remaining -= 1;
                    }
                }
                if matched {
                    if self.remaining == 0 {
                        return Ok(());
                    }
                    pos += window;
                    hash = None;
                    continue;
                }
                false_budget -= 1;
                if false_budget == 0 {
                    tracing::info!(path = %file.path.display(), "too many false candidates; the rest of this file is not scanned");
                    return Ok(());
                }
            }
            if pos + window >= len {
                break;
            }
            hash = Some(signature::roll(weak, buffer[at], buffer[at + BLOCK]));
            pos += 1;
        }
        Ok(())
    }
}

/// Looks for each chunk's short last block right after the block before
/// it, where it is if the data moved as a whole.
fn find_short_tails(
    locals: &[LocalFile],
    wanted: &[Vec<BlockSignature>],
    lengths: &[u64],
    found: &mut [Vec<Option<Found>>],
) -> Result<(), SentinelError> {
    let mut bytes = Vec::new();
    for (chunk, blocks) in wanted.iter().enumerate() {
        let Some(last) = blocks.len().checked_sub(1) else {
            continue;
        };
        let len = block_len(lengths[chunk], last);
        if last == 0 || len == BLOCK || found[chunk][last].is_some() {
            continue;
        }
        let Some(before) = found[chunk][last - 1] else {
            continue;
        };
        let offset = before.offset + BLOCK as u64;
        let local = &locals[before.local];
        if offset + len as u64 > local.len {
            continue;
        }
        bytes.resize(len, 0);
        let read = File::open(&local.path).and_then(|f| f.read_exact_at(&mut bytes, offset));
        if let Err(source) = read {
            return Err(SentinelError::Io {
                action: "read",
                path: local.path.clone(),
                source,
            });
        }
        let signature = blocks[last];
        if signature::weak(&bytes) == signature.weak
            && signature::strong(&bytes) == signature.strong
        {
            found[chunk][last] = Some(Found {
                local: before.local,
                offset,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    fn local(dir: &std::path::Path, name: &str, bytes: &[u8]) -> LocalFile {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        LocalFile {
            path,
            len: bytes.len() as u64,
            written: None,
        }
    }

    fn scan(locals: &[LocalFile], chunks: &[&[u8]]) -> Vec<Vec<Option<Found>>> {
        let wanted: Vec<_> = chunks.iter().map(|c| signature::of_chunk(c)).collect();
        let lengths: Vec<u64> = chunks.iter().map(|c| c.len() as u64).collect();
        find_blocks(
            locals,
            &wanted,
            &lengths,
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    #[test]
    fn blocks_are_found_in_place_in_another_file_and_shifted_by_an_odd_count() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(4 * BLOCK, 7);
        // The old file: 3 bytes, then the data; another file holds the
        // last block at offset 0.
        let mut shifted = b"xyz".to_vec();
        shifted.extend_from_slice(&data[..3 * BLOCK]);
        let locals = [
            local(dir.path(), "old", &shifted),
            local(dir.path(), "other", &data[3 * BLOCK..]),
        ];
        let found = scan(&locals, &[&data]);
        let expected: Vec<Option<Found>> = vec![
            Some(Found {
                local: 0,
                offset: 3,
            }),
            Some(Found {
                local: 0,
                offset: 3 + BLOCK as u64,
            }),
            Some(Found {
                local: 0,
                offset: 3 + 2 * BLOCK as u64,
            }),
            Some(Found {
                local: 1,
                offset: 0,
            }),
        ];
        assert_eq!(found, [expected]);
    }

    #[test]
    fn a_changed_block_is_not_found_and_a_short_tail_follows_its_block() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(2 * BLOCK + 100, 8);
        let mut new = old.clone();
        new[10] ^= 1; // the first block changed
        let locals = [local(dir.path(), "old", &old[..])];
        let found = scan(&locals, &[&new]);
        assert_eq!(
            found[0],
            [
                None,
                Some(Found {
                    local: 0,
                    offset: BLOCK as u64
                }),
                Some(Found {
                    local: 0,
                    offset: 2 * BLOCK as u64
                }),
            ]
        );
    }

    #[test]
    fn a_collision_of_the_rolling_checksum_never_passes_the_strong_check() {
        let dir = tempfile::tempdir().unwrap();
        let old = noise(BLOCK, 9);
        let locals = [local(dir.path(), "old", &old)];
        // A block whose rolling checksum is the old bytes' but whose
        // strong check is not: what a collision (or a lying peer) looks
        // like.
        let mut wanted = signature::of_chunk(&old);
        wanted[0].strong ^= 1;
        let found = find_blocks(
            &locals,
            &[wanted],
            &[BLOCK as u64],
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(found, [vec![None]]);
    }

    #[test]
    fn zero_runs_match_and_a_stopped_scan_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 3 * BLOCK];
        let locals = [local(dir.path(), "zeros", &zeros)];
        let found = scan(&locals, &[&zeros[..2 * BLOCK]]);
        assert!(found[0].iter().all(Option::is_some), "{found:?}");
        let progress = Progress::default();
        let stopped = find_blocks(
            &locals,
            &[signature::of_chunk(&zeros[..BLOCK])],
            &[BLOCK as u64],
            &progress,
            &AtomicBool::new(true),
        )
        .unwrap();
        assert_eq!(stopped, [vec![None]]);
        assert_eq!(progress.read.load(Ordering::Relaxed), 0);
    }
}
