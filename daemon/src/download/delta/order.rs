//! The order in which chunks assembled from local bytes are written
//! (`docs/download.md#data-that-moved`): a chunk's region is written only
//! after every other chunk that reads bytes from that region has read
//! them. An archive with data inserted near its start shifts everything
//! after it forward, so its chunks are written from the end backwards;
//! data that moved backwards is written front to back. A cycle (two
//! regions that swapped places) is broken by reading those bytes from the
//! network instead: the chunks in it keep only their local blocks that no
//! written region holds.

use std::collections::{HashMap, HashSet};

use lanspread_proto::wire::{CHUNK_SIZE, ChunkRange};

use super::scan::{Found, LocalFile, block_len};
use crate::signature::BLOCK;

/// One chunk to assemble from local bytes and fetched ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Which wanted chunk (the caller's index).
    pub chunk: usize,
    /// The entry of the file list it is written to, and where.
    pub file: usize,
    pub offset: u64,
    pub length: u64,
    /// Its blocks found locally: block number and where.
    pub local: Vec<(usize, Found)>,
}

impl Job {
    /// The parts of the chunk no local block covers, merged into ranges.
    pub fn missing(&self) -> Vec<ChunkRange> {
        let blocks = crate::signature::blocks_in(self.length);
        let mut have = vec![false; blocks];
        for &(block, _) in &self.local {
            have[block] = true;
        }
        let mut ranges: Vec<ChunkRange> = Vec::new();
        for (block, _) in have.iter().enumerate().filter(|(_, h)| !**h) {
            let offset = (block * BLOCK) as u64;
            let length = block_len(self.length, block) as u64;
            match ranges.last_mut() {
                Some(last) if last.offset + last.length == offset => last.length += length,
                _ => ranges.push(ChunkRange { offset, length }),
            }
        }
        ranges
    }

    /// Bytes taken from local files.
    pub fn local_bytes(&self) -> u64 {
        self.local
            .iter()
            .map(|&(block, _)| block_len(self.length, block) as u64)
            .sum()
    }
}

/// The jobs with what each waits for.
#[derive(Debug)]
pub struct Schedule {
    pub jobs: Vec<Job>,
    /// Per job, how many other jobs must run before it may write.
    pub waits_for: Vec<usize>,
    /// Per job, the jobs that wait for it.
    pub releases: Vec<Vec<usize>>,
}

/// Orders `jobs` (which read from `locals`) so no region is written before
/// every read of it; jobs whose local blocks all had to be dropped to
/// break a cycle are left out (their chunks are fetched whole).
pub fn schedule(mut jobs: Vec<Job>, locals: &[LocalFile]) -> Schedule {
    let (waits_for, releases) = dependencies(&jobs, locals);
    let stuck = stuck(&waits_for, &releases);
    if stuck.is_empty() {
        return Schedule {
            jobs,
            waits_for,
            releases,
        };
    }
    // Break every cycle: the stuck jobs stop reading from regions any job
    // writes. None of them then delays another, so the rest is acyclic.
    let dests = destinations(&jobs);
    for &job in &stuck {
        let length = jobs[job].length;
        jobs[job].local.retain(|&(block, found)| {
            writers_of(&dests, locals, found, block_len(length, block)).is_empty()
        });
    }
    tracing::debug!(
        jobs = stuck.len(),
        "regions that swapped places are fetched instead"
    );
    jobs.retain(|job| !job.local.is_empty());
    let (waits_for, releases) = dependencies(&jobs, locals);
    debug_assert!(stuck_is_empty(&waits_for, &releases));
    Schedule {
        jobs,
        waits_for,
        releases,
    }
}

/// Where each job writes: (file, offset) → job.
fn destinations(jobs: &[Job]) -> HashMap<(usize, u64), usize> {
    jobs.iter()
        .enumerate()
        .map(|(i, job)| ((job.file, job.offset), i))
        .collect()
}

/// The jobs whose regions hold `length` bytes at `found`.
fn writers_of(
    dests: &HashMap<(usize, u64), usize>,
    locals: &[LocalFile],
    found: Found,
    length: usize,
) -> Vec<usize> {
    let Some(file) = locals[found.local].written else {
        return Vec::new();
    };
    let first = found.offset / CHUNK_SIZE;
    let last = (found.offset + length as u64 - 1) / CHUNK_SIZE;
    (first..=last)
        .filter_map(|c| dests.get(&(file, c * CHUNK_SIZE)).copied())
        .collect()
}

fn dependencies(jobs: &[Job], locals: &[LocalFile]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let dests = destinations(jobs);
    let mut waits_for = vec![0; jobs.len()];
    let mut releases = vec![Vec::new(); jobs.len()];
    for (reader, job) in jobs.iter().enumerate() {
        let mut writers = HashSet::new();
        for &(block, found) in &job.local {
            writers.extend(writers_of(
                &dests,
                locals,
                found,
                block_len(job.length, block),
            ));
        }
        writers.remove(&reader); // a job reads its sources before it writes
        for writer in writers {
            waits_for[writer] += 1;
            releases[reader].push(writer);
        }
    }
    (waits_for, releases)
}

