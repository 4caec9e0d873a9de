//! The download pipeline (`docs/download.md`): fetches a game's chunks
//! from every peer that holds its latest version, verifies each against
//! the manifest's BLAKE3 hash, writes it at its offset, and commits the
//! version sentinel last. One task per download; it reports to the core
//! through [`DownloadEvent`]s and stops at once when cancelled.
//!
//! - `plan`: which peer fetches which chunk (measured throughput, retries,
//!   endgame);
//! - `sentinel`: the on-disk transaction (the only writer into a game root
//!   besides the install module);
//! - `journal`: verified chunks, for resume after a restart;
//!
//! Every per-chunk and per-file step is O(1) amortized (the plan's queues,
//! the journal's bitmap, one `syncfs` for many files), so a game of 38 000
//! chunks or 150 000 files costs no more per byte than a small one.

pub mod delta;
mod durable;
pub mod gather;
pub mod journal;
pub mod plan;
pub mod rarity;
pub mod reuse;
pub mod sentinel;
pub mod space;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanspread_proto::ipc::SourceBytes;
use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::{Availability, CHUNK_SIZE, WireErrorCode};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::library::SENTINEL;
use crate::manifest_id::ManifestId;
use crate::swarm::{Partial, Swarm};
use crate::transport::{ChunkData, ChunkSink, PeerClient};
use durable::Saver;
use journal::{ChunkSet, Journal};
use plan::{AfterFailure, ChunkId, FetchFailure, PeerIdx, Plan};
use sentinel::SentinelError;
use store::{Claims, Stored};

/// Shortest time one chunk fetch may take before it counts as stalled.
pub const MIN_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any chunk fetch may take.
pub const MAX_CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// How often progress is reported (at most).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How often the resume journal is written (at most).
const JOURNAL_INTERVAL: Duration = Duration::from_secs(1);

/// A peer taking part: its id, address, and whether it holds the complete
/// game (else it is downloading the same manifest and serves the chunks
/// it verified).
#[derive(Clone, Debug)]
pub struct Source {
    pub peer_id: String,
    pub addr: SocketAddr,
    pub complete: bool,
    /// Not known to hold the manifest: a connected peer asked in case it
    /// started downloading it at the same moment (its refusal drops it
    /// quietly).
    pub tentative: bool,
}

/// Everything a download needs.
#[derive(Debug)]
pub struct DownloadRequest {
    pub id: GameId,
    pub version: Version,
    /// The game root (`<game_dir>/<id>`).
    pub root: PathBuf,
    /// The whole manifest (what the swarm names and serves).
    pub manifest: Arc<Vec<GameFileDescription>>,
    /// The files to fetch; always includes `version.ini`. Shared with the
    /// blocking steps and the fetches (150 000 entries are not copied).
    pub files: Arc<Vec<GameFileDescription>>,
    pub sources: Vec<Source>,
    pub state_dir: PathBuf,
    /// The file list of the version on disk now, if this host serves one
    /// (an update): its chunk hashes stand for the bytes of every file
    /// whose size and modification time are still those it was hashed at,
    /// so unchanged files are not read again ([`reuse`]).
    pub replaces: Option<Arc<crate::prepare::PreparedManifest>>,
}

/// How a download joins the swarm: where it publishes what it verified,
/// and where the core sends peers that start holding the same manifest
/// while it runs.
#[derive(Debug)]
pub struct SwarmLink {
    pub swarm: Arc<Swarm>,
    pub partial: Arc<Partial>,
    pub new_sources: mpsc::Receiver<Source>,
}

/// Why a download failed. Each variant keeps its cause; the message that
/// leaves the process (`DownloadGameFilesFailed`) is its whole chain.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Our own disk failed: preparing, writing, syncing or committing (the
    /// cause names the step and the path).
    #[error("the download's files on this host")]
    Disk(#[source] SentinelError),
    /// Every source was dropped before the last chunk arrived.
    #[error("no peer can serve the remaining chunks{}", detail(.0))]
    NoSources(Vec<String>),
    /// Every source stopped holding this manifest: the game changed at its
    /// sources (they are not at fault).
    #[error("the game changed at its sources: {}", .0.join("; "))]
    ChangedAtSources(Vec<String>),
    /// The planner gave up (a chunk failed too often everywhere).
    #[error("{0}")]
    GaveUp(String),
    /// A blocking step panicked; the download cannot know its state.
    #[error("{0} panicked")]
    Panicked(&'static str),
}

fn detail(dropped: &[String]) -> String {
    if dropped.is_empty() {
        String::new()
    } else {
        format!(" (dropped: {})", dropped.join("; "))
    }
}

/// What a download reports.
#[derive(Debug)]
pub enum DownloadEvent {
    Begin {
        id: GameId,
    },
    Progress {
        id: GameId,
        bytes_done: u64,
        bytes_total: u64,
        rate: u64,
        peers: u32,
        /// Bytes so far per source.
        sources: Vec<SourceBytes>,
        /// Bytes found in place on disk so far.
        bytes_reused: u64,
    },
    Finished {
        id: GameId,
        stats: DownloadStats,
    },
    Failed {
        id: GameId,
        error: DownloadError,
    },
    Cancelled {
        id: GameId,
    },
}

/// How a finished download went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DownloadStats {
    pub bytes: u64,
    /// Chunks fetched over the network in this run.
    pub chunks_fetched: u64,
    /// Chunks taken from the resume journal.
    pub chunks_resumed: u64,
    /// Bytes found in place on disk ([`reuse`]), not fetched.
    pub bytes_reused: u64,
    /// Chunks found in place on disk.
    pub chunks_reused: u64,
    pub seconds: f64,
    /// Bytes per source.
    pub per_peer: Vec<SourceBytes>,
}

