//! The rolling scan (`docs/download.md#data-that-moved`): slides a
//! window of one signature block over each local file, one byte at a
//! time, and records where each wanted block's bytes are. A window whose
//! rolling checksum is a wanted block's must also pass that block's
//! strong check; after a match the window jumps a whole block ahead (as
//! rsync's does).
//!
//! Blocking work (it starts its own threads); callers run it off the
//! async threads. It only reads.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::download::sentinel::SentinelError;
use crate::signature::{self, BLOCK, BlockSignature};

/// Bytes read from a file at a time.
const READ_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of window starts one thread scans in one go (files are cut into
/// segments so that one file is scanned by several threads; a segment
/// costs one more window's read and checksum, nothing at this size).
const SEGMENT: u64 = 8 * 1024 * 1024;

/// Most threads that scan at once.
const THREADS: usize = 4;

/// Bits of the pre-filter in front of the block index (a bit set indexed
/// by the checksum's top bits: 1 MiB, so almost every window is turned
/// away by one memory read, without a hash-map lookup).
const FILTER_BITS: u32 = 23;
const FILTER_WORDS: usize = 1 << (FILTER_BITS - 6);

/// Strong checks a file may fail per block of its length before the scan
/// gives up on it (content built to collide with the rolling checksum
/// would otherwise cost a BLAKE3 hash per byte).
const FALSE_CANDIDATES_PER_BLOCK: u64 = 4;

/// Wanted blocks by rolling checksum: (chunk, block) of each.
type BlockIndex = HashMap<u64, Vec<(u32, u16)>, BuildHasherDefault<AsIs>>;

/// The keys are checksums already: hashing them again would only cost
/// time.
#[derive(Default)]
struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

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
    /// Regions (start, end) that already hold chunks of the new version,
    /// sorted: windows wholly inside them are not scanned (their bytes
    /// are the chunks found in place).
    pub done: Vec<(u64, u64)>,
}

