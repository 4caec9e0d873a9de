//! The QUIC server: accepts peers' connections, one task per stream, and
//! answers each request from the served library and the swarm (the
//! chunks this daemon's downloads verified). A refused request gets an
//! error answer; the connection and the server live on.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use lanspread_proto::model::GameId;
use lanspread_proto::wire::{
    Availability, ChunkRange, DataHeader, MAX_ALTERNATIVES, MAX_REQUEST_BYTES,
    MAX_SIGNATURE_CHUNKS, Request, Response, WIRE_VERSION, WireError, WireErrorCode,
};
use s2n_quic::Server;
use s2n_quic::provider::limits::Limits;
use s2n_quic::stream::BidirectionalStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::framing::{encode_header, read_to_end_bounded};
use super::rate::RateLimiter;
use super::tls::TlsIdentity;
use super::turns::{OnItsWay, SeedGame, Turns, UPLOAD_BUDGET_BYTES};
use super::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_STREAMS_PER_CONNECTION, REQUEST_READ_TIMEOUT,
    STREAM_WRITE_TIMEOUT, TransportError,
};
use crate::download::journal::ChunkSet;
use crate::event_sender::EventSender;
use crate::library::{FileStamp, open_beneath};
use crate::manifest_id::{ChunkTable, ManifestId};
use crate::prepare::{Lookup, Manifests, PreparedManifest};
use crate::serve::{ServedLibrary, refusal};
use crate::swarm::{Partial, Swarm};

/// Size of each read from disk while sending file data.
const SEND_BLOCK_BYTES: u64 = 1024 * 1024;

/// Send blocks kept for reuse: what the upload budget lets be in flight,
/// plus a read-ahead block per stream of a few.
const SPARE_BLOCKS: usize = (UPLOAD_BUDGET_BYTES / SEND_BLOCK_BYTES) as usize + 8;

/// Buffers of [`SEND_BLOCK_BYTES`] that sent blocks return to once QUIC
/// has no more use for them (acknowledged), so a seeder reuses the same
/// few megabytes instead of allocating a fresh megabyte per block: with
/// fresh ones, glibc's allocator kept freed blocks in per-thread arenas
/// and a seeder's resident memory grew by about 35 MiB over one upload
/// (measured in the lab; `docs/lab.md`, seeder RSS).
static SPARE: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// One block of file data on its way to a peer: `len` bytes of a reused
/// buffer, handed to QUIC as [`Bytes`] (`Bytes::from_owner`).
struct Block {
    buffer: Vec<u8>,
    len: usize,
}

impl Block {
    /// A block of `len` bytes (at most [`SEND_BLOCK_BYTES`]), on a spare
    /// buffer if there is one.
    fn take(len: usize) -> Self {
        let spare = SPARE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let buffer = spare.unwrap_or_else(|| vec![0u8; SEND_BLOCK_BYTES as usize]);
        Self { buffer, len }
    }
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl AsMut<[u8]> for Block {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[..self.len]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BLOCKS {
            spare.push(std::mem::take(&mut self.buffer));
        }
    }
}

/// What the server needs to answer requests.
#[derive(Debug)]
pub struct ServeContext {
    pub peer_id: String,
    /// The library as the core last published it.
    pub library: watch::Receiver<Arc<ServedLibrary>>,
    /// The file lists the preparer computed, for `GetGame`.
    pub manifests: Arc<Manifests>,
    /// The daemon's upload limit, shared by every stream.
    pub upload_limit: Arc<RateLimiter>,
    /// What this daemon's downloads hold.
    pub swarm: Arc<Swarm>,
    /// Where the server reports peers that follow a download here, and
    /// what it uploads.
    pub events: EventSender<ServeEvent>,
    /// Chunk bytes sent per peer address.
    pub uploads: UploadMeter,
    /// Chunk bytes being sent at once, and who sends next.
    pub turns: Turns,
    /// What pinging peers said of their own library.
    pub heard: Arc<crate::ping::Heard>,
}

impl ServeContext {
    /// What peers are told this daemon's revision is: it changes whenever
    /// anything `ListGames` answers changes (the library, the downloads
    /// served, a manifest made ready).
    pub fn revision(&self) -> u64 {
        self.revision_feed().current()
    }

