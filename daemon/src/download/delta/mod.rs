//! Data that moved (`docs/download.md#data-that-moved`): the second
//! local pass of a download, after chunks found in place. For the chunks
//! still needed it asks a source for their block signatures
//! (`GetSignatures`), slides them over the files this host already holds
//! ([`scan`]), and assembles each chunk of which any block was found:
//! the found blocks read locally, the rest fetched as ranges (`GetChunk`
//! with a range), the whole verified against the chunk's hash before it
//! is written, in an order that never overwrites bytes another chunk still
//! has to read ([`order`]). What it cannot assemble is left to the
//! network transfer, which starts only after this pass has ended.

pub mod order;
pub mod scan;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use lanspread_proto::ipc::SourceBytes;
use lanspread_proto::wire::MAX_SIGNATURE_CHUNKS;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::plan::ChunkId;
use super::sentinel::{DISCARDED, STAGED, SentinelError};
use super::{
    DownloadError, DownloadEvent, DownloadRequest, MAX_CHUNK_TIMEOUT, MIN_CHUNK_TIMEOUT,
    PROGRESS_INTERVAL, Source,
};
use crate::event_sender::EventSender;
use crate::library::SENTINEL;
use crate::signature::{self, BlockSignature};
use crate::transport::PeerClient;
use order::{Job, Schedule};
use scan::{LocalFile, Progress};

/// Signature requests in flight at once, and chunks assembled at once.
const PARALLEL: usize = 4;

/// Most files of the root outside the new file list that are read.
const MAX_OTHER_FILES: usize = 100_000;

/// A chunk the download still needs.
#[derive(Debug, Clone)]
pub struct Needed {
    pub id: ChunkId,
    /// Its number in the manifest (what `GetSignatures` names).
    pub global: u32,
    /// Index into the download's file list, and where in that file.
    pub file: usize,
    pub offset: u64,
    pub length: u64,
    /// BLAKE3, hex.
    pub hash: String,
}

/// What the pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Chunks assembled, verified and written.
    pub chunks: Vec<ChunkId>,
    /// Bytes of them read from local files.
    pub local_bytes: u64,
    /// Bytes of them fetched, per source.
    pub fetched: Vec<SourceBytes>,
    /// Bytes of local files read by the scan.
    pub scanned: u64,
}

/// Everything the pass needs besides the chunks.
#[derive(Debug)]
pub struct Pass<'a> {
    pub request: &'a DownloadRequest,
    /// Per entry of the download's file list, what it held before the
    /// download began.
    pub old_sizes: &'a [u64],
    /// Per entry of the download's file list, the regions (start, end)
    /// that hold chunks of the new version already (resumed or found in
    /// place), sorted.
    pub done: Vec<Vec<(u64, u64)>>,
    /// The manifest's digest, hex.
    pub manifest: String,
    pub client: &'a Arc<PeerClient>,
    pub cancel: &'a CancellationToken,
    /// Where progress goes while the pass runs, and the bytes done (of
    /// `total`) and reused before it.
    pub events: &'a EventSender<DownloadEvent>,
    pub before: Before,
}

/// Where the download stood when the pass began.
#[derive(Debug, Clone, Copy)]
pub struct Before {
    pub done: u64,
    pub reused: u64,
    pub total: u64,
}