impl LocalFile {
    /// The window starts worth scanning, as ranges: all of `0 ..= len −
    /// BLOCK` but those of windows wholly inside a done region.
    fn window_starts(&self) -> Vec<(u64, u64)> {
        let window = BLOCK as u64;
        if self.len < window {
            return Vec::new();
        }
        let mut ranges = Vec::new();
        let mut from = 0u64;
        let end = self.len - window + 1;
        for &(start, stop) in &self.done {
            if stop - start < window {
                continue;
            }
            // Windows starting in start ..= stop − window lie inside.
            let (skip_from, skip_to) = (start, (stop - window + 1).min(end));
            if skip_from > from {
                ranges.push((from, skip_from.min(end)));
            }
            from = from.max(skip_to);
        }
        if from < end {
            ranges.push((from, end));
        }
        ranges
    }
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

/// Where a wanted chunk goes: the entry of the new file list and the
/// offset in it.
pub type Place = (usize, u64);

/// Finds the blocks of `wanted` (per chunk, its blocks' signatures) in
/// `locals`, until every block is found or the files end. Returns, per
/// chunk and block, where it was found (the first place in the order of
/// `locals`, then of offsets). The files are cut into segments of
/// [`SEGMENT`] bytes that up to [`THREADS`] threads scan at once; then
/// [`find_neighbours`] looks where the scan's jumps could not (`places`:
/// where each chunk goes). Stops early once `stop` is set.
pub fn find_blocks(
    locals: &[LocalFile],
    wanted: &[Vec<BlockSignature>],
    lengths: &[u64],
    places: &[Option<Place>],
    progress: &Progress,
    stop: &AtomicBool,
) -> Result<Vec<Vec<Option<Found>>>, SentinelError> {
    find_in_segments(locals, wanted, lengths, places, progress, stop, SEGMENT)
}

fn find_in_segments(
    locals: &[LocalFile],
    wanted: &[Vec<BlockSignature>],
    lengths: &[u64],
    places: &[Option<Place>],
    progress: &Progress,
    stop: &AtomicBool,
    segment: u64,
) -> Result<Vec<Vec<Option<Found>>>, SentinelError> {
    let mut index: BlockIndex = HashMap::default();
    let mut filter = Box::new([0u64; FILTER_WORDS]);
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
    // (local file, first window, end of the windows' starts)
    let segments: Vec<(usize, u64, u64)> = locals
        .iter()
        .enumerate()
        .flat_map(|(local, file)| {
            file.window_starts()
                .into_iter()
                .flat_map(move |(first, end)| {
                    (first..end)
                        .step_by(segment as usize)
                        .map(move |from| (local, from, (from + segment).min(end)))
                })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let all_found = AtomicBool::new(false);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, THREADS)
        .min(segments.len().max(1));
    let worker = || -> Result<Vec<Vec<Option<Found>>>, SentinelError> {
        let mut scan = Scan {
            wanted,
            index: &index,
            filter: &filter,
            found: wanted.iter().map(|b| vec![None; b.len()]).collect(),
            remaining,
            progress,
            stop,
        };
        let mut open: Option<(usize, File)> = None;
        loop {
            if stop.load(Ordering::Relaxed) || all_found.load(Ordering::Relaxed) {
                break;
            }
            let Some(&(local, from, to)) = segments.get(next.fetch_add(1, Ordering::Relaxed))
            else {
                break;
            };
            let file = &locals[local];
            if open.as_ref().is_none_or(|(l, _)| *l != local) {
                let handle = File::open(&file.path).map_err(|source| SentinelError::Io {
                    action: "open",
                    path: file.path.clone(),
                    source,
                })?;
                open = Some((local, handle));
            }
            let (_, handle) = open.as_ref().expect("opened above");
            scan.segment(local, file, handle, from, to)?;
            if scan.remaining == 0 {
                all_found.store(true, Ordering::Relaxed);
            }
        }
        Ok(scan.found)
    };
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut found: Vec<Vec<Option<Found>>> = wanted.iter().map(|b| vec![None; b.len()]).collect();
    for result in results {
        for (chunk, blocks) in result?.into_iter().enumerate() {
            for (block, place) in blocks.into_iter().enumerate() {
                let slot = &mut found[chunk][block];
                if let Some(place) = place
                    && slot
                        .is_none_or(|have| (place.local, place.offset) < (have.local, have.offset))
                {
                    *slot = Some(place);
                }
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        find_neighbours(locals, wanted, lengths, places, &mut found)?;
    }
    Ok(found)
}

/// The bytes of block `block` of a chunk of `length` bytes.
pub fn block_len(length: u64, block: usize) -> usize {
    (length - block as u64 * BLOCK as u64).min(BLOCK as u64) as usize
}

struct Scan<'a> {
    wanted: &'a [Vec<BlockSignature>],
    index: &'a BlockIndex,
    filter: &'a [u64; FILTER_WORDS],
    found: Vec<Vec<Option<Found>>>,
    /// Wanted full blocks this scan has not found.
    remaining: usize,
    progress: &'a Progress,
    stop: &'a AtomicBool,
}

impl Scan<'_> {
    /// Scans the windows of `file` that start in `from .. to`.
    fn segment(
        &mut self,
        local: usize,
        file: &LocalFile,
        handle: &File,
        from: u64,
        to: u64,
    ) -> Result<(), SentinelError> {
        let io = |action: &'static str| {
            let path = file.path.clone();
            move |source| SentinelError::Io {
                action,
                path,
                source,
            }
        };
        let window = BLOCK as u64;
        // The last byte any of these windows covers.
        let len = (to - 1 + window).min(file.len);
        let mut false_budget = ((len - from) / window + 1) * FALSE_CANDIDATES_PER_BLOCK;
        // `buffer` holds the file's bytes from `base` on.
        let mut buffer: Vec<u8> = Vec::new();
        let mut base = from;
        let mut pos = from;
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
            if passes(self.filter, weak)
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
            // Slide over what the buffer holds, up to the next window that
            // passes the pre-filter.
            let ahead = (base + buffer.len() as u64 - pos - window) as usize;
            if ahead == 0 {
                break; // the end of the file (else the buffer was refilled)
            }
            let (steps, rolled) = slide(
                weak,
                &buffer[at..at + ahead],
                &buffer[at + BLOCK..at + BLOCK + ahead],
                self.filter,
            );
            pos += steps as u64;
            hash = Some(rolled);
        }
        Ok(())
    }
}