    /// A feed of [`Self::revision`] that can be waited on.
    pub fn revision_feed(&self) -> RevisionFeed {
        RevisionFeed {
            library: self.library.clone(),
            swarm: self.swarm.watch_generation(),
            manifests: self.manifests.watch_generation(),
        }
    }
}

/// This daemon's revision as peers see it ([`ServeContext::revision`]),
/// woken when it changes.
#[derive(Clone, Debug)]
pub struct RevisionFeed {
    library: watch::Receiver<Arc<ServedLibrary>>,
    swarm: watch::Receiver<u64>,
    manifests: watch::Receiver<u64>,
}

impl RevisionFeed {
    /// The revision now (marks it seen).
    pub fn current(&mut self) -> u64 {
        self.library.borrow_and_update().revision
            + *self.swarm.borrow_and_update()
            + *self.manifests.borrow_and_update()
    }

    /// Waits until the revision changed since [`Self::current`] was last
    /// read; never returns once the daemon is shutting down.
    pub async fn changed(&mut self) {
        let changed = tokio::select! {
            changed = self.library.changed() => changed.is_ok(),
            changed = self.swarm.changed() => changed.is_ok(),
            changed = self.manifests.changed() => changed.is_ok(),
        };
        if !changed {
            std::future::pending::<()>().await;
        }
    }
}

/// How often uploads are reported while chunks are being sent.
const UPLOAD_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Chunk bytes sent to each peer address since the server started. Sending
/// wakes the reporter; an idle server has no timer running.
#[derive(Debug, Default)]
pub struct UploadMeter {
    sent: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
    sending: tokio::sync::Notify,
}

impl UploadMeter {
    fn add(&self, to: std::net::IpAddr, bytes: usize) {
        *self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(to)
            .or_default() += bytes as u64;
        self.sending.notify_one();
    }

    fn totals(&self) -> Vec<(std::net::IpAddr, u64)> {
        let mut totals: Vec<_> = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(ip, bytes)| (*ip, *bytes))
            .collect();
        totals.sort();
        totals
    }
}

/// What the server tells the core.
#[derive(Debug)]
pub enum ServeEvent {
    /// Chunk bytes sent per peer address so far: about once a second while
    /// chunks are sent, and once more when sending stopped.
    Uploads {
        totals: Vec<(std::net::IpAddr, u64)>,
    },
    /// Peer `peer_id` subscribed to manifest `manifest` of game `id`,
    /// which this daemon is downloading: that peer is downloading it too,
    /// and is a source for our download from now on.
    Follower {
        id: GameId,
        manifest: String,
        peer_id: String,
    },
}

/// How long a subscription waits after a change before it sends, so chunks
/// verified close together go out in one line.
const AVAILABILITY_BATCH: std::time::Duration = std::time::Duration::from_millis(5);

/// A bound QUIC endpoint.
#[derive(Debug)]
pub struct QuicServer {
    server: Server,
    local_addr: SocketAddr,
}

impl QuicServer {
    /// Binds `listen` (port 0: the OS chooses).
    pub fn bind(listen: SocketAddr, identity: &TlsIdentity) -> Result<Self, TransportError> {
        let start = |reason: String| TransportError::Start {
            addr: listen.to_string(),
            reason,
        };
        let server = super::server_endpoint(listen, identity, lanspread_proto::wire::ALPN)?;
        let local_addr = server.local_addr().map_err(|err| start(err.to_string()))?;
        Ok(Self { server, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(mut self, context: Arc<ServeContext>, shutdown: CancellationToken) {
        tracing::info!(listen = %self.local_addr, "quic listening");
        tokio::spawn(report_uploads(Arc::clone(&context), shutdown.clone()));
        loop {
            let connection = tokio::select! {
                () = shutdown.cancelled() => break,
                connection = self.server.accept() => match connection {
                    Some(connection) => connection,
                    None => break,
                },
            };
            let remote = connection
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let span = tracing::debug_span!("peer_conn", peer = %remote);
            tokio::spawn(
                serve_connection(connection, Arc::clone(&context), shutdown.clone())
                    .instrument(span),
            );
        }
        tracing::info!("quic server stopped");
    }
}

/// Limits shared by both ends: short handshakes, bounded streams.
pub(super) fn limits() -> Result<Limits, String> {
    Limits::new()
        .with_max_handshake_duration(HANDSHAKE_TIMEOUT)
        .and_then(|l| l.with_max_idle_timeout(IDLE_TIMEOUT))
        .and_then(|l| l.with_max_open_remote_bidirectional_streams(MAX_STREAMS_PER_CONNECTION))
        .map_err(|err| err.to_string())
}

/// Reports the upload totals while chunks are being sent: woken by the
/// first bytes sent, then once a second until a second passes without any.
async fn report_uploads(context: Arc<ServeContext>, shutdown: CancellationToken) {
    let mut last = context.uploads.totals();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = context.uploads.sending.notified() => {}
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(UPLOAD_REPORT_INTERVAL) => {}
            }
            let totals = context.uploads.totals();
            let moved = totals != last;
            last = totals.clone();
            if context
                .events
                .send(ServeEvent::Uploads { totals })
                .await
                .is_err()
            {
                return;
            }
            if !moved {
                break; // the report that says it stopped
            }
        }
    }
}