/// The jobs that can never run (they wait, directly or not, on a cycle).
fn stuck(waits_for: &[usize], releases: &[Vec<usize>]) -> Vec<usize> {
    let mut waits = waits_for.to_vec();
    let mut ready: Vec<usize> = (0..waits.len()).filter(|&j| waits[j] == 0).collect();
    while let Some(job) = ready.pop() {
        for &next in &releases[job] {
            waits[next] -= 1;
            if waits[next] == 0 {
                ready.push(next);
            }
        }
    }
    (0..waits.len()).filter(|&j| waits[j] > 0).collect()
}

fn stuck_is_empty(waits_for: &[usize], releases: &[Vec<usize>]) -> bool {
    stuck(waits_for, releases).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK_SIZE;

    fn written(file: usize) -> LocalFile {
        LocalFile {
            path: "x".into(),
            len: 10 * C,
            written: Some(file),
            done: Vec::new(),
        }
    }

    /// A job for chunk `n` of file 0 whose every block comes from `from`
    /// in local file `local`.
    fn job(n: u64, local: usize, from: u64) -> Job {
        let blocks = (C as usize) / BLOCK;
        Job {
            chunk: n as usize,
            file: 0,
            offset: n * C,
            length: C,
            local: (0..blocks)
                .map(|b| {
                    (
                        b,
                        Found {
                            local,
                            offset: from + (b * BLOCK) as u64,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The order the jobs can run in, one at a time.
    fn order(schedule: &Schedule) -> Vec<usize> {
        let mut waits = schedule.waits_for.clone();
        let mut ready: Vec<usize> = (0..waits.len()).filter(|&j| waits[j] == 0).collect();
        ready.sort_unstable();
        let mut order = Vec::new();
        while !ready.is_empty() {
            let job = ready.remove(0);
            order.push(schedule.jobs[job].chunk);
            for &next in &schedule.releases[job] {
                waits[next] -= 1;
                if waits[next] == 0 {
                    ready.push(next);
                }
            }
        }
        order
    }

    #[test]
    fn data_shifted_forward_is_written_from_the_end_backwards() {
        // 1 MiB + 7 bytes inserted before chunk 1: chunk n (n ≥ 1) reads
        // the old bytes at n·C − (1 MiB + 7), which the chunk before it
        // is about to overwrite.
        let shift = (1 << 20) + 7;
        let locals = [written(0)];
        let jobs = (1..4).map(|n| job(n, 0, n * C - shift)).collect();
        let schedule = schedule(jobs, &locals);
        assert_eq!(order(&schedule), [3, 2, 1]);
    }

    #[test]
    fn data_shifted_backwards_is_written_front_to_back() {
        let locals = [written(0)];
        let jobs = (0..3).map(|n| job(n, 0, n * C + 12345)).collect();
        assert_eq!(order(&schedule(jobs, &locals)), [0, 1, 2]);
    }

    #[test]
    fn bytes_from_a_file_that_is_not_written_need_no_order() {
        let locals = [
            written(0),
            LocalFile {
                path: "y".into(),
                len: C,
                written: None,
                done: Vec::new(),
            },
        ];
        let schedule = schedule(vec![job(0, 1, 0), job(1, 1, 0)], &locals);
        assert_eq!(schedule.waits_for, [0, 0]);
    }

    #[test]
    fn regions_that_swapped_places_are_fetched_instead() {
        let locals = [written(0)];
        // Chunks 0 and 1 swapped; chunk 2 reads chunk 3's region, which
        // nobody else needs.
        let jobs = vec![job(0, 0, C), job(1, 0, 0), job(2, 0, 3 * C)];
        let schedule = schedule(jobs, &locals);
        let chunks: Vec<usize> = schedule.jobs.iter().map(|j| j.chunk).collect();
        assert_eq!(chunks, [2], "the swapped pair is fetched");
        assert_eq!(order(&schedule), [2]);
    }

    #[test]
    fn missing_blocks_become_merged_ranges() {
        let mut partial = job(0, 0, 0);
        partial.length = 3 * BLOCK as u64 + 10;
        partial.local = vec![(
            1,
            Found {
                local: 0,
                offset: 0,
            },
        )];
        assert_eq!(
            partial.missing(),
            [
                ChunkRange {
                    offset: 0,
                    length: BLOCK as u64
                },
                ChunkRange {
                    offset: 2 * BLOCK as u64,
                    length: BLOCK as u64 + 10
                },
            ]
        );
        assert_eq!(partial.local_bytes(), BLOCK as u64);
    }
}
