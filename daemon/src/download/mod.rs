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
//! - `manifest_id`: one digest that names a manifest.
//!
//! Every per-chunk and per-file step is O(1) amortized (the plan's queues,
//! the journal's bitmap, one `syncfs` for many files), so a game of 38 000
//! chunks or 150 000 files costs no more per byte than a small one.

pub mod gather;
pub mod journal;
pub mod manifest_id;
pub mod plan;
pub mod rarity;
pub mod sentinel;
pub mod space;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::CHUNK_SIZE;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::library::SENTINEL;
use crate::transport::PeerClient;
use journal::{ChunkSet, Journal};
use manifest_id::ManifestId;
use plan::{AfterFailure, ChunkId, FetchFailure, PeerIdx, Plan};
use sentinel::{Durability, SentinelError};

/// Shortest time one chunk fetch may take before it counts as stalled.
pub const MIN_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest any chunk fetch may take.
pub const MAX_CHUNK_TIMEOUT: Duration = Duration::from_secs(120);
/// How often progress is reported (at most).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How often the resume journal is written (at most).
const JOURNAL_INTERVAL: Duration = Duration::from_secs(1);

/// A peer taking part: its id, address, and which of the requested files
/// it serves with exactly the requested description.
#[derive(Clone, Debug)]
pub struct Source {
    pub peer_id: String,
    pub addr: SocketAddr,
    pub serves: Vec<bool>,
}