async fn serve_connection(
    mut connection: s2n_quic::Connection,
    context: Arc<ServeContext>,
    shutdown: CancellationToken,
) {
    tracing::debug!("peer connected");
    let remote = connection.remote_addr().ok();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => {
                connection.close(0u32.into());
                break;
            }
            stream = connection.accept_bidirectional_stream() => stream,
        };
        match stream {
            Ok(Some(stream)) => {
                tokio::spawn(
                    serve_stream(stream, Arc::clone(&context), shutdown.clone(), remote)
                        .in_current_span(),
                );
            }
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(cause = %err, "peer connection ended");
                break;
            }
        }
    }
}

/// Reads one request and answers it.
async fn serve_stream(
    mut stream: BidirectionalStream,
    context: Arc<ServeContext>,
    shutdown: CancellationToken,
    remote: Option<SocketAddr>,
) {
    let request = match tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_to_end_bounded(&mut stream, MAX_REQUEST_BYTES),
    )
    .await
    {
        Err(_) => {
            tracing::debug!("peer sent no complete request in time");
            let _ = stream.reset(0u32.into());
            return;
        }
        Ok(Err(err)) => {
            let answer = refusal(WireErrorCode::BadRequest, err.to_string());
            let _ = send_json(&mut stream, &Response::Error(answer)).await;
            return;
        }
        Ok(Ok(bytes)) => match serde_json::from_slice::<Request>(&bytes) {
            Ok(request) => request,
            Err(err) => {
                let answer = refusal(WireErrorCode::BadRequest, format!("invalid request: {err}"));
                let _ = send_json(&mut stream, &Response::Error(answer)).await;
                return;
            }
        },
    };
    let library = Arc::clone(&context.library.borrow());
    let result = match request {
        Request::Ping {
            peer_id,
            library_revision,
        } => {
            // A ping also says what the asker's library is now: if it
            // changed, our pinger asks for it at once.
            context.heard.heard(&peer_id, library_revision);
            let pong = Response::Pong {
                peer_id: context.peer_id.clone(),
                wire_version: WIRE_VERSION,
                library_revision: context.revision(),
            };
            send_json(&mut stream, &pong).await
        }
        Request::ListGames => {
            let games = Response::Games {
                games: announced(&library, &context),
            };
            send_json(&mut stream, &games).await
        }
        Request::GetGame { id } => {
            let answer = manifest(&library, &context, id);
            send_json(&mut stream, &answer).await
        }
        Request::GetChunk {
            id,
            manifest,
            chunk,
            alternatives,
            range,
        } => {
            let request = ChunkRequest {
                id: &id,
                manifest: &manifest,
                chunk,
                alternatives: &alternatives,
                range,
                remote,
            };
            send_chunk(&mut stream, &library, &context, request).await
        }
        Request::GetSignatures {
            id,
            manifest,
            first,
            count,
        } => {
            let answer = signatures(&library, &context, &id, &manifest, first, count).await;
            send_json(&mut stream, &answer).await
        }
        Request::Subscribe {
            id,
            manifest,
            have,
            peer_id,
        } => {
            if context
                .swarm
                .get(&id)
                .is_some_and(|p| p.manifest.to_hex() == manifest)
            {
                let follower = ServeEvent::Follower {
                    id: id.clone(),
                    manifest: manifest.clone(),
                    peer_id,
                };
                let _ = context.events.send(follower).await;
            }
            subscribe(
                &mut stream,
                &library,
                &context,
                &id,
                &manifest,
                &have,
                &shutdown,
            )
            .await
        }
    };
    if let Err(err) = result {
        tracing::debug!(cause = %err, "answering peer failed");
        let _ = stream.reset(0u32.into());
    } else {
        let _ = stream.finish();
    }
}