/// Bytes from complete holders and from other downloaders.
pub fn bytes_by_kind(sources: &[SourceBytes]) -> (u64, u64) {
    sources.iter().fold((0, 0), |(seeders, others), source| {
        if source.complete {
            (seeders + source.bytes, others)
        } else {
            (seeders, others + source.bytes)
        }
    })
}

/// What one fetch task produced.
enum Fetched {
    /// Verified and written; durable once the next journal save syncs it.
    Written,
    /// Verified sentinel bytes, kept in memory until the commit.
    Sentinel(Vec<u8>),
    /// The peer did not deliver.
    Failed(FetchFailure),
    /// The peer no longer holds this manifest (its game changed, or its
    /// download ended): it leaves the download, without blame.
    Left(String),
    /// The peer is sending as much as it serves at once (a downloader), or
    /// every chunk asked is on its way to another peer (a complete
    /// holder): ask it again after the swarm moved on, nothing failed.
    Busy,
    /// Our own disk failed: the download cannot go on.
    Local(DownloadError),
}

/// A fetch's outcome: the chunk asked for, the chunk the peer sent (one of
/// the alternatives, for a complete holder), the peer, when it started.
type FetchOutcome = (ChunkId, ChunkId, PeerIdx, Instant, Fetched);

/// What a subscription task reports about one source.
enum News {
    /// Chunks it holds (manifest numbers).
    Holds(Vec<u32>),
    /// It no longer serves this manifest.
    Gone(String),
    /// It finished its download: a complete holder from now on.
    Complete,
    /// A tentative source does not hold the manifest.
    NotHere,
}

/// How long after a source answered busy it is asked again (if no chunk
/// arrived before): a downloader serving the swarm frees a turn every few
/// hundred milliseconds at 100 Mbit/s, every few dozen at 1 Gbit/s.
const BUSY_RETRY: Duration = Duration::from_millis(50);

/// How long a download waits with nothing to fetch and nothing in flight
/// (every source lacks the remaining chunks) before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one download to its end and reports it.
pub async fn run(
    request: DownloadRequest,
    client: Arc<PeerClient>,
    core: EventSender<DownloadEvent>,
    cancel: CancellationToken,
    link: SwarmLink,
) {
    let id = request.id.clone();
    let span = tracing::info_span!("download", game = %id);
    let (swarm, partial) = (Arc::clone(&link.swarm), Arc::clone(&link.partial));
    let outcome =
        tracing::Instrument::instrument(transfer(&request, &client, &core, &cancel, link), span)
            .await;
    let root = request.root.clone();
    let event = match outcome {
        Ok(stats) => DownloadEvent::Finished { id, stats },
        Err(Ended::Cancelled) | Err(Ended::Failed(_)) => {
            // Serve nothing of it from now on, before its files go.
            let reason = match &outcome {
                Err(Ended::Cancelled) => "its download was cancelled",
                _ => "its download failed",
            };
            swarm.retire(&partial, reason);
            let cleanup = tokio::task::spawn_blocking(move || sentinel::abort(&root)).await;
            if let Ok(Err(err)) = cleanup {
                tracing::warn!(game = %request.id, cause = %err_chain(&err), "cannot clean up after the download");
            }
            match outcome {
                Err(Ended::Failed(error)) => {
                    tracing::warn!(game = %request.id, cause = %err_chain(&error), "download failed");
                    DownloadEvent::Failed { id, error }
                }
                _ => {
                    tracing::info!(game = %request.id, "download cancelled");
                    DownloadEvent::Cancelled { id }
                }
            }
        }
    };
    let _ = core.send(event).await;
}

/// Why a transfer ended without finishing.
enum Ended {
    Cancelled,
    Failed(DownloadError),
}

/// The download's place in the swarm: manifest numbering of its chunks.
struct Numbering {
    /// Per plan chunk, its number in the manifest.
    global: Vec<u32>,
    /// Per manifest chunk, its plan chunk, if this download fetches it.
    plan: Vec<Option<ChunkId>>,
}