impl Pass<'_> {
    /// Runs the pass over `needed` (the chunks neither resumed nor found
    /// in place). Only a failure of our own disk is an error; a source
    /// that does not answer, a local file that vanished or a chunk that
    /// does not verify leaves that chunk to the network transfer.
    pub async fn run(&self, needed: Vec<Needed>) -> Result<Outcome, DownloadError> {
        let sources: Vec<Source> = {
            let mut sources: Vec<Source> = self
                .request
                .sources
                .iter()
                .filter(|s| !s.tentative)
                .cloned()
                .collect();
            sources.sort_by_key(|s| !s.complete);
            sources
        };
        if needed.is_empty() || sources.is_empty() {
            return Ok(Outcome::default());
        }
        let (root, files, old_sizes, done) = (
            self.request.root.clone(),
            self.request.files.clone(),
            self.old_sizes.to_vec(),
            self.done.clone(),
        );
        let chosen = tokio::task::spawn_blocking(move || {
            let locals = local_files(&root, &files, &old_sizes, &done, &needed);
            let budget: u64 = locals.iter().map(|l| l.len).sum();
            let candidates = candidates(needed, &old_sizes, budget);
            (locals, candidates)
        })
        .await;
        let Ok((locals, candidates)) = chosen else {
            return Err(DownloadError::Panicked("listing local files"));
        };
        if candidates.is_empty() {
            return Ok(Outcome::default());
        }
        let signatures = self.signatures(&sources, &candidates).await;
        let (candidates, wanted): (Vec<Needed>, Vec<Vec<BlockSignature>>) = candidates
            .into_iter()
            .zip(signatures)
            .filter_map(|(chunk, signatures)| Some((chunk, signatures?)))
            .unzip();
        if candidates.is_empty() || self.cancel.is_cancelled() {
            return Ok(Outcome::default());
        }
        let lengths: Vec<u64> = candidates.iter().map(|c| c.length).collect();
        let places: Vec<Option<scan::Place>> = candidates
            .iter()
            .map(|c| Some((c.file, c.offset)))
            .collect();
        let progress = Arc::new(Progress::default());
        let stop = Arc::new(AtomicBool::new(false));
        let scan = {
            let (locals, progress, stop) =
                (locals.clone(), Arc::clone(&progress), Arc::clone(&stop));
            tokio::task::spawn_blocking(move || {
                scan::find_blocks(&locals, &wanted, &lengths, &places, &progress, &stop)
            })
        };
        let mut scan = std::pin::pin!(scan);
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = (std::time::Instant::now(), 0u64);
        let found = loop {
            tokio::select! {
                found = &mut scan => break found,
                () = self.cancel.cancelled() => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Outcome::default());
                }
                _ = tick.tick() => {
                    // The scan's rate (bytes read) while nothing else moves.
                    let read = progress.read.load(std::sync::atomic::Ordering::Relaxed);
                    let secs = last.0.elapsed().as_secs_f64().max(1e-3);
                    let rate = ((read - last.1) as f64 / secs) as u64;
                    last = (std::time::Instant::now(), read);
                    self.progress(0, rate).await;
                }
            }
        };
        let found = found
            .map_err(|_| DownloadError::Panicked("looking for moved data"))?
            .map_err(DownloadError::Disk)?;
        let jobs: Vec<Job> = candidates
            .iter()
            .zip(found)
            .enumerate()
            .filter_map(|(i, (chunk, blocks))| {
                let local: Vec<_> = blocks
                    .into_iter()
                    .enumerate()
                    .filter_map(|(b, f)| Some((b, f?)))
                    .collect();
                (!local.is_empty()).then_some(Job {
                    chunk: i,
                    file: chunk.file,
                    offset: chunk.offset,
                    length: chunk.length,
                    local,
                })
            })
            .collect();
        let scanned = progress.read.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            chunks = candidates.len(),
            with_local_blocks = jobs.len(),
            scanned,
            files = locals.len(),
            "looked for moved data"
        );
        let schedule = order::schedule(jobs, &locals);
        let mut outcome = self
            .assemble(schedule, &candidates, Arc::new(locals), &sources)
            .await?;
        outcome.scanned = scanned;
        Ok(outcome)
    }

    /// Reports the download's progress: `assembled` bytes of this pass so
    /// far (all of them reused or fetched as ranges), at `rate`.
    async fn progress(&self, assembled: u64, rate: u64) {
        let _ = self
            .events
            .send(DownloadEvent::Progress {
                id: self.request.id.clone(),
                bytes_done: self.before.done + assembled,
                bytes_total: self.before.total,
                rate,
                peers: 0,
                sources: Vec::new(),
                bytes_reused: self.before.reused + assembled,
            })
            .await;
    }

    /// The signatures of each candidate (`None` where no source gave them).
    async fn signatures(
        &self,
        sources: &[Source],
        candidates: &[Needed],
    ) -> Vec<Option<Vec<BlockSignature>>> {
        // Runs of consecutive manifest numbers, at most a request each.
        let mut runs: Vec<(usize, usize)> = Vec::new(); // (first index, count)
        for (i, chunk) in candidates.iter().enumerate() {
            match runs.last_mut() {
                Some((first, count))
                    if candidates[*first].global + *count as u32 == chunk.global
                        && (*count as u32) < MAX_SIGNATURE_CHUNKS =>
                {
                    *count += 1;
                }
                _ => runs.push((i, 1)),
            }
        }
        let mut signatures = vec![None; candidates.len()];
        let mut fetches = JoinSet::new();
        let mut runs = runs.into_iter().enumerate();
        loop {
            while fetches.len() < PARALLEL
                && let Some((n, (first, count))) = runs.next()
            {
                let (client, id, manifest) = (
                    Arc::clone(self.client),
                    self.request.id.clone(),
                    self.manifest.clone(),
                );
                let global = candidates[first].global;
                // Each run starts at another source, so the load spreads.
                let order: Vec<Source> = (0..sources.len())
                    .map(|k| sources[(n + k) % sources.len()].clone())
                    .collect();
                fetches.spawn(async move {
                    for source in order {
                        let answer = client
                            .fetch_signatures(source.addr, &id, &manifest, global, count as u32)
                            .await;
                        match answer {
                            Ok(chunks) => return (first, Some(chunks)),
                            Err(err) => {
                                tracing::debug!(peer = %source.peer_id, cause = %err, "no signatures from this source");
                            }
                        }
                    }
                    (first, None)
                });
            }
            let Some(joined) = fetches.join_next().await else {
                break;
            };
            let Ok((first, chunks)) = joined else {
                continue;
            };
            for (i, hex) in chunks.into_iter().flatten().enumerate() {
                let chunk = &candidates[first + i];
                signatures[first + i] = signature::decode(&hex, signature::blocks_in(chunk.length));
            }
        }
        signatures
    }

    /// Runs the jobs in their order, [`PARALLEL`] at a time.
    async fn assemble(
        &self,
        schedule: Schedule,
        candidates: &[Needed],
        locals: Arc<Vec<LocalFile>>,
        sources: &[Source],
    ) -> Result<Outcome, DownloadError> {
        let Schedule {
            jobs,
            mut waits_for,
            releases,
        } = schedule;
        let mut ready: Vec<usize> = (0..jobs.len()).filter(|&j| waits_for[j] == 0).collect();
        let mut running = JoinSet::new();
        let mut outcome = Outcome::default();
        let mut fetched: HashMap<usize, u64> = HashMap::new();
        let (mut assembled, mut reported) = (0u64, std::time::Instant::now());
        loop {
            while running.len() < PARALLEL
                && !self.cancel.is_cancelled()
                && let Some(j) = ready.pop()
            {
                let job = jobs[j].clone();
                let chunk = candidates[job.chunk].clone();
                let source_order: Vec<(usize, Source)> = (0..sources.len())
                    .map(|k| (j + k) % sources.len())
                    .map(|k| (k, sources[k].clone()))
                    .collect();
                let task = assemble_one(
                    job,
                    chunk,
                    Arc::clone(&locals),
                    self.request
                        .root
                        .join(&self.request.files[jobs[j].file].relative_path),
                    source_order,
                    Arc::clone(self.client),
                    self.request.id.clone(),
                    self.manifest.clone(),
                );
                running.spawn(async move { (j, task.await) });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (j, result) = joined.map_err(|_| DownloadError::Panicked("assembling a chunk"))?;
            for &next in &releases[j] {
                waits_for[next] -= 1;
                if waits_for[next] == 0 {
                    ready.push(next);
                }
            }
            match result {
                Assembled::Written { from_sources } => {
                    let job = &jobs[j];
                    outcome.chunks.push(candidates[job.chunk].id);
                    outcome.local_bytes += job.local_bytes();
                    for (source, bytes) in from_sources {
                        *fetched.entry(source).or_default() += bytes;
                    }
                    assembled += job.local_bytes();
                    if reported.elapsed() >= PROGRESS_INTERVAL {
                        let rate = (assembled as f64 / reported.elapsed().as_secs_f64()) as u64;
                        self.progress(assembled, rate).await;
                        reported = std::time::Instant::now();
                    }
                }
                Assembled::Skipped(why) => {
                    tracing::debug!(chunk = candidates[jobs[j].chunk].global, %why, "chunk left to the network transfer");
                }
                Assembled::Disk(err) => {
                    running.abort_all();
                    return Err(DownloadError::Disk(err));
                }
            }
        }
        let mut per_source: Vec<SourceBytes> = Vec::new();
        for (source, bytes) in fetched {
            let source = &sources[source];
            super::add_source_bytes(&mut per_source, &source.peer_id, source.complete, bytes);
        }
        outcome.fetched = per_source;
        tracing::info!(
            chunks = outcome.chunks.len(),
            local_bytes = outcome.local_bytes,
            fetched_bytes = outcome.fetched.iter().map(|s| s.bytes).sum::<u64>(),
            "assembled chunks from moved data"
        );
        Ok(outcome)
    }
}

