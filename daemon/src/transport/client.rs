//! The QUIC client: asks other peers over cached connections, one stream
//! per request. The client runs on the runtime it was created in (the
//! daemon's fetch runtime, `transport::runtimes`): its endpoint's tasks
//! and the reading of every chunk's data run there, wherever the caller
//! awaits. Requests use one connection per peer address; chunk
//! fetches spread over [`BULK_LANES`] connections to it, because streams of
//! one s2n-quic connection contend for its lock (in `just bench` four lanes
//! cut the downloader's CPU per GiB from 4.6 to 3.9 s).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lanspread_proto::model::GameId;
use lanspread_proto::wire::{
    Availability, ChunkRange, DataHeader, MAX_AVAILABILITY_LINE, MAX_RESPONSE_BYTES, Request,
    Response,
};
use s2n_quic::Client;
use s2n_quic::client::Connect;
use s2n_quic::connection::{Handle, StreamAcceptor};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::Mutex;
use tokio_util::task::AbortOnDropHandle;

use super::framing::{
    ChunkData, ChunkSink, read_data_into, read_json_line, read_piece_header, read_to_end_bounded,
};
use super::rate::RateLimiter;
use super::tls::TlsIdentity;
use super::{REQUEST_TIMEOUT, TransportError};

/// Connections per peer that chunk fetches rotate over (lane 0 also
/// carries requests).
pub const BULK_LANES: usize = 4;

/// A live connection to one peer.
#[derive(Debug)]
struct Cached {
    handle: Handle,
    /// Kept so the connection stays open; peers never open streams to us
    /// on it.
    _acceptor: StreamAcceptor,
}

/// The client side of the transport.
#[derive(Debug)]
pub struct PeerClient {
    client: Client,
    /// Connections by peer address and lane. The lock is held only to look
    /// up or insert, never across a connect or a request.
    connections: Mutex<HashMap<(SocketAddr, usize), Cached>>,
    /// Picks the lane of the next chunk fetch.
    next_lane: AtomicUsize,
    /// The daemon's download limit, shared by every chunk read.
    download_limit: Arc<RateLimiter>,
    /// Our peer id, sent with `Subscribe` (empty until set).
    peer_id: String,
    /// The runtime the endpoint was started on, where chunk data is read
    /// (and stored, by the sink) next to the endpoint's own task.
    runtime: tokio::runtime::Handle,
}

impl PeerClient {
    /// A client endpoint trusting only `identity`'s certificate.
    pub fn new(identity: &TlsIdentity) -> Result<Self, TransportError> {
        Self::with_alpn(identity, lanspread_proto::wire::ALPN)
    }

    /// A client speaking `alpn` (tests use a wrong one), on the current
    /// runtime.
    pub fn with_alpn(identity: &TlsIdentity, alpn: &[u8]) -> Result<Self, TransportError> {
        let client = super::client_endpoint(identity, alpn)?;
        Ok(Self {
            runtime: tokio::runtime::Handle::current(),
            client,
            connections: Mutex::new(HashMap::new()),
            next_lane: AtomicUsize::new(0),
            download_limit: Arc::default(),
            peer_id: String::new(),
        })
    }

    /// Names us in `Subscribe` requests (so a peer downloading the same
    /// manifest takes us as a source at once).
    pub fn with_peer_id(mut self, peer_id: &str) -> Self {
        self.peer_id = peer_id.to_owned();
        self
    }

    /// Paces every chunk read by `limit` (the daemon's download limit).
    pub fn with_download_limit(mut self, limit: Arc<RateLimiter>) -> Self {
        self.download_limit = limit;
        self
    }

    /// Sends a metadata request and reads its JSON answer. A refusal is
    /// returned as `Ok(Response::Error(..))`.
    pub async fn request(
        &self,
        addr: SocketAddr,
        request: &Request,
    ) -> Result<Response, TransportError> {
        self.bounded(addr, REQUEST_TIMEOUT, async {
            let mut stream = self.open_stream(addr, 0, request).await?;
            let bytes = read_to_end_bounded(&mut stream, MAX_RESPONSE_BYTES)
                .await
                .map_err(|err| protocol(addr, err))?;
            serde_json::from_slice(&bytes).map_err(|err| protocol(addr, err))
        })
        .await
    }