/// Everything a download needs.
#[derive(Debug)]
pub struct DownloadRequest {
    pub id: GameId,
    pub version: Version,
    /// The game root (`<game_dir>/<id>`).
    pub root: PathBuf,
    /// The files to fetch; always includes `version.ini`.
    pub files: Vec<GameFileDescription>,
    pub sources: Vec<Source>,
    pub state_dir: PathBuf,
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
    #[error("no peer can serve the remaining chunks")]
    NoSources,
    /// The planner gave up (a chunk failed too often everywhere).
    #[error("{0}")]
    GaveUp(String),
    /// A blocking step panicked; the download cannot know its state.
    #[error("{0} panicked")]
    Panicked(&'static str),
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
    pub seconds: f64,
    /// Bytes per peer id.
    pub per_peer: Vec<(String, u64)>,
}

/// What one fetch task produced.
enum Fetched {
    /// Verified and written; durable once the next journal save syncs it.
    Written,
    /// Verified sentinel bytes, kept in memory until the commit.
    Sentinel(Vec<u8>),
    /// The peer did not deliver.
    Failed(FetchFailure),
    /// Our own disk failed: the download cannot go on.
    Local(DownloadError),
}

/// Runs one download to its end and reports it.
pub async fn run(
    request: DownloadRequest,
    client: Arc<PeerClient>,
    core: EventSender<DownloadEvent>,
    cancel: CancellationToken,
) {
    let id = request.id.clone();
    let report = |event| {
        let core = core.clone();
        async move {
            let _ = core.send(event).await;
        }
    };
    let span = tracing::info_span!("download", game = %id);
    let outcome =
        tracing::Instrument::instrument(transfer(&request, &client, &core, &cancel), span).await;
    let root = request.root.clone();
    let event = match outcome {
        Ok(stats) => DownloadEvent::Finished { id, stats },
        Err(Ended::Cancelled) | Err(Ended::Failed(_)) => {
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
    report(event).await;
}

/// Why a transfer ended without finishing.
enum Ended {
    Cancelled,
    Failed(DownloadError),
}

async fn transfer(
    request: &DownloadRequest,
    client: &Arc<PeerClient>,
    core: &EventSender<DownloadEvent>,
    cancel: &CancellationToken,
) -> Result<DownloadStats, Ended> {
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
    let (durability, manifest) = tokio::task::spawn_blocking(move || {
        let manifest = ManifestId::of(&version, &files);
        sentinel::begin(&root, &files).map(|durability| (durability, manifest))
    })
    .await
    .map_err(|_| Ended::Failed(DownloadError::Panicked("preparing files")))?
    .map_err(|err| Ended::Failed(DownloadError::Disk(err)))?;
    let durability = Arc::new(durability);
    // Chunks are numbered in manifest order: the plan's `ChunkId` is the
    // journal's chunk index.
    let chunk_count: usize = request.files.iter().map(|f| f.chunk_hashes.len()).sum();
    let mut done = Journal::load_matching(
        &request.state_dir,
        &request.id,
        &request.version,
        &manifest,
        chunk_count,
    )
    .map_or_else(|| ChunkSet::new(chunk_count), |journal| journal.done);
    let mut chunks = Vec::with_capacity(chunk_count);
    let mut resumed = 0u64;
    for (file_idx, file) in request.files.iter().enumerate() {
        if file.is_dir {
            continue;
        }
        let is_sentinel = file.relative_path == SENTINEL;
        for (c, hash) in file.chunk_hashes.iter().enumerate() {
            let offset = c as u64 * CHUNK_SIZE;
            let length = (file.size - offset).min(CHUNK_SIZE);
            let already = !is_sentinel && done.contains(chunks.len());
            resumed += u64::from(already);
            chunks.push((file_idx, offset, length, hash.clone(), already));
        }
    }
    let journal = JournalState {
        manifest,
        durability,
    };
    let mut plan = Plan::new(chunks, fastrand::u64(..));
    for source in &request.sources {
        plan.add_peer(source.peer_id.clone(), true);
    }
    emit(DownloadEvent::Begin {
        id: request.id.clone(),
    })
    .await;
    tracing::info!(
        files = request.files.len(),
        bytes = plan.total_bytes(),
        resumed_chunks = resumed,
        peers = request.sources.len(),
        "download started"
    );

    let mut fetches: JoinSet<(ChunkId, PeerIdx, Instant, Fetched)> = JoinSet::new();
    let mut running: HashMap<(ChunkId, PeerIdx), AbortHandle> = HashMap::new();
    let mut sentinel_parts: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut fetched = 0u64;
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_progress = (Instant::now(), plan.done_bytes());
    let mut last_journal = Instant::now();
    // Files written to since the last sync, and their chunks: those enter
    // `done` only once synced (see `save_journal`).
    let mut unsynced = Unsynced::default();

    loop {
        // Hand out work to every free slot.
        for peer in 0..request.sources.len() {
            while let Some(chunk_id) = plan.next_for(peer) {
                let task = fetch_task(request, client, &plan, chunk_id, peer);
                let handle = fetches.spawn(task);
                running.insert((chunk_id, peer), handle);
            }
        }
        if plan.is_finished() {
            break;
        }
        if fetches.is_empty() {
            return Err(Ended::Failed(DownloadError::NoSources));
        }
        tokio::select! {
            () = cancel.cancelled() => {
                fetches.abort_all();
                let _ = save_journal(request, &journal, &mut done, &mut unsynced).await;
                return Err(Ended::Cancelled);
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
                })
                .await;
                if !unsynced.is_empty() && last_journal.elapsed() >= JOURNAL_INTERVAL {
                    if let Err(error) = save_journal(request, &journal, &mut done, &mut unsynced).await {
                        fetches.abort_all();
                        return Err(Ended::Failed(error));
                    }
                    last_journal = Instant::now();
                }
            }
            Some(joined) = fetches.join_next() => {
                let Ok((chunk_id, peer, started_at, result)) = joined else {
                    continue; // an aborted duplicate
                };
                running.remove(&(chunk_id, peer));
                let peer_id = &request.sources[peer].peer_id;
                match result {
                    Fetched::Written | Fetched::Sentinel(_) => {
                        let file = plan.chunk(chunk_id).file;
                        let offset = plan.chunk(chunk_id).offset;
                        let Some(others) = plan.completed(chunk_id, peer, started_at.elapsed()) else {
                            continue;
                        };
                        for other in others {
                            if let Some(handle) = running.remove(&(chunk_id, other)) {
                                handle.abort();
                            }
                        }
                        fetched += 1;
                        if let Fetched::Sentinel(bytes) = result {
                            sentinel_parts.push((offset, bytes));
                        } else {
                            unsynced.files.insert(file);
                            unsynced.chunks.push(chunk_id);
                        }
                    }
                    Fetched::Local(error) => {
                        fetches.abort_all();
                        let _ = save_journal(request, &journal, &mut done, &mut unsynced).await;
                        return Err(Ended::Failed(error));
                    }
                    Fetched::Failed(failure) => {
                        match &failure {
                            FetchFailure::BadData => tracing::warn!(
                                peer = %peer_id, offset = plan.chunk(chunk_id).offset,
                                file = %request.files[plan.chunk(chunk_id).file].relative_path,
                                "chunk from peer failed verification; fetching it elsewhere"
                            ),
                            FetchFailure::Transport(cause) => tracing::debug!(
                                peer = %peer_id, %cause, "chunk fetch failed; retrying"
                            ),
                        }
                        match plan.failed(chunk_id, peer, &failure) {
                            AfterFailure::Retry => {}
                            AfterFailure::PeerDropped(reason) => {
                                tracing::warn!(peer = %peer_id, %reason, "peer dropped from this download");
                            }
                            AfterFailure::Fatal(reason) => {
                                fetches.abort_all();
                                let _ = save_journal(request, &journal, &mut done, &mut unsynced).await;
                                return Err(Ended::Failed(DownloadError::GaveUp(reason)));
                            }
                        }
                    }
                }
            }
        }
    }

    // Step 5: every other byte is made durable; then commit the sentinel.
    save_journal(request, &journal, &mut done, &mut unsynced)
        .await
        .map_err(Ended::Failed)?;
    sentinel_parts.sort_by_key(|(offset, _)| *offset);
    let sentinel_bytes: Vec<u8> = sentinel_parts.into_iter().flat_map(|(_, b)| b).collect();
    let root = request.root.clone();
    tokio::task::spawn_blocking(move || sentinel::commit(&root, &sentinel_bytes))
        .await
        .map_err(|_| Ended::Failed(DownloadError::Panicked("committing version.ini")))?
        .map_err(|err| Ended::Failed(DownloadError::Disk(err)))?;
    Journal::remove(&request.state_dir, &request.id);
    let stats = DownloadStats {
        bytes: plan.total_bytes(),
        chunks_fetched: fetched,
        chunks_resumed: resumed,
        seconds: started.elapsed().as_secs_f64(),
        per_peer: plan
            .peers()
            .iter()
            .map(|p| (p.peer_id.clone(), p.bytes))
            .collect(),
    };
    tracing::info!(
        bytes = stats.bytes,
        chunks_fetched = stats.chunks_fetched,
        chunks_resumed = stats.chunks_resumed,
        seconds = format!("{:.2}", stats.seconds),
        per_peer = ?stats.per_peer,
        "download finished"
    );
    Ok(stats)
}

/// The task that fetches, verifies and writes one chunk from one peer.
fn fetch_task(
    request: &DownloadRequest,
    client: &Arc<PeerClient>,
    plan: &Plan,
    chunk_id: ChunkId,
    peer: PeerIdx,
) -> impl Future<Output = (ChunkId, PeerIdx, Instant, Fetched)> + Send + 'static {
    let chunk = plan.chunk(chunk_id).clone();
    let file = &request.files[chunk.file];
    let relative_path = file.relative_path.clone();
    let is_sentinel = relative_path == SENTINEL;
    let path = request.root.join(&relative_path);
    let (client, id, addr) = (
        Arc::clone(client),
        request.id.clone(),
        request.sources[peer].addr,
    );
    let timeout = plan.timeout_for(peer, chunk.length);
    async move {
        let started = Instant::now();
        let result = async {
            let data = match client
                .fetch_chunk(
                    addr,
                    &id,
                    &relative_path,
                    chunk.offset,
                    chunk.length,
                    timeout,
                )
                .await
            {
                Ok(data) => data,
                Err(err) => return Fetched::Failed(FetchFailure::Transport(err.to_string())),
            };
            // Verify and write on one blocking thread: one hand-off per
            // chunk, which is what a game of many tiny files pays per file.
            let offset = chunk.offset;
            let stored = tokio::task::spawn_blocking(move || {
                if blake3::hash(&data).to_hex().as_str() != chunk.hash {
                    Fetched::Failed(FetchFailure::BadData)
                } else if is_sentinel {
                    Fetched::Sentinel(data)
                } else {
                    match sentinel::write_chunk(&path, offset, &data) {
                        Ok(()) => Fetched::Written,
                        Err(err) => Fetched::Local(DownloadError::Disk(err)),
                    }
                }
            })
            .await;
            stored.unwrap_or(Fetched::Local(DownloadError::Panicked(
                "verifying and writing a chunk",
            )))
        }
        .await;
        (chunk_id, peer, started, result)
    }
}