/// The prepared manifest of a complete game, if it is ready.
fn prepared(
    library: &ServedLibrary,
    context: &ServeContext,
    id: &GameId,
) -> Option<Arc<PreparedManifest>> {
    let (_, game) = library.game(id).ok()?;
    match context.manifests.lookup(id, game) {
        Lookup::Ready(prepared) => Some(prepared),
        _ => None,
    }
}

/// A download of `id` to announce: one that still serves, unless it
/// finished and the complete game is ready to serve (a running download,
/// an update, wins over the old version it replaces).
fn partial(library: &ServedLibrary, context: &ServeContext, id: &GameId) -> Option<Arc<Partial>> {
    let partial = context.swarm.get(id)?;
    let shown = partial.held().is_ok()
        && (!partial.is_finished() || prepared(library, context, id).is_none());
    shown.then_some(partial)
}

/// The `ListGames` answer: complete games (with their manifest's digest
/// once prepared), and the games being downloaded here.
fn announced(
    library: &ServedLibrary,
    context: &ServeContext,
) -> Vec<lanspread_proto::wire::AnnouncedGame> {
    let mut games: Vec<_> = library
        .announced()
        .into_iter()
        .filter(|game| partial(library, context, &game.id).is_none())
        .map(|mut game| {
            game.manifest = prepared(library, context, &game.id).map(|p| p.manifest.to_hex());
            game
        })
        .collect();
    games.extend(
        context
            .swarm
            .announced()
            .into_iter()
            .filter(|game| partial(library, context, &game.id).is_some()),
    );
    games
}

/// The `GetGame` answer: the prepared manifest, or the manifest of a
/// download of the game, or at once "preparing" with the progress. Never
/// hashes (the preparer does, in the background).
fn manifest(library: &ServedLibrary, context: &ServeContext, id: GameId) -> Response {
    if let Some(partial) = partial(library, context, &id) {
        return Response::Game {
            id,
            version: partial.version.clone(),
            files: partial.files.as_ref().clone(),
        };
    }
    let (_, game) = match library.game(&id) {
        Ok(found) => found,
        Err(err) => return Response::Error(err),
    };
    let version = game.version.clone();
    match context.manifests.lookup(&id, game) {
        Lookup::Ready(prepared) => Response::Game {
            id,
            version,
            files: prepared.files.as_ref().clone(),
        },
        Lookup::Preparing(progress) => Response::Preparing {
            id,
            version,
            bytes_done: progress.bytes_done,
            bytes_total: progress.bytes_total,
        },
        Lookup::Failed(reason) => {
            tracing::warn!(game = %id, cause = %reason, "file list unavailable");
            Response::Error(refusal(
                WireErrorCode::Internal,
                format!("cannot read game {id}"),
            ))
        }
    }
}

/// The refusal for a manifest this daemon does not hold (any more),
/// naming the version it holds now.
fn unknown_manifest(library: &ServedLibrary, context: &ServeContext, id: &GameId) -> WireError {
    // The version.ini on disk first: a game rewritten under us says its new
    // version before the next scan does.
    let now = library
        .game(id)
        .ok()
        .map(|(root, g)| {
            crate::library::version_ini::read_version_ini(&root.join(crate::library::SENTINEL))
                .unwrap_or_else(|_| g.version.clone())
        })
        .or_else(|| context.swarm.get(id).map(|p| p.version.clone()));
    let message = match now {
        Some(version) => format!("{id} changed here: this peer now holds version {version}"),
        None => format!("{id} is not held here any more"),
    };
    refusal(WireErrorCode::UnknownManifest, message)
}