/// What became of one job.
enum Assembled {
    /// Verified and written; bytes fetched per source index.
    Written { from_sources: Vec<(usize, u64)> },
    /// Left to the network transfer (why).
    Skipped(String),
    /// Our own disk failed writing it.
    Disk(SentinelError),
}

/// Reads a job's local blocks, fetches the rest, verifies the whole and
/// writes it at its place in `dest`.
#[allow(clippy::too_many_arguments)]
async fn assemble_one(
    job: Job,
    chunk: Needed,
    locals: Arc<Vec<LocalFile>>,
    dest: PathBuf,
    sources: Vec<(usize, Source)>,
    client: Arc<PeerClient>,
    id: lanspread_proto::model::GameId,
    manifest: String,
) -> Assembled {
    let read = {
        let (job, locals) = (job.clone(), Arc::clone(&locals));
        tokio::task::spawn_blocking(move || read_local(&job, &locals)).await
    };
    let mut buffer = match read {
        Ok(Ok(buffer)) => buffer,
        Ok(Err(err)) => return Assembled::Skipped(format!("reading local bytes: {err}")),
        Err(_) => return Assembled::Skipped("reading local bytes panicked".into()),
    };
    let mut from_sources = Vec::new();
    for range in job.missing() {
        let mut got = false;
        for (index, source) in &sources {
            let fetched = client
                .fetch_range(
                    source.addr,
                    &id,
                    &manifest,
                    chunk.global,
                    range,
                    range_timeout(range),
                )
                .await;
            match fetched {
                Ok(data) => {
                    let mut at = range.offset as usize;
                    for piece in data.pieces() {
                        buffer[at..at + piece.len()].copy_from_slice(piece);
                        at += piece.len();
                    }
                    from_sources.push((*index, range.length));
                    got = true;
                    break;
                }
                Err(err) => {
                    tracing::debug!(peer = %source.peer_id, cause = %err, "range fetch failed");
                }
            }
        }
        if !got {
            return Assembled::Skipped(format!(
                "no source sent bytes {}+{}",
                range.offset, range.length
            ));
        }
    }
    let write = tokio::task::spawn_blocking(move || {
        if blake3::hash(&buffer).to_hex().as_str() != chunk.hash {
            return Assembled::Skipped("the assembled chunk does not match its hash".into());
        }
        let written = OpenOptions::new()
            .write(true)
            .open(&dest)
            .and_then(|file| file.write_all_at(&buffer, chunk.offset));
        match written {
            Ok(()) => Assembled::Written { from_sources },
            Err(source) => Assembled::Disk(SentinelError::Io {
                action: "write",
                path: dest,
                source,
            }),
        }
    })
    .await;
    write.unwrap_or_else(|_| Assembled::Skipped("verifying the chunk panicked".into()))
}