    /// Fetches chunk `chunk` of manifest `manifest` of game `id`, or, from
    /// a complete holder, whichever of it and `alternatives` the peer
    /// chooses. `length_of` gives each chunk's length: the peer must send
    /// one of the asked chunks, at its length. Once it announced which,
    /// `open(chunk)` gives the sink its bytes go to as the stream's pieces
    /// arrive (the transport copies none); returns the chunk sent and
    /// the sink. The sink takes the pieces on the client's runtime. The
    /// peer's refusal is a [`TransportError::Refused`].
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_chunk<S: ChunkSink + 'static>(
        &self,
        addr: SocketAddr,
        id: &GameId,
        manifest: &str,
        chunk: u32,
        alternatives: Vec<u32>,
        length_of: impl Fn(u32) -> Option<u64>,
        open: impl FnOnce(u32) -> S,
        timeout: Duration,
    ) -> Result<(u32, S), TransportError> {
        let request = Request::GetChunk {
            id: id.clone(),
            manifest: manifest.to_owned(),
            chunk,
            alternatives: alternatives.clone(),
            range: None,
        };
        let asked = |sent: u32| sent == chunk || alternatives.contains(&sent);
        self.fetch_data(addr, &request, asked, length_of, open, timeout)
            .await
    }

    /// Fetches `range` of chunk `chunk` of manifest `manifest` of game
    /// `id` (an update fetching the part of a chunk it does not hold).
    pub async fn fetch_range(
        &self,
        addr: SocketAddr,
        id: &GameId,
        manifest: &str,
        chunk: u32,
        range: ChunkRange,
        timeout: Duration,
    ) -> Result<ChunkData, TransportError> {
        let request = Request::GetChunk {
            id: id.clone(),
            manifest: manifest.to_owned(),
            chunk,
            alternatives: Vec::new(),
            range: Some(range),
        };
        let length_of = |_| Some(range.length);
        let (_, data) = self
            .fetch_data(
                addr,
                &request,
                |sent| sent == chunk,
                length_of,
                |_| ChunkData::default(),
                timeout,
            )
            .await?;
        Ok(data)
    }

    /// Sends a `GetChunk` and reads its header and data: the chunk sent
    /// must be `asked` and its length what `length_of` says; its data goes
    /// to the sink `open` gives for it, read by a task on the client's
    /// runtime (ended if this future is dropped).
    async fn fetch_data<S: ChunkSink + 'static>(
        &self,
        addr: SocketAddr,
        request: &Request,
        asked: impl Fn(u32) -> bool,
        length_of: impl Fn(u32) -> Option<u64>,
        open: impl FnOnce(u32) -> S,
        timeout: Duration,
    ) -> Result<(u32, S), TransportError> {
        let lane = self.next_lane.fetch_add(1, Ordering::Relaxed) % BULK_LANES;
        self.bounded(addr, timeout, async {
            let mut stream = self.open_stream(addr, lane, request).await?;
            let (header, rest) = read_piece_header(&mut stream)
                .await
                .map_err(|err| protocol(addr, err))?;
            match header {
                DataHeader::Error(refusal) => Err(TransportError::Refused {
                    addr: addr.to_string(),
                    code: refusal.code,
                    message: refusal.message,
                }),
                DataHeader::Data {
                    chunk: sent,
                    length,
                } => {
                    if !asked(sent) {
                        return Err(protocol(
                            addr,
                            format!("sent chunk {sent}, which was not asked for"),
                        ));
                    }
                    if length_of(sent) != Some(length) {
                        return Err(protocol(
                            addr,
                            format!("announced {length} bytes for chunk {sent} of another length"),
                        ));
                    }
                    let mut sink = open(sent);
                    let limit = Arc::clone(&self.download_limit);
                    let read = AbortOnDropHandle::new(self.runtime.spawn(async move {
                        let read =
                            read_data_into(&mut stream, rest, length, &limit, &mut sink).await;
                        (read, sink)
                    }));
                    let (read, sink) = match read.await {
                        Ok(done) => done,
                        // The sink's bug, as if it had run here.
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        Err(err) => {
                            return Err(TransportError::Stream {
                                addr: addr.to_string(),
                                reason: format!("the read of the data stopped: {err}"),
                            });
                        }
                    };
                    read.map_err(|err| protocol(addr, err))?;
                    Ok((sent, sink))
                }
            }
        })
        .await
    }

    /// The block signatures of chunks `first .. first + count` of manifest
    /// `manifest` of game `id`, in the wire form (one hex string per
    /// chunk). The peer must answer for exactly those chunks.
    pub async fn fetch_signatures(
        &self,
        addr: SocketAddr,
        id: &GameId,
        manifest: &str,
        first: u32,
        count: u32,
    ) -> Result<Vec<String>, TransportError> {
        let request = Request::GetSignatures {
            id: id.clone(),
            manifest: manifest.to_owned(),
            first,
            count,
        };
        match self.request(addr, &request).await? {
            Response::Signatures {
                first: answered,
                chunks,
            } if answered == first && chunks.len() == count as usize => Ok(chunks),
            Response::Error(refusal) => Err(TransportError::Refused {
                addr: addr.to_string(),
                code: refusal.code,
                message: refusal.message,
            }),
            other => Err(protocol(
                addr,
                format!("answered GetSignatures with {}", kind_of(&other)),
            )),
        }
    }

    /// Subscribes to what `addr` holds of manifest `manifest` of game `id`
    /// (`have`: what we hold, in the wire form): the first line arrives
    /// within the request timeout; later ones whenever the peer verifies
    /// chunks.
    pub async fn subscribe(
        &self,
        addr: SocketAddr,
        id: &GameId,
        manifest: &str,
        have: String,
    ) -> Result<Subscription, TransportError> {
        let request = Request::Subscribe {
            id: id.clone(),
            manifest: manifest.to_owned(),
            have,
            peer_id: self.peer_id.clone(),
        };
        let stream = self
            .bounded(addr, REQUEST_TIMEOUT, self.open_stream(addr, 0, &request))
            .await?;
        Ok(Subscription {
            addr,
            reader: BufReader::new(stream),
        })
    }

    /// Closes every cached connection explicitly (so peers do not wait for
    /// the idle timeout).
    pub async fn close_all(&self) {
        for (_, cached) in self.connections.lock().await.drain() {
            cached.handle.close(0u32.into());
        }
    }

    /// Forgets and closes every connection to `addr` (after a failure).
    pub async fn forget(&self, addr: SocketAddr) {
        self.connections.lock().await.retain(|(to, _), cached| {
            let keep = *to != addr;
            if !keep {
                cached.handle.close(0u32.into());
            }
            keep
        });
    }

    async fn bounded<T>(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        work: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
        };
        if matches!(
            result,
            Err(TransportError::Connect { .. }
                | TransportError::Stream { .. }
                | TransportError::Timeout { .. })
        ) {
            self.forget(addr).await;
        }
        result
    }

    /// Opens a stream on the cached (or a new) connection and sends the
    /// request on it, finishing the send side.
    async fn open_stream(
        &self,
        addr: SocketAddr,
        lane: usize,
        request: &Request,
    ) -> Result<s2n_quic::stream::BidirectionalStream, TransportError> {
        let stream_error = |reason: String| TransportError::Stream {
            addr: addr.to_string(),
            reason,
        };
        let mut handle = self.connection(addr, lane).await?;
        let mut stream = match handle.open_bidirectional_stream().await {
            Ok(stream) => stream,
            Err(_) => {
                // The cached connection died (peer restarted, or an idle
                // chunk lane closed): one fresh try on this lane.
                if let Some(dead) = self.connections.lock().await.remove(&(addr, lane)) {
                    dead.handle.close(0u32.into());
                }
                handle = self.connection(addr, lane).await?;
                handle
                    .open_bidirectional_stream()
                    .await
                    .map_err(|err| stream_error(err.to_string()))?
            }
        };
        let bytes = serde_json::to_vec(request).expect("requests serialize");
        stream
            .write_all(&bytes)
            .await
            .map_err(|err| stream_error(err.to_string()))?;
        stream
            .finish()
            .map_err(|err| stream_error(err.to_string()))?;
        Ok(stream)
    }

    async fn connection(&self, addr: SocketAddr, lane: usize) -> Result<Handle, TransportError> {
        if let Some(cached) = self.connections.lock().await.get(&(addr, lane)) {
            return Ok(cached.handle.clone());
        }
        let connect = Connect::new(addr).with_server_name(lanspread_proto::wire::SERVER_NAME);
        let mut connection =
            self.client
                .connect(connect)
                .await
                .map_err(|err| TransportError::Connect {
                    addr: addr.to_string(),
                    reason: err.to_string(),
                })?;
        // Lane 0 carries pings and requests and is kept open; the other
        // lanes only carry chunks, and an idle one may close (15 s) rather
        // than cost a keep-alive packet per peer forever.
        let _ = connection.keep_alive(lane == 0);
        let (handle, acceptor) = connection.split();
        let mut connections = self.connections.lock().await;
        if let Some(cached) = connections.get(&(addr, lane)) {
            // Two requests raced to connect: keep the one already cached
            // (streams may be open on it) and close this new, unused one.
            handle.close(0u32.into());
            return Ok(cached.handle.clone());
        }
        connections.insert(
            (addr, lane),
            Cached {
                handle: handle.clone(),
                _acceptor: acceptor,
            },
        );
        Ok(handle)
    }
}

/// An open availability stream from one peer.
#[derive(Debug)]
pub struct Subscription {
    addr: SocketAddr,
    reader: BufReader<s2n_quic::stream::BidirectionalStream>,
}

impl Subscription {
    /// The next line; `None` when the peer ended the stream.
    pub async fn next(&mut self) -> Result<Option<Availability>, TransportError> {
        read_json_line(&mut self.reader, MAX_AVAILABILITY_LINE as u64)
            .await
            .map_err(|err| protocol(self.addr, err))
    }
}

/// The name of a response's kind, for errors.
fn kind_of(response: &Response) -> &'static str {
    match response {
        Response::Pong { .. } => "Pong",
        Response::Games { .. } => "Games",
        Response::Game { .. } => "Game",
        Response::Signatures { .. } => "Signatures (for other chunks)",
        Response::Preparing { .. } => "Preparing",
        Response::Error(_) => "Error",
    }
}

fn protocol(addr: SocketAddr, err: impl std::fmt::Display) -> TransportError {
    TransportError::Protocol {
        addr: addr.to_string(),
        reason: err.to_string(),
    }
}