/// Where a chunk to send comes from.
struct ChunkSource {
    file: std::fs::File,
    /// The chunk's number, offset and length.
    chunk: u32,
    offset: u64,
    length: u64,
    /// Whether the bytes may still be sent (checked before each block).
    still_valid: Box<dyn Fn(&std::fs::File) -> bool + Send + Sync>,
}

impl ChunkSource {
    /// Only `range` of the chunk, if given; a range outside it is refused.
    fn narrowed(mut self, range: Option<ChunkRange>) -> Result<Self, WireError> {
        let Some(range) = range else {
            return Ok(self);
        };
        if range.length == 0 || range.offset.saturating_add(range.length) > self.length {
            return Err(refusal(
                WireErrorCode::OutOfRange,
                format!(
                    "bytes {}+{} are outside chunk {} ({} bytes)",
                    range.offset, range.length, self.chunk, self.length
                ),
            ));
        }
        self.offset += range.offset;
        self.length = range.length;
        Ok(self)
    }
}

/// Answers `GetSignatures`: reads each asked chunk (from the complete game,
/// or from a download that verified it) and computes its block signatures
/// on a blocking thread.
async fn signatures(
    library: &Arc<ServedLibrary>,
    context: &Arc<ServeContext>,
    id: &GameId,
    manifest: &str,
    first: u32,
    count: u32,
) -> Response {
    if count == 0 || count > MAX_SIGNATURE_CHUNKS {
        return Response::Error(refusal(
            WireErrorCode::BadRequest,
            format!("ask for 1 to {MAX_SIGNATURE_CHUNKS} chunks' signatures, not {count}"),
        ));
    }
    let holder = match holder(library, context, id, manifest) {
        Ok(holder) => holder,
        Err(refused) => return Response::Error(refused),
    };
    let (library, context, id) = (Arc::clone(library), Arc::clone(context), id.clone());
    let computed = tokio::task::spawn_blocking(move || {
        let mut chunks = Vec::with_capacity(count as usize);
        let mut buffer = Vec::new();
        for chunk in first..first.saturating_add(count) {
            let holder = holder.clone();
            let source = open_chunk(&library, &context, &id, holder, &[chunk])?;
            buffer.resize(source.length as usize, 0);
            let read =
                std::os::unix::fs::FileExt::read_exact_at(&source.file, &mut buffer, source.offset);
            if read.is_err() || !(source.still_valid)(&source.file) {
                return Err(unknown_manifest(&library, &context, &id));
            }
            chunks.push(crate::signature::encode(&crate::signature::of_chunk(
                &buffer,
            )));
        }
        Ok(chunks)
    })
    .await;
    match computed {
        Ok(Ok(chunks)) => Response::Signatures { first, chunks },
        Ok(Err(refused)) => Response::Error(refused),
        Err(_) => Response::Error(refusal(
            WireErrorCode::Internal,
            "computing signatures failed".into(),
        )),
    }
}

/// A `GetChunk` and who asked.
struct ChunkRequest<'a> {
    id: &'a GameId,
    manifest: &'a str,
    chunk: u32,
    alternatives: &'a [u32],
    /// Only these bytes of `chunk` (then no alternatives).
    range: Option<ChunkRange>,
    remote: Option<SocketAddr>,
}