/// How long fetching `range` may take: the shortest chunk deadline plus a
/// second per 64 KiB (a peer or a download limit as slow as that still
/// gets its range through), at most the longest chunk deadline.
fn range_timeout(range: lanspread_proto::wire::ChunkRange) -> std::time::Duration {
    let slow = std::time::Duration::from_secs(range.length.div_ceil(64 * 1024));
    (MIN_CHUNK_TIMEOUT + slow).min(MAX_CHUNK_TIMEOUT)
}

/// A job's chunk with its local blocks filled in (the rest zero).
fn read_local(job: &Job, locals: &[LocalFile]) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; job.length as usize];
    let mut open: HashMap<usize, File> = HashMap::new();
    for &(block, found) in &job.local {
        let file = match open.entry(found.local) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(File::open(&locals[found.local].path)?)
            }
        };
        let start = block * signature::BLOCK;
        let len = scan::block_len(job.length, block);
        file.read_exact_at(&mut buffer[start..start + len], found.offset)?;
    }
    Ok(buffer)
}

/// The files the scan reads: the old bytes of each file of the new list
/// that has chunks still needed, then the files of the root the new list
/// does not name (an old version's files, renamed or removed since),
/// except `local/`, the sentinel's names and symlinks.
fn local_files(
    root: &Path,
    files: &[lanspread_proto::model::GameFileDescription],
    old_sizes: &[u64],
    done: &[Vec<(u64, u64)>],
    needed: &[Needed],
) -> Vec<LocalFile> {
    let with_needed: HashSet<usize> = needed.iter().map(|c| c.file).collect();
    let mut locals: Vec<LocalFile> = (0..files.len())
        .filter(|f| with_needed.contains(f) && old_sizes[*f] > 0)
        .map(|f| LocalFile {
            path: root.join(&files[f].relative_path),
            len: old_sizes[f],
            written: Some(f),
            done: done[f].clone(),
        })
        .collect();
    let listed: HashSet<&str> = files.iter().map(|f| f.relative_path.as_str()).collect();
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let relative = dir.join(entry.file_name());
            let Some(name) = relative.to_str() else {
                continue;
            };
            if matches!(name, "local" | SENTINEL | DISCARDED | STAGED) {
                continue;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(relative);
            } else if meta.is_file()
                && meta.len() > 0
                && !listed.contains(name)
                && locals.len() < MAX_OTHER_FILES
            {
                locals.push(LocalFile {
                    path: entry.path(),
                    len: meta.len(),
                    written: None,
                    done: Vec::new(),
                });
            }
        }
    }
    locals
}

