//! The QUIC server: accepts peers' connections, one task per stream, and
//! answers each request from the served library. A refused request gets an
//! error answer; the connection and the server live on.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use lanspread_proto::wire::{
    DataHeader, MAX_REQUEST_BYTES, Request, Response, WIRE_VERSION, WireError, WireErrorCode,
};
use s2n_quic::Server;
use s2n_quic::provider::limits::Limits;
use s2n_quic::stream::BidirectionalStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::framing::{encode_header, read_to_end_bounded};
use super::tls::TlsIdentity;
use super::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_STREAMS_PER_CONNECTION, REQUEST_READ_TIMEOUT,
    STREAM_WRITE_TIMEOUT, TransportError,
};
use crate::prepare::{Lookup, Manifests};
use crate::serve::{ServedLibrary, check_range, refusal};

/// Size of each read from disk while sending file data.
const SEND_BLOCK_BYTES: u64 = 1024 * 1024;

/// What the server needs to answer requests.
#[derive(Debug)]
pub struct ServeContext {
    pub peer_id: String,
    /// The library as the core last published it.
    pub library: watch::Receiver<Arc<ServedLibrary>>,
    /// The file lists the preparer computed, for `GetGame`.
    pub manifests: Arc<Manifests>,
}

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
        let tls = s2n_quic::provider::tls::default::Server::builder()
            .with_certificate(identity.cert_pem.as_str(), identity.key_pem.as_str())
            .and_then(|b| b.with_application_protocols([lanspread_proto::wire::ALPN]))
            .and_then(|b| b.build())
            .map_err(|err| TransportError::Tls(err.to_string()))?;
        let server = Server::builder()
            .with_tls(tls)
            .map_err(|err| start(err.to_string()))?
            .with_limits(limits().map_err(start)?)
            .map_err(|err| start(err.to_string()))?
            .with_io(listen)
            .map_err(|err| start(err.to_string()))?
            .start()
            .map_err(|err| start(err.to_string()))?;
        let local_addr = server.local_addr().map_err(|err| start(err.to_string()))?;
        Ok(Self { server, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(mut self, context: Arc<ServeContext>, shutdown: CancellationToken) {
        tracing::info!(listen = %self.local_addr, "quic listening");
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

async fn serve_connection(
    mut connection: s2n_quic::Connection,
    context: Arc<ServeContext>,
    shutdown: CancellationToken,
) {
    tracing::debug!("peer connected");
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
                tokio::spawn(serve_stream(stream, Arc::clone(&context)).in_current_span());
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
async fn serve_stream(mut stream: BidirectionalStream, context: Arc<ServeContext>) {
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
        Request::Ping => {
            let pong = Response::Pong {
                peer_id: context.peer_id.clone(),
                wire_version: WIRE_VERSION,
                library_revision: library.revision,
            };
            send_json(&mut stream, &pong).await
        }
        Request::ListGames => {
            let games = Response::Games {
                games: library.announced(),
            };
            send_json(&mut stream, &games).await
        }
        Request::GetGame { id } => {
            let answer = manifest(&library, &context, id);
            send_json(&mut stream, &answer).await
        }
        Request::GetGameFileData { id, relative_path } => {
            send_file(&mut stream, &library, &id, &relative_path, None).await
        }
        Request::GetGameFileChunk {
            id,
            relative_path,
            offset,
            length,
        } => {
            send_file(
                &mut stream,
                &library,
                &id,
                &relative_path,
                Some((offset, length)),
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

/// The `GetGame` answer: the prepared manifest, or at once "preparing"
/// with the progress. Never hashes (the preparer does, in the background).
fn manifest(
    library: &ServedLibrary,
    context: &ServeContext,
    id: lanspread_proto::model::GameId,
) -> Response {
    let (_, game) = match library.game(&id) {
        Ok(found) => found,
        Err(err) => return Response::Error(err),
    };
    let version = game.version.clone();
    match context.manifests.lookup(&id, game) {
        Lookup::Ready(files) => Response::Game {
            id,
            version,
            files: files.as_ref().clone(),
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

/// Sends a whole file (`range` None) or one chunk, after its header.
/// Disk reads run on blocking threads, one block ahead of the network.
async fn send_file(
    stream: &mut BidirectionalStream,
    library: &Arc<ServedLibrary>,
    id: &lanspread_proto::model::GameId,
    relative_path: &str,
    range: Option<(u64, u64)>,
) -> Result<(), std::io::Error> {
    let opened = {
        let (library, id, relative_path) =
            (Arc::clone(library), id.clone(), relative_path.to_owned());
        tokio::task::spawn_blocking(move || open_range(&library, &id, &relative_path, range))
            .await
            .map_err(std::io::Error::other)?
    };
    let (file, start, length) = match opened {
        Ok(opened) => opened,
        Err(refused) => {
            tracing::debug!(game = %id, path = %relative_path, reason = %refused.message, "file request refused");
            return send_bytes(stream, encode_header(&DataHeader::Error(refused))).await;
        }
    };
    send_bytes(stream, encode_header(&DataHeader::Data { length })).await?;
    let file = Arc::new(file);
    let end = start + length;
    let read_block = |offset: u64| {
        let file = Arc::clone(&file);
        let len = (end - offset).min(SEND_BLOCK_BYTES) as usize;
        tokio::task::spawn_blocking(move || {
            let mut block = vec![0u8; len];
            // A file that shrank under us, or a failing disk, fails here:
            // the receiver then sees a truncated stream, never wrong bytes.
            crate::faults::read_error()?;
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut block, offset)?;
            Ok::<_, std::io::Error>(block)
        })
    };
    #[cfg(feature = "test-faults")]
    let mut corrupt = range.is_some() && crate::faults::corrupt_this_chunk();
    let mut offset = start;
    let mut next = (length > 0).then(|| read_block(offset));
    while let Some(pending) = next.take() {
        #[allow(unused_mut)]
        let mut block = pending.await.map_err(std::io::Error::other)??;
        offset += block.len() as u64;
        if offset < end {
            next = Some(read_block(offset));
        }
        #[cfg(feature = "test-faults")]
        if std::mem::take(&mut corrupt) {
            block[0] ^= 0xff;
        }
        send_bytes(stream, block).await?;
    }
    Ok(())
}

/// Opens and range-checks a file for sending. Blocking.
fn open_range(
    library: &ServedLibrary,
    id: &lanspread_proto::model::GameId,
    relative_path: &str,
    range: Option<(u64, u64)>,
) -> Result<(std::fs::File, u64, u64), WireError> {
    let file = library.open_file(id, relative_path)?;
    let size = file
        .metadata()
        .map_err(|err| {
            tracing::warn!(game = %id, path = %relative_path, cause = %err, "cannot read served file");
            refusal(
                WireErrorCode::Internal,
                format!("cannot read {relative_path}"),
            )
        })?
        .len();
    let (offset, length) = match range {
        Some((offset, length)) => {
            check_range(size, offset, length)?;
            (offset, length)
        }
        None => (0, size),
    };
    Ok((file, offset, length))
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