/// What the journal saves need besides the request.
struct JournalState {
    /// Names the manifest in the journal.
    manifest: ManifestId,
    /// Syncs the game root's files.
    durability: Arc<Durability>,
}

/// Chunks written since the last journal save: not durable yet.
#[derive(Default)]
struct Unsynced {
    /// The files they were written to.
    files: BTreeSet<usize>,
    chunks: Vec<ChunkId>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Syncs the files written since the last save, then records their chunks
/// in the resume journal: the journal never lists a chunk that a crash
/// could lose. A sync failure
/// is an error (the bytes may not be on disk); a journal that cannot be
/// written only costs a resume, so it is logged.
async fn save_journal(
    request: &DownloadRequest,
    state: &JournalState,
    done: &mut ChunkSet,
    unsynced: &mut Unsynced,
) -> Result<(), DownloadError> {
    if unsynced.is_empty() {
        return Ok(());
    }
    let paths: Vec<PathBuf> = unsynced
        .files
        .iter()
        .map(|&file| request.root.join(&request.files[file].relative_path))
        .collect();
    let durability = Arc::clone(&state.durability);
    tokio::task::spawn_blocking(move || durability.sync(&paths))
        .await
        .map_err(|_| DownloadError::Panicked("syncing downloaded files"))?
        .map_err(DownloadError::Disk)?;
    // Durable now: into the journal.
    for chunk in unsynced.chunks.drain(..) {
        done.insert(chunk);
    }
    unsynced.files.clear();
    let journal = Journal {
        id: request.id.clone(),
        version: request.version.clone(),
        manifest: state.manifest.to_hex(),
        done: done.clone(),
    };
    let state_dir = request.state_dir.clone();
    let saved = tokio::task::spawn_blocking(move || journal.save(&state_dir))
        .await
        .map_err(|_| DownloadError::Panicked("saving the download journal"))?;
    if let Err(err) = saved {
        tracing::warn!(game = %request.id, cause = %err, "cannot save the download journal");
    }
    Ok(())
}