async fn transfer(
    request: &DownloadRequest,
    client: &Arc<PeerClient>,
    core: &EventSender<DownloadEvent>,
    cancel: &CancellationToken,
    link: SwarmLink,
) -> Result<DownloadStats, Ended> {
    let SwarmLink {
        partial,
        mut new_sources,
        ..
    } = link;
    let started = Instant::now();
    let emit = |event| async move {
        let _ = core.send(event).await;
    };
    // Step 3: the transaction begins. The manifest's digest (which names
    // its journal) is computed on the same blocking thread.
    let (root, files, version) = (
        request.root.clone(),
        request.files.clone(),
        request.version.clone(),
    );
    let replaces = request.replaces.clone();
    let (durability, old_sizes, manifest, known) = tokio::task::spawn_blocking(move || {
        let manifest = ManifestId::of(&version, &files);
        // Before begin touches any file: which still hold what they held
        // when the version on disk was hashed.
        let known = reuse::known_hashes(&root, &files, replaces.as_deref());
        sentinel::begin(&root, &files).map(|(durability, old)| (durability, old, manifest, known))
    })
    .await
    .map_err(|_| Ended::Failed(DownloadError::Panicked("preparing files")))?
    .map_err(|err| Ended::Failed(DownloadError::Disk(err)))?;
    let durability = Arc::new(durability);
    // Chunks are numbered in manifest order: the plan's `ChunkId` is the
    // journal's chunk index.
    let chunk_count: usize = request.files.iter().map(|f| f.chunk_hashes.len()).sum();
    let done = Journal::load_matching(
        &request.state_dir,
        &request.id,
        &request.version,
        &manifest,
        chunk_count,
    )
    .map_or_else(|| ChunkSet::new(chunk_count), |journal| journal.done);
    let full_index: HashMap<&str, usize> = request
        .manifest
        .iter()
        .enumerate()
        .map(|(i, f)| (f.relative_path.as_str(), i))
        .collect();
    let mut numbering = Numbering {
        global: Vec::with_capacity(chunk_count),
        plan: vec![None; partial.table.len()],
    };
    let mut chunks = Vec::with_capacity(chunk_count);
    let mut resumed = 0u64;
    let mut sentinel_chunks = Vec::new();
    for (file_idx, file) in request.files.iter().enumerate() {
        if file.is_dir {
            continue;
        }
        let is_sentinel = file.relative_path == SENTINEL;
        let full_file = full_index[file.relative_path.as_str()];
        for (c, hash) in file.chunk_hashes.iter().enumerate() {
            let offset = c as u64 * CHUNK_SIZE;
            let length = (file.size - offset).min(CHUNK_SIZE);
            // The journal's word, and the bytes are still there: a file
            // that vanished since (or never became durable) is fetched again.
            let already = !is_sentinel
                && done.contains(chunks.len())
                && offset + length <= old_sizes[file_idx];
            resumed += u64::from(already);
            let global = partial.table.index(full_file, c);
            numbering.plan[global] = Some(chunks.len());
            numbering.global.push(global as u32);
            if is_sentinel {
                sentinel_chunks.push(global);
            }
            chunks.push((file_idx, offset, length, hash.clone(), already));
        }
    }
    emit(DownloadEvent::Begin {
        id: request.id.clone(),
    })
    .await;
    // Written chunks enter the journal only once their files were synced
    // (`durable`); saves run in the background of the fetches.
    let mut saver = Saver::new(manifest, durability, done);
    // Chunks already in place on disk (an update's unchanged ones) count
    // as done without crossing the network; they enter the journal with
    // the next save, which syncs their files first.
    let found = reuse_in_place(request, &old_sizes, known, &chunks, &emit, cancel).await?;
    let mut reused_chunks = found.len() as u64;
    let mut reused = 0u64;
    for id in found {
        let (file, _, length, _, already) = &mut chunks[id];
        *already = true;
        reused += *length;
        saver.written(*file, id);
    }
    // Then chunks whose bytes moved (another offset, another file) are
    // assembled from what is on disk plus the ranges that changed.
    let needed: Vec<delta::Needed> = chunks
        .iter()
        .enumerate()
        .filter(|(_, (file, _, length, _, done))| {
            !done && *length > 0 && request.files[*file].relative_path != SENTINEL
        })
        .map(|(id, (file, offset, length, hash, _))| delta::Needed {
            id,
            global: numbering.global[id],
            file: *file,
            offset: *offset,
            length: *length,
            hash: hash.clone(),
        })
        .collect();
    let mut done_regions = vec![Vec::new(); request.files.len()];
    for (file, offset, length, _, done) in &chunks {
        if *done {
            // Chunks of a file come in offset order: neighbours merge.
            let regions: &mut Vec<(u64, u64)> = &mut done_regions[*file];
            match regions.last_mut() {
                Some(last) if last.1 == *offset => last.1 += length,
                _ => regions.push((*offset, offset + length)),
            }
        }
    }
    let before = delta::Before {
        done: chunks.iter().filter(|c| c.4).map(|c| c.2).sum(),
        reused,
        total: chunks.iter().map(|c| c.2).sum(),
    };
    let moved = delta::Pass {
        request,
        old_sizes: &old_sizes,
        done: done_regions,
        manifest: partial.manifest.to_hex(),
        client,
        cancel,
        events: core,
        before,
    }
    .run(needed)
    .await
    .map_err(Ended::Failed)?;
    if cancel.is_cancelled() {
        return Err(Ended::Cancelled);
    }
    reused_chunks += moved.chunks.len() as u64;
    reused += moved.local_bytes;
    for &id in &moved.chunks {
        let (file, _, _, _, already) = &mut chunks[id];
        *already = true;
        saver.written(*file, id);
    }
    let fetched_before = moved.fetched;
    // What a resumed download already holds is served at once.
    partial.verified(
        (0..chunks.len())
            .filter(|&c| chunks[c].4)
            .map(|c| numbering.global[c] as usize),
    );
    // Which chunk regions hold verified bytes or are being written.
    let claims = Arc::new(Claims::new(chunks.len(), |c| chunks[c].4));
    let mut plan = Plan::new(chunks, fastrand::u64(..));
    let numbering = Arc::new(numbering);
    let (news_tx, mut news_rx) = mpsc::channel::<(PeerIdx, News)>(256);
    let mut subscriptions = JoinSet::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let joiner = Joiner {
        client: Arc::clone(client),
        id: request.id.clone(),
        partial: Arc::clone(&partial),
        news: news_tx,
    };
    for source in &request.sources {
        joiner.join(&mut plan, &mut addrs, &mut subscriptions, source);
    }
    tracing::info!(
        files = request.files.len(),
        bytes = plan.total_bytes(),
        resumed_chunks = resumed,
        reused_bytes = reused,
        peers = request.sources.len(),
        manifest = %partial.manifest,
        "download started"
    );

    let mut fetches: JoinSet<FetchOutcome> = JoinSet::new();
    let mut running: HashMap<(ChunkId, PeerIdx), AbortHandle> = HashMap::new();
    let mut sentinel_parts: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut fetched = 0u64;
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_progress = (Instant::now(), plan.done_bytes());
    let mut last_journal = Instant::now();
    // Sources that left because they no longer hold this manifest.
    let mut changed_at: Vec<String> = Vec::new();
    let mut stall = Box::pin(tokio::time::sleep(STALL_TIMEOUT));
    // Sources that answered busy are asked again this long after the first
    // of them did (or as soon as a chunk arrives).
    let mut busy_retry = Box::pin(tokio::time::sleep(STALL_TIMEOUT));
    let mut busy_armed = false;

    loop {
        // Hand out work to every free slot.
        for peer in plan.source_order() {
            let addr = addrs[peer];
            while let Some(chunk_id) = plan.next_for(peer) {
                let alternatives = plan.alternatives(peer, chunk_id);
                tracing::debug!(chunk = numbering.global[chunk_id], peer = %plan.peers()[peer].peer_id, alternatives = alternatives.len(), "chunk asked");
                let task = fetch_task(
                    request,
                    client,
                    &plan,
                    &numbering,
                    &partial,
                    &claims,
                    chunk_id,
                    alternatives,
                    peer,
                    addr,
                );
                let handle = fetches.spawn(task);
                running.insert((chunk_id, peer), handle);
            }
        }
        if plan.is_finished() {
            break;
        }
        if fetches.is_empty() && plan.active_peers() == 0 {
            let dropped: Vec<String> = plan
                .peers()
                .iter()
                .filter_map(|p| {
                    p.dropped
                        .as_ref()
                        .map(|why| format!("{}: {why}", p.peer_id))
                })
                .collect();
            let error = if changed_at.is_empty() {
                DownloadError::NoSources(dropped)
            } else {
                DownloadError::ChangedAtSources(changed_at)
            };
            let _ = saver.save_all(request).await;
            return Err(Ended::Failed(error));
        }
        if !fetches.is_empty() {
            stall
                .as_mut()
                .reset(tokio::time::Instant::now() + STALL_TIMEOUT);
        }
        tokio::select! {
            () = cancel.cancelled() => {
                fetches.abort_all();
                let _ = saver.save_all(request).await;
                return Err(Ended::Cancelled);
            }
            () = &mut stall, if fetches.is_empty() => {
                let _ = saver.save_all(request).await;
                let waiting: Vec<String> = plan
                    .peers()
                    .iter()
                    .filter(|p| p.dropped.is_none())
                    .map(|p| p.peer_id.clone())
                    .collect();
                return Err(Ended::Failed(DownloadError::NoSources(vec![format!(
                    "for {}s none of [{}] held a chunk still missing",
                    STALL_TIMEOUT.as_secs(),
                    waiting.join(", ")
                )])));
            }
            Some(source) = new_sources.recv() => {
                let known = plan.peers().iter().position(|p| {
                    p.peer_id == source.peer_id && p.dropped.is_none()
                });
                match known {
                    None => joiner.join(&mut plan, &mut addrs, &mut subscriptions, &source),
                    // It finished (its subscription may say so first).
                    Some(peer) if source.complete => source_finished(&mut plan, peer),
                    Some(_) => {}
                }
            }
            Some((peer, news)) = news_rx.recv() => match news {
                News::Holds(held) => {
                    for global in held {
                        if let Some(Some(id)) = numbering.plan.get(global as usize) {
                            plan.holds(peer, *id);
                        }
                    }
                }
                News::Gone(reason) => {
                    let peer_id = plan.peers()[peer].peer_id.clone();
                    tracing::info!(peer = %peer_id, %reason, "source left this download");
                    plan.drop_peer(peer, format!("left: {reason}"));
                    abort_fetches_of(&mut running, peer);
                }
                News::Complete => source_finished(&mut plan, peer),
                News::NotHere => {
                    plan.drop_peer(peer, "does not download this manifest".into());
                }
            },
            () = &mut busy_retry, if busy_armed => {
                busy_armed = false;
                plan.not_busy();
            }
            _ = progress.tick() => {
                let now = Instant::now();
                let secs = now.duration_since(last_progress.0).as_secs_f64().max(1e-3);
                let rate = ((plan.done_bytes() - last_progress.1) as f64 / secs) as u64;
                last_progress = (now, plan.done_bytes());
                emit(DownloadEvent::Progress {
                    id: request.id.clone(),
                    bytes_done: plan.done_bytes(),
                    bytes_total: plan.total_bytes(),
                    rate,
                    peers: plan.active_peers() as u32,
                    sources: per_source(&plan, &fetched_before),
                    bytes_reused: reused,
                })
                .await;
                if last_journal.elapsed() >= JOURNAL_INTERVAL && saver.start(request) {
                    last_journal = Instant::now();
                }
            }
            saved = saver.saved(), if saver.is_saving() => {
                if let Err(error) = saved {
                    fetches.abort_all();
                    return Err(Ended::Failed(error));
                }
            }
            Some(joined) = fetches.join_next() => {
                let Ok((asked, got, peer, started_at, result)) = joined else {
                    continue; // an aborted duplicate
                };
                running.remove(&(asked, peer));
                let peer_id = plan.peers()[peer].peer_id.clone();
                match result {
                    Fetched::Written | Fetched::Sentinel(_) => {
                        plan.swap(peer, asked, got);
                        let file = plan.chunk(got).file;
                        let offset = plan.chunk(got).offset;
                        let Some(others) = plan.completed(got, peer, started_at.elapsed()) else {
                            continue;
                        };
                        for other in others {
                            if let Some(handle) = running.remove(&(got, other)) {
                                handle.abort();
                            }
                        }
                        fetched += 1;
                        if let Fetched::Sentinel(bytes) = result {
                            sentinel_parts.push((offset, bytes));
                        } else {
                            // Verified and written: served to the swarm
                            // from now on.
                            let global = numbering.global[got];
                            partial.verified([global as usize]);
                            tracing::debug!(
                                chunk = global, peer = %peer_id,
                                ms = started_at.elapsed().as_millis() as u64,
                                "chunk verified; serving it"
                            );
                            saver.written(file, got);
                        }
                    }
                    Fetched::Busy => {
                        tracing::debug!(chunk = numbering.global[asked], peer = %peer_id, "source busy");
                        plan.busy(asked, peer);
                        if !busy_armed {
                            busy_armed = true;
                            busy_retry
                                .as_mut()
                                .reset(tokio::time::Instant::now() + BUSY_RETRY);
                        }
                    }
                    Fetched::Local(error) => {
                        fetches.abort_all();
                        let _ = saver.save_all(request).await;
                        return Err(Ended::Failed(error));
                    }
                    Fetched::Left(message) => {
                        tracing::info!(peer = %peer_id, %message, "source no longer holds this manifest");
                        changed_at.push(format!("{peer_id}: {message}"));
                        plan.failed(asked, peer, &FetchFailure::Transport(message.clone()));
                        plan.drop_peer(peer, format!("no longer holds this manifest: {message}"));
                        abort_fetches_of(&mut running, peer);
                    }
                    Fetched::Failed(failure) => {
                        match &failure {
                            FetchFailure::BadData => tracing::warn!(
                                peer = %peer_id, offset = plan.chunk(got).offset,
                                file = %request.files[plan.chunk(got).file].relative_path,
                                "chunk from peer failed verification; fetching it elsewhere"
                            ),
                            FetchFailure::Transport(cause) => tracing::debug!(
                                peer = %peer_id, %cause, "chunk fetch failed; retrying"
                            ),
                        }
                        // Blame the chunk that was sent, after the swap.
                        plan.swap(peer, asked, got);
                        match plan.failed(got, peer, &failure) {
                            AfterFailure::Retry => {}
                            AfterFailure::PeerDropped(reason) => {
                                tracing::warn!(peer = %peer_id, %reason, "peer dropped from this download");
                                abort_fetches_of(&mut running, peer);
                            }
                            AfterFailure::Fatal(reason) => {
                                fetches.abort_all();
                                let _ = saver.save_all(request).await;
                                return Err(Ended::Failed(DownloadError::GaveUp(reason)));
                            }
                        }
                    }
                }
            }
        }
    }
    subscriptions.abort_all();

    // Step 5: every other byte is made durable; then commit the sentinel.
    saver.save_all(request).await.map_err(Ended::Failed)?;
    sentinel_parts.sort_by_key(|(offset, _)| *offset);
    let sentinel_bytes: Vec<u8> = sentinel_parts.into_iter().flat_map(|(_, b)| b).collect();
    let (root, files) = (request.root.clone(), request.files.clone());
    tokio::task::spawn_blocking(move || {
        sentinel::trim(&root, &files).and_then(|()| sentinel::commit(&root, &sentinel_bytes))
    })
    .await
    .map_err(|_| Ended::Failed(DownloadError::Panicked("committing version.ini")))?
    .map_err(|err| Ended::Failed(DownloadError::Disk(err)))?;
    // version.ini is on disk now: the whole game is served until the core
    // retires this download (once the game is served complete).
    for chunk in &sentinel_chunks {
        tracing::debug!(chunk, "chunk verified; serving it");
    }
    partial.verified(sentinel_chunks);
    partial.finish();
    Journal::remove(&request.state_dir, &request.id);
    let stats = DownloadStats {
        bytes: plan.total_bytes(),
        chunks_fetched: fetched,
        chunks_resumed: resumed,
        bytes_reused: reused,
        chunks_reused: reused_chunks,
        seconds: started.elapsed().as_secs_f64(),
        per_peer: per_source(&plan, &fetched_before),
    };
    tracing::info!(
        bytes = stats.bytes,
        chunks_fetched = stats.chunks_fetched,
        chunks_resumed = stats.chunks_resumed,
        bytes_reused = stats.bytes_reused,
        chunks_reused = stats.chunks_reused,
        seconds = format!("{:.2}", stats.seconds),
        per_peer = ?stats.per_peer,
        "download finished"
    );
    Ok(stats)
}