/// Answers `GetChunk`: from the complete game if it holds this manifest
/// (of the chunk and its alternatives, the one sent longest ago), else
/// from the download of it if that verified the chunk (or busy).
async fn send_chunk(
    stream: &mut BidirectionalStream,
    library: &Arc<ServedLibrary>,
    context: &Arc<ServeContext>,
    request: ChunkRequest<'_>,
) -> Result<(), std::io::Error> {
    let ChunkRequest {
        id,
        manifest,
        chunk,
        alternatives,
        range,
        remote,
    } = request;
    let opened = match holder(library, context, id, manifest) {
        Err(refused) => Err(refused),
        Ok(holder) => {
            let length = range.map_or_else(
                || {
                    holder
                        .table()
                        .place(chunk)
                        .map_or(lanspread_proto::wire::CHUNK_SIZE, |place| place.length)
                },
                |range| range.length,
            );
            let mut candidates = vec![chunk];
            if range.is_none() {
                candidates.extend(alternatives.iter().take(MAX_ALTERNATIVES));
            }
            // A complete game waits for a turn and chooses among the
            // alternatives when it comes (so the choice sees every chunk
            // sent before it); a download in progress sends now or is busy.
            let turn = match &holder {
                Holder::Complete(prepared) => {
                    // A part of a chunk does not count as the chunk sent.
                    let whole = range.is_none();
                    context
                        .turns
                        .seed(
                            remote,
                            length,
                            id,
                            &SeedGame {
                                manifest: prepared.manifest,
                                chunks: prepared.table.len(),
                                not_passed_on: prepared.table.sentinel_chunks(),
                            },
                            candidates,
                            whole,
                        )
                        .await
                        .map(|(turn, chosen)| (turn, vec![chosen]))
                        .map_err(|OnItsWay| {
                            format!("every chunk of {id} asked is on its way to another peer")
                        })
                }
                Holder::Partial(_) => context
                    .turns
                    .try_swarm(remote, length)
                    .map(|turn| (turn, candidates))
                    .ok_or_else(|| format!("sending as much of {id} as it serves at once")),
            };
            match turn {
                Err(why) => Err(refusal(WireErrorCode::Busy, why)),
                Ok((turn, candidates)) => {
                    let (library, context, id) =
                        (Arc::clone(library), Arc::clone(context), id.clone());
                    tokio::task::spawn_blocking(move || {
                        open_chunk(&library, &context, &id, holder, &candidates)
                            .and_then(|source| source.narrowed(range))
                    })
                    .await
                    .map_err(std::io::Error::other)?
                    .map(|source| (source, turn))
                }
            }
        }
    };
    let (source, _turn) = match opened {
        Ok(opened) => opened,
        Err(refused) => {
            tracing::debug!(game = %id, chunk, reason = %refused.message, "chunk request refused");
            return send_bytes(stream, encode_header(&DataHeader::Error(refused))).await;
        }
    };
    send_bytes(
        stream,
        encode_header(&DataHeader::Data {
            chunk: source.chunk,
            length: source.length,
        }),
    )
    .await?;
    let meter = remote.map(|addr| (&context.uploads, addr.ip()));
    tracing::debug!(asked = chunk, sent = source.chunk, to = ?remote, "chunk send starts");
    send_data(stream, source, &context.upload_limit, meter).await?;
    // Our turn ends when the peer has the bytes, not when QUIC buffered
    // them: otherwise every queued chunk would be buffered at once and
    // share the link until all arrive together.
    match tokio::time::timeout(STREAM_WRITE_TIMEOUT, stream.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(std::io::Error::other(err)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped acknowledging",
        )),
    }
}

/// Who holds a manifest here: the complete game, or a download of it.
#[derive(Clone)]
enum Holder {
    Complete(Arc<PreparedManifest>),
    Partial(Arc<Partial>),
}

impl Holder {
    fn table(&self) -> &ChunkTable {
        match self {
            Self::Complete(prepared) => &prepared.table,
            Self::Partial(partial) => &partial.table,
        }
    }
}

/// The holder of manifest `manifest` (hex) of game `id`, or the refusal:
/// `bad_request` for a digest that is not one, `unknown_manifest` for one
/// not held here.
fn holder(
    library: &ServedLibrary,
    context: &ServeContext,
    id: &GameId,
    manifest: &str,
) -> Result<Holder, WireError> {
    let manifest = ManifestId::from_hex(manifest)
        .ok_or_else(|| refusal(WireErrorCode::BadRequest, "manifest is not a digest".into()))?;
    if let Some(prepared) = prepared(library, context, id).filter(|p| p.manifest == manifest) {
        return Ok(Holder::Complete(prepared));
    }
    match context.swarm.get(id).filter(|p| p.manifest == manifest) {
        Some(partial) => Ok(Holder::Partial(partial)),
        None => Err(unknown_manifest(library, context, id)),
    }
}