/// The chunks worth asking signatures for: every chunk of a file whose
/// old bytes are on disk (what an update changed), and chunks of new files
/// as long as their bytes add up to no more than the local bytes to find
/// them in (`budget`): a first download next to one stray file does not
/// ask for the whole game's.
fn candidates(mut needed: Vec<Needed>, old_sizes: &[u64], budget: u64) -> Vec<Needed> {
    let mut new_bytes = 0u64;
    needed.retain(|c| {
        if old_sizes[c.file] > 0 {
            return true;
        }
        new_bytes += c.length;
        new_bytes <= budget
    });
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needed(global: u32, file: usize, length: u64) -> Needed {
        Needed {
            id: global as usize,
            global,
            file,
            offset: 0,
            length,
            hash: String::new(),
        }
    }

    #[test]
    fn chunks_of_new_files_are_bounded_by_the_local_bytes_those_of_old_files_not() {
        // File 0 held bytes before (it grew); file 1 is new.
        let old_sizes = [100, 0];
        let chosen = candidates(
            vec![
                needed(0, 0, 60),
                needed(1, 0, 60),
                needed(2, 1, 60),
                needed(3, 1, 60),
            ],
            &old_sizes,
            100,
        );
        let globals: Vec<u32> = chosen.iter().map(|c| c.global).collect();
        assert_eq!(
            globals,
            [0, 1, 2],
            "all of the old file, 100 bytes of new ones"
        );
    }

    #[test]
    fn local_files_are_the_old_bytes_and_unlisted_files_never_local_or_the_sentinel() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in [
            "a",
            "renamed",
            "local/save",
            SENTINEL,
            DISCARDED,
            "sub/moved",
        ] {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"bytes").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let files = [
            crate::download::test_file("a", 5),
            crate::download::test_file("b", 5),
        ];
        let locals = local_files(
            root,
            &files,
            &[5, 0],
            &[vec![], vec![]],
            &[needed(0, 0, 5), needed(1, 1, 5)],
        );
        let mut names: Vec<String> = locals
            .iter()
            .map(|l| {
                l.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["a", "renamed", "sub/moved"]);
        assert_eq!(
            locals
                .iter()
                .find(|l| l.path.ends_with("a"))
                .unwrap()
                .written,
            Some(0)
        );
    }
}