/// A file entry of `size` bytes without chunk hashes, for the unit tests
/// of the download's parts.
#[cfg(test)]
pub(crate) fn test_file(path: &str, size: u64) -> GameFileDescription {
    GameFileDescription {
        relative_path: path.into(),
        is_dir: false,
        size,
        chunk_hashes: vec![],
    }
}

/// A plan chunk before the plan: (file, offset, length, hash, done).
type PlannedChunk = (usize, u64, u64, String, bool);

/// Looks for the chunks still needed in place on disk ([`reuse`]), on a
/// blocking thread, publishing progress meanwhile; returns those found.
async fn reuse_in_place<F: Future<Output = ()>>(
    request: &DownloadRequest,
    old_sizes: &[u64],
    known: Vec<Option<Vec<String>>>,
    chunks: &[PlannedChunk],
    emit: &impl Fn(DownloadEvent) -> F,
    cancel: &CancellationToken,
) -> Result<Vec<ChunkId>, Ended> {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let wanted: Vec<reuse::Wanted> = chunks
        .iter()
        .enumerate()
        .filter(|(_, (file, offset, length, _, done))| !done && offset + length <= old_sizes[*file])
        .map(|(id, (file, offset, length, hash, _))| reuse::Wanted {
            id,
            file: *file,
            offset: *offset,
            length: *length,
            hash: hash.clone(),
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let total: u64 = chunks.iter().map(|c| c.2).sum();
    let before: u64 = chunks.iter().filter(|c| c.4).map(|c| c.2).sum();
    let progress = Arc::new(reuse::Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (root, files, old_sizes) = (
        request.root.clone(),
        request.files.clone(),
        old_sizes.to_vec(),
    );
    let (pass_progress, pass_stop) = (Arc::clone(&progress), Arc::clone(&stop));
    let mut pass = tokio::task::spawn_blocking(move || {
        reuse::find_in_place(
            &root,
            &files,
            &old_sizes,
            &known,
            &wanted,
            &pass_progress,
            &pass_stop,
        )
    });
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = (Instant::now(), 0u64);
    let found = loop {
        tokio::select! {
            joined = &mut pass => break joined,
            () = cancel.cancelled(), if !stop.load(Relaxed) => {
                stop.store(true, Relaxed);
            }
            _ = tick.tick() => {
                let reused = progress.reused.load(Relaxed);
                let checked = progress.checked.load(Relaxed);
                let secs = last.0.elapsed().as_secs_f64().max(1e-3);
                let rate = ((checked - last.1) as f64 / secs) as u64;
                last = (Instant::now(), checked);
                emit(DownloadEvent::Progress {
                    id: request.id.clone(),
                    bytes_done: before + reused,
                    bytes_total: total,
                    rate,
                    peers: 0,
                    sources: Vec::new(),
                    bytes_reused: reused,
                })
                .await;
            }
        }
    };
    if cancel.is_cancelled() {
        return Err(Ended::Cancelled);
    }
    let found = found
        .map_err(|_| Ended::Failed(DownloadError::Panicked("looking for chunks on disk")))?
        .map_err(|err| Ended::Failed(DownloadError::Disk(err)))?;
    tracing::info!(
        chunks = found.len(),
        bytes = progress.reused.load(Relaxed),
        read = progress.checked.load(Relaxed),
        "chunks found in place on disk"
    );
    Ok(found)
}

/// Downloader source `peer` finished: a complete holder from now on (its
/// subscription or its library news says so, whichever comes first).
fn source_finished(plan: &mut Plan, peer: PeerIdx) {
    if plan.became_complete(peer) {
        tracing::debug!(peer = %plan.peers()[peer].peer_id, "source finished: a complete holder now");
    }
}

/// Bytes per source (one entry per peer id and kind).
/// `before`: what the local pass fetched as ranges.
fn per_source(plan: &Plan, before: &[SourceBytes]) -> Vec<SourceBytes> {
    let mut sources: Vec<SourceBytes> = before.to_vec();
    for peer in plan.peers() {
        // A downloader that finished during this download counts under
        // both kinds: what it sent before and after.
        let as_downloader = peer.bytes_as_downloader;
        if !peer.complete || as_downloader > 0 {
            add_source_bytes(&mut sources, &peer.peer_id, false, as_downloader);
        }
        if peer.complete {
            add_source_bytes(
                &mut sources,
                &peer.peer_id,
                true,
                peer.bytes - as_downloader,
            );
        }
    }
    sources
}

/// Adds `bytes` to the entry of `peer_id` (of that kind) in `sources`.
fn add_source_bytes(sources: &mut Vec<SourceBytes>, peer_id: &str, complete: bool, bytes: u64) {
    match sources
        .iter_mut()
        .find(|s| s.peer_id == peer_id && s.complete == complete)
    {
        Some(entry) => entry.bytes += bytes,
        None => sources.push(SourceBytes {
            peer_id: peer_id.to_owned(),
            bytes,
            complete,
        }),
    }
}

/// Aborts every fetch running on `peer`.
fn abort_fetches_of(running: &mut HashMap<(ChunkId, PeerIdx), AbortHandle>, peer: PeerIdx) {
    running.retain(|&(_, p), handle| {
        if p == peer {
            handle.abort();
        }
        p != peer
    });
}

/// Adds sources to a running download.
struct Joiner {
    client: Arc<PeerClient>,
    id: GameId,
    partial: Arc<Partial>,
    news: mpsc::Sender<(PeerIdx, News)>,
}

impl Joiner {
    /// Adds `source` to the plan and follows what it holds.
    fn join(
        &self,
        plan: &mut Plan,
        addrs: &mut Vec<SocketAddr>,
        subscriptions: &mut JoinSet<()>,
        source: &Source,
    ) {
        let peer = plan.add_peer(source.peer_id.clone(), source.complete);
        addrs.push(source.addr);
        let chunks = self.partial.table.len();
        let have = self
            .partial
            .held()
            .unwrap_or_else(|_| ChunkSet::new(chunks));
        subscriptions.spawn(subscribe(
            Arc::clone(&self.client),
            self.id.clone(),
            self.partial.manifest.to_hex(),
            have,
            source.clone(),
            peer,
            self.news.clone(),
        ));
        tracing::debug!(peer = %source.peer_id, complete = source.complete, tentative = source.tentative, "source joined");
    }
}

/// Follows what one source holds for as long as the download runs.
async fn subscribe(
    client: Arc<PeerClient>,
    id: GameId,
    manifest: String,
    have: ChunkSet,
    source: Source,
    peer: PeerIdx,
    news: mpsc::Sender<(PeerIdx, News)>,
) {
    let chunks = have.len();
    let report = |item| {
        let news = news.clone();
        async move { news.send((peer, item)).await.is_ok() }
    };
    let mut have = have.to_hex();
    if have.len() > lanspread_proto::wire::MAX_HAVE_HEX {
        have.clear(); // "nothing": the source tells us everything it holds
    }
    let mut subscription = match client.subscribe(source.addr, &id, &manifest, have).await {
        Ok(subscription) => subscription,
        Err(_) if source.tentative => {
            report(News::NotHere).await;
            return;
        }
        Err(err) => {
            // A complete holder is asked for chunks directly (a failure
            // there counts as usual); a downloader we cannot follow serves
            // us nothing.
            if !source.complete {
                report(News::Gone(format!("cannot follow it: {}", err_chain(&err)))).await;
            }
            return;
        }
    };
    loop {
        let line = match subscription.next().await {
            Ok(Some(line)) => line,
            Ok(None) => return, // a complete holder's answer ends here
            Err(err) => {
                if !source.complete {
                    report(News::Gone(format!(
                        "its availability stream failed: {}",
                        err_chain(&err)
                    )))
                    .await;
                }
                return;
            }
        };
        let item = match line {
            // A downloader that finished says so as a complete holder does.
            Availability::Have { complete: true, .. } if !source.complete => News::Complete,
            Availability::Have { chunks: set, .. } => match ChunkSet::from_hex(chunks, &set) {
                Some(set) => News::Holds(set.iter().map(|c| c as u32).collect()),
                None => News::Gone("sent an unreadable chunk set".into()),
            },
            Availability::More { chunks } => {
                tracing::debug!(peer = %source.peer_id, ?chunks, "source verified chunks");
                News::Holds(chunks)
            }
            Availability::Gone { reason } => News::Gone(reason),
            Availability::Error(_) if source.tentative => News::NotHere,
            Availability::Error(refusal) => News::Gone(refusal.message),
        };
        let last = matches!(item, News::Gone(_) | News::NotHere | News::Complete);
        if !report(item).await || last {
            return;
        }
    }
}

/// The task that fetches, verifies and writes one chunk from one peer:
/// `chunk_id`, or (from a complete holder) one of `alternatives`.
#[allow(clippy::too_many_arguments)]
fn fetch_task(
    request: &DownloadRequest,
    client: &Arc<PeerClient>,
    plan: &Plan,
    numbering: &Arc<Numbering>,
    partial: &Arc<Partial>,
    claims: &Arc<Claims>,
    chunk_id: ChunkId,
    alternatives: Vec<ChunkId>,
    peer: PeerIdx,
    addr: SocketAddr,
) -> impl Future<Output = FetchOutcome> + Send + 'static {
    // What verifying and writing each candidate needs; the path of its
    // file is joined only for the one the peer sends.
    let candidates: Vec<Candidate> = std::iter::once(chunk_id)
        .chain(alternatives)
        .map(|id| {
            let chunk = plan.chunk(id);
            Candidate {
                id,
                file: chunk.file,
                offset: chunk.offset,
                length: chunk.length,
                hash: Arc::clone(&chunk.hash),
            }
        })
        .collect();
    let (client, id, numbering, claims, files, root) = (
        Arc::clone(client),
        request.id.clone(),
        Arc::clone(numbering),
        Arc::clone(claims),
        Arc::clone(&request.files),
        request.root.clone(),
    );
    let manifest = partial.manifest.to_hex();
    let timeout = plan.timeout_for(peer, plan.chunk(chunk_id).length);
    async move {
        let started = Instant::now();
        let globals: Vec<u32> = candidates.iter().map(|c| numbering.global[c.id]).collect();
        let index_of = |global: u32| globals.iter().position(|&g| g == global);
        let length_of = |global: u32| index_of(global).map(|i| candidates[i].length);
        // The sink the chunk sent streams into, chosen once the peer said
        // which chunk it sends.
        let open = |global: u32| {
            let sent = &candidates[index_of(global).expect("asked")];
            let relative_path = &files[sent.file].relative_path;
            if relative_path == SENTINEL {
                // Kept in memory until the commit (never written early).
                Sink::Memory(ChunkData::default())
            } else {
                let target = store::Target {
                    id: sent.id,
                    path: root.join(relative_path),
                    offset: sent.offset,
                    length: sent.length,
                    hash: Arc::clone(&sent.hash),
                };
                Sink::Store(store::Intake::new(&claims, target))
            }
        };
        let fetched = client
            .fetch_chunk(
                addr,
                &id,
                &manifest,
                globals[0],
                globals[1..].to_vec(),
                length_of,
                open,
                timeout,
            )
            .await;
        let (sent, sink) = match fetched {
            Ok(fetched) => fetched,
            Err(crate::transport::TransportError::Refused {
                code: WireErrorCode::UnknownManifest,
                message,
                ..
            }) => return (chunk_id, chunk_id, peer, started, Fetched::Left(message)),
            Err(crate::transport::TransportError::Refused {
                code: WireErrorCode::Busy,
                ..
            }) => return (chunk_id, chunk_id, peer, started, Fetched::Busy),
            Err(err) => {
                let failure = FetchFailure::Transport(err.to_string());
                return (chunk_id, chunk_id, peer, started, Fetched::Failed(failure));
            }
        };
        let Some(index) = index_of(sent) else {
            unreachable!("the client checks the chunk sent was asked for");
        };
        let sent = &candidates[index];
        let result = match sink {
            Sink::Memory(data) => {
                let hash = Arc::clone(&sent.hash);
                tokio::task::spawn_blocking(move || {
                    if data.hash().to_hex().as_str() == &*hash {
                        Fetched::Sentinel(data.to_vec())
                    } else {
                        Fetched::Failed(FetchFailure::BadData)
                    }
                })
                .await
                .unwrap_or(Fetched::Local(DownloadError::Panicked("verifying a chunk")))
            }
            Sink::Store(intake) => match intake.finish().await {
                Stored::InPlace => Fetched::Written,
                Stored::BadData => Fetched::Failed(FetchFailure::BadData),
                // Good bytes another fetch of the chunk took over and
                // could not write (its disk failed): ask again, no blame.
                Stored::Lost => Fetched::Busy,
                Stored::Disk(err) => Fetched::Local(DownloadError::Disk(err)),
                Stored::Panicked => {
                    Fetched::Local(DownloadError::Panicked("verifying and writing a chunk"))
                }
            },
        };
        (chunk_id, sent.id, peer, started, result)
    }
}

/// A chunk a fetch names: the one asked, or an alternative.
struct Candidate {
    id: ChunkId,
    /// Index in the request's files.
    file: usize,
    offset: u64,
    length: u64,
    hash: Arc<str>,
}

/// Where a fetched chunk's bytes go while they arrive.
enum Sink {
    /// `version.ini`: kept in memory until the commit.
    Memory(ChunkData),
    /// Every other chunk: hashed and written a slice at a time.
    Store(store::Intake),
}

impl ChunkSink for Sink {
    async fn piece(&mut self, piece: bytes::Bytes) -> std::ops::ControlFlow<()> {
        match self {
            Sink::Memory(data) => data.piece(piece).await,
            Sink::Store(intake) => intake.piece(piece).await,
        }
    }
}