/// Whether `weak` passes the pre-filter.
#[inline]
fn passes(filter: &[u64; FILTER_WORDS], weak: u64) -> bool {
    let bit = weak >> (64 - FILTER_BITS);
    filter[(bit >> 6) as usize] & (1 << (bit & 63)) != 0
}

/// Rolls `hash` over `outs` (the bytes leaving the window) and `ins` (those
/// entering it, as long), stopping at the first window that passes the
/// pre-filter: returns how many bytes it moved and the checksum there.
/// The scan's inner loop: no bounds checks, one multiply chain.
fn slide(mut hash: u64, outs: &[u8], ins: &[u8], filter: &[u64; FILTER_WORDS]) -> (usize, u64) {
    for (step, (&out, &incoming)) in outs.iter().zip(ins).enumerate() {
        hash = signature::roll(hash, out, incoming);
        if passes(filter, hash) {
            return (step + 1, hash);
        }
    }
    (outs.len(), hash)
}

/// Looks for the blocks the scan did not find where they are if data
/// moved as a whole: right after the place of the block before them,
/// right before the place of the block after them, and (once) at their
/// own place in the file the new version writes, until a round finds
/// nothing more. This finds what the scan's jump past each match skips in
/// repetitive data (its jumps can fall out of step with the blocks), and
/// each file's short last block, which the scan cannot look for.
fn find_neighbours(
    locals: &[LocalFile],
    wanted: &[Vec<BlockSignature>],
    lengths: &[u64],
    places: &[Option<Place>],
    found: &mut [Vec<Option<Found>>],
) -> Result<(), SentinelError> {
    let written: HashMap<usize, usize> = locals
        .iter()
        .enumerate()
        .filter_map(|(local, file)| Some((file.written?, local)))
        .collect();
    let mut open: HashMap<usize, File> = HashMap::new();
    let mut bytes = Vec::new();
    let window = BLOCK as u64;
    for round in 0.. {
        let mut more = false;
        for (chunk, blocks) in wanted.iter().enumerate() {
            for block in 0..blocks.len() {
                if found[chunk][block].is_some() {
                    continue;
                }
                let before = block
                    .checked_sub(1)
                    .and_then(|b| found[chunk][b])
                    .map(|f| (f.local, f.offset + window));
                let after = found[chunk]
                    .get(block + 1)
                    .copied()
                    .flatten()
                    .filter(|f| f.offset >= window)
                    .map(|f| (f.local, f.offset - window));
                let own = places[chunk]
                    .filter(|_| round == 0)
                    .and_then(|(file, offset)| {
                        Some((*written.get(&file)?, offset + block as u64 * window))
                    });
                let len = block_len(lengths[chunk], block);
                for (local, offset) in [before, after, own].into_iter().flatten() {
                    let file = &locals[local];
                    if offset + len as u64 > file.len {
                        continue;
                    }
                    let io = |source| SentinelError::Io {
                        action: "read",
                        path: file.path.clone(),
                        source,
                    };
                    let handle = match open.entry(local) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(File::open(&file.path).map_err(io)?)
                        }
                    };
                    bytes.resize(len, 0);
                    handle.read_exact_at(&mut bytes, offset).map_err(io)?;
                    let signature = blocks[block];
                    if signature::weak(&bytes) == signature.weak
                        && signature::strong(&bytes) == signature.strong
                    {
                        found[chunk][block] = Some(Found { local, offset });
                        more = true;
                        break;
                    }
                }
            }
        }
        if !more {
            break;
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
            done: Vec::new(),
        }
    }

    fn scan(locals: &[LocalFile], chunks: &[&[u8]]) -> Vec<Vec<Option<Found>>> {
        let wanted: Vec<_> = chunks.iter().map(|c| signature::of_chunk(c)).collect();
        let lengths: Vec<u64> = chunks.iter().map(|c| c.len() as u64).collect();
        find_blocks(
            locals,
            &wanted,
            &lengths,
            &vec![None; chunks.len()],
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
    fn blocks_across_segment_boundaries_are_found_by_whichever_thread_scans_them() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(6 * BLOCK, 17);
        // Shifted by 1001 bytes in a file cut into segments of 2.5 blocks:
        // every block straddles or follows a boundary somewhere.
        let mut shifted = noise(1001, 18);
        shifted.extend_from_slice(&data);
        let locals = [local(dir.path(), "old", &shifted)];
        let wanted = [signature::of_chunk(&data)];
        let found = find_in_segments(
            &locals,
            &wanted,
            &[data.len() as u64],
            &[None],
            &Progress::default(),
            &AtomicBool::new(false),
            (5 * BLOCK / 2) as u64,
        )
        .unwrap();
        let expected: Vec<Option<Found>> = (0..6)
            .map(|b| {
                Some(Found {
                    local: 0,
                    offset: 1001 + (b * BLOCK) as u64,
                })
            })
            .collect();
        assert_eq!(found, [expected]);
    }

    #[test]
    fn windows_inside_regions_already_done_are_not_scanned() {
        let w = BLOCK as u64;
        let file = |done: Vec<(u64, u64)>| LocalFile {
            path: "x".into(),
            len: 10 * w,
            written: Some(0),
            done,
        };
        assert_eq!(file(vec![]).window_starts(), [(0, 9 * w + 1)]);
        // Blocks 2..5 done: windows starting at 2w ..= 4w lie inside.
        assert_eq!(
            file(vec![(2 * w, 5 * w)]).window_starts(),
            [(0, 2 * w), (4 * w + 1, 9 * w + 1)]
        );
        // Done to the end, and a region shorter than a window (ignored).
        assert_eq!(
            file(vec![(0, 10), (5 * w, 10 * w)]).window_starts(),
            [(0, 5 * w)]
        );
        // The scan then finds nothing inside: the same block is only
        // found outside the done region.
        let dir = tempfile::tempdir().unwrap();
        let data = noise(BLOCK, 21);
        let twice = [&data[..], &data[..]].concat();
        let mut locals = [local(dir.path(), "twice", &twice)];
        locals[0].done = vec![(0, w)];
        let found = scan(&locals, &[&data]);
        assert_eq!(
            found,
            [vec![Some(Found {
                local: 0,
                offset: w
            })]]
        );
    }

    #[test]
    fn blocks_the_scan_jumps_past_in_repetitive_data_are_found_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let w = BLOCK as u64;
        // Two blocks repeated: the scan starts at w + 1 (the first two
        // blocks are done), matches the blocks of a copy of the data
        // shifted by w + 1 there, and jumps from match to match, always
        // one byte out of step with the aligned blocks.
        let pattern = noise(2 * BLOCK, 31);
        let old: Vec<u8> = pattern.iter().copied().cycle().take(12 * BLOCK).collect();
        let mut locals = [local(dir.path(), "old", &old)];
        locals[0].written = Some(0);
        locals[0].done = vec![(0, 2 * w)];
        let aligned = &old[2 * BLOCK..6 * BLOCK];
        let shifted = &old[BLOCK + 1..5 * BLOCK + 1];
        let wanted = [signature::of_chunk(aligned), signature::of_chunk(shifted)];
        let lengths = [4 * w, 4 * w];
        let found = find_blocks(
            &locals,
            &wanted,
            &lengths,
            &[Some((0, 2 * w)), None],
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(found[1].iter().all(Option::is_some), "{:?}", found[1]);
        for (block, place) in found[0].iter().enumerate() {
            let place = place.expect("every aligned block is found");
            let at = place.offset as usize;
            assert_eq!(
                &old[at..at + BLOCK],
                &aligned[block * BLOCK..(block + 1) * BLOCK],
                "block {block}"
            );
        }
        // Without their places the jumps never fall in step: the scan
        // alone misses them (what the neighbour pass is for).
        let alone = find_blocks(
            &locals,
            &wanted,
            &lengths,
            &[None, None],
            &Progress::default(),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(alone[0].iter().all(Option::is_none), "{:?}", alone[0]);
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
            &[None],
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
            &[None],
            &progress,
            &AtomicBool::new(true),
        )
        .unwrap();
        assert_eq!(stopped, [vec![None]]);
        assert_eq!(progress.read.load(Ordering::Relaxed), 0);
    }
}