/// Finds and opens the chunk to send: from a complete game the first of
/// `candidates` (chosen when the turn came), from a download the first it
/// verified. Blocking.
fn open_chunk(
    library: &ServedLibrary,
    context: &ServeContext,
    id: &GameId,
    holder: Holder,
    candidates: &[u32],
) -> Result<ChunkSource, WireError> {
    let partial = match holder {
        Holder::Partial(partial) => partial,
        Holder::Complete(prepared) => {
            let chunk = candidates[0];
            let place = locate(&prepared.table, chunk)?;
            let path = &prepared.files[place.file].relative_path;
            let file = library.open_file(id, path)?;
            let stamp = prepared.stamps[place.file];
            let path = path.clone();
            let unchanged = move |file: &std::fs::File| stamp.is_some() && stamp_of(file) == stamp;
            if !unchanged(&file) {
                tracing::info!(game = %id, path = %path, "file changed since its file list was made; refusing its chunks");
                return Err(unknown_manifest(library, context, id));
            }
            return Ok(ChunkSource {
                file,
                chunk,
                offset: place.offset,
                length: place.length,
                still_valid: Box::new(unchanged),
            });
        }
    };
    if partial.held().is_err() {
        return Err(unknown_manifest(library, context, id));
    }
    let Some(&chunk) = candidates.iter().find(|&&c| partial.holds(c as usize)) else {
        return Err(refusal(
            WireErrorCode::NotHeld,
            format!("chunk {} of {id} is not verified here yet", candidates[0]),
        ));
    };
    let place = locate(&partial.table, chunk)?;
    let path = &partial.files[place.file].relative_path;
    let file = open_beneath(&partial.root, path).map_err(|err| {
        tracing::warn!(game = %id, path = %path, cause = %crate::error_chain::err_chain(&err), "cannot read a downloaded chunk");
        refusal(WireErrorCode::Internal, format!("cannot read {path}"))
    })?;
    Ok(ChunkSource {
        file,
        chunk,
        offset: place.offset,
        length: place.length,
        still_valid: Box::new(move |_| partial.holds(chunk as usize)),
    })
}

fn locate(table: &ChunkTable, chunk: u32) -> Result<crate::manifest_id::ChunkPlace, WireError> {
    table.place(chunk).ok_or_else(|| {
        refusal(
            WireErrorCode::OutOfRange,
            format!(
                "chunk {chunk} is past the {} chunks of the manifest",
                table.len()
            ),
        )
    })
}

/// A file's size and mtime as the preparer recorded them.
fn stamp_of(file: &std::fs::File) -> Option<FileStamp> {
    let meta = file.metadata().ok()?;
    Some((meta.len(), crate::library::mtime_ns(&meta)))
}

/// Sends a chunk's bytes after its header. Disk reads run on blocking
/// threads, one block ahead of the network; each block is checked to be
/// still valid after it was read (a file written to since its hashes were
/// taken, or a download that ended, stops the stream: the receiver sees it
/// cut short, never bytes it could take for the manifest's), then waits
/// for the upload limit before it goes out.
/// Each block sent is counted for its peer in `meter`.
async fn send_data(
    stream: &mut BidirectionalStream,
    source: ChunkSource,
    upload_limit: &RateLimiter,
    meter: Option<(&UploadMeter, std::net::IpAddr)>,
) -> Result<(), std::io::Error> {
    let source = Arc::new(source);
    let end = source.offset + source.length;
    let read_block = |offset: u64| {
        let source = Arc::clone(&source);
        let len = (end - offset).min(SEND_BLOCK_BYTES) as usize;
        tokio::task::spawn_blocking(move || {
            let mut block = Block::take(len);
            // A file that shrank under us, or a failing disk, fails here:
            // the receiver then sees a truncated stream, never wrong bytes.
            crate::faults::read_error()?;
            std::os::unix::fs::FileExt::read_exact_at(&source.file, block.as_mut(), offset)?;
            if !(source.still_valid)(&source.file) {
                return Err(std::io::Error::other(
                    "the chunk's file changed or its download ended while it was sent",
                ));
            }
            Ok::<_, std::io::Error>(block)
        })
    };
    #[cfg(feature = "test-faults")]
    let mut corrupt = crate::faults::corrupt_this_chunk();
    let mut offset = source.offset;
    let mut next = (source.length > 0).then(|| read_block(offset));
    while let Some(pending) = next.take() {
        #[allow(unused_mut)]
        let mut block = pending.await.map_err(std::io::Error::other)??;
        offset += block.len as u64;
        if offset < end {
            next = Some(read_block(offset));
        }
        #[cfg(feature = "test-faults")]
        if std::mem::take(&mut corrupt) {
            block.as_mut()[0] ^= 0xff;
        }
        let sent = block.as_ref().len();
        upload_limit.acquire(sent).await;
        send_bytes(stream, Bytes::from_owner(block)).await?;
        if let Some((meter, to)) = meter {
            meter.add(to, sent);
        }
    }
    Ok(())
}

/// Answers `Subscribe`: the chunks held (less the asker's), then, for a
/// download, each chunk as it is verified, batched over
/// [`AVAILABILITY_BATCH`], until the download stops serving (`Gone`) or,
/// finished, is handed over to the complete game (a last `Have` that is
/// `complete`).
async fn subscribe(
    stream: &mut BidirectionalStream,
    library: &ServedLibrary,
    context: &ServeContext,
    id: &GameId,
    manifest: &str,
    have: &str,
    shutdown: &CancellationToken,
) -> Result<(), std::io::Error> {
    let refuse = |err: WireError| encode_header(&Availability::Error(err));
    let holder = match holder(library, context, id, manifest) {
        Ok(holder) => holder,
        Err(err) => return send_bytes(stream, refuse(err)).await,
    };
    let parse_have = |table: &ChunkTable| {
        if have.is_empty() {
            return Ok(ChunkSet::new(table.len()));
        }
        ChunkSet::from_hex(table.len(), have).ok_or_else(|| {
            refusal(
                WireErrorCode::BadRequest,
                format!("'have' is not a set over {} chunks", table.len()),
            )
        })
    };
    let partial = match holder {
        Holder::Partial(partial) => partial,
        Holder::Complete(prepared) => {
            let line = match parse_have(&prepared.table) {
                Ok(theirs) => Availability::Have {
                    chunks: ChunkSet::full(prepared.table.len())
                        .without(&theirs)
                        .to_hex(),
                    complete: true,
                },
                Err(err) => Availability::Error(err),
            };
            return send_bytes(stream, encode_header(&line)).await;
        }
    };
    let mut told = match parse_have(&partial.table) {
        Ok(theirs) => theirs,
        Err(err) => return send_bytes(stream, refuse(err)).await,
    };
    let mut changes = partial.watch();
    let mut first = true;
    loop {
        changes.mark_unchanged();
        let held = match partial.held() {
            Ok(held) => held,
            Err(reason) => {
                return send_bytes(stream, encode_header(&Availability::Gone { reason })).await;
            }
        };
        if partial.is_handed_over() {
            // Finished and served complete now: said as a complete holder
            // says it, the last line (the asker keeps its fetches here).
            let line = Availability::Have {
                chunks: ChunkSet::full(partial.table.len()).without(&told).to_hex(),
                complete: true,
            };
            return send_bytes(stream, encode_header(&line)).await;
        }
        let news = held.without(&told);
        if first {
            let line = Availability::Have {
                chunks: news.to_hex(),
                complete: false,
            };
            send_bytes(stream, encode_header(&line)).await?;
            first = false;
        } else if news.count() > 0 {
            let line = Availability::More {
                chunks: news.iter().map(|c| c as u32).collect(),
            };
            send_bytes(stream, encode_header(&line)).await?;
        }
        told.add_all(&news);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
        }
        tokio::time::sleep(AVAILABILITY_BATCH).await;
    }
}

async fn send_json(
    stream: &mut BidirectionalStream,
    value: &impl serde::Serialize,
) -> Result<(), std::io::Error> {
    let bytes = serde_json::to_vec(value).expect("responses serialize");
    send_bytes(stream, bytes).await
}

async fn send_bytes(
    stream: &mut BidirectionalStream,
    bytes: impl Into<Bytes>,
) -> Result<(), std::io::Error> {
    match tokio::time::timeout(STREAM_WRITE_TIMEOUT, stream.send(bytes.into())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(std::io::Error::other(err)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}
