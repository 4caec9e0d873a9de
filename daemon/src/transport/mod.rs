//! The peer transport: one QUIC endpoint serving the local library and a
//! client that asks other peers (`docs/peer-protocol.md`).
//!
//! The only module that knows s2n-quic. One request per bidirectional
//! stream (see `lanspread_proto::wire`); the client reuses one connection
//! per peer address.

mod client;
mod framing;
mod rate;
mod runtimes;
mod server;
mod tls;
mod turns;

use std::time::Duration;

pub use client::{BULK_LANES, PeerClient};
pub use framing::{ChunkData, ChunkSink};
pub use rate::{RateLimiter, RateLimiters};
pub use runtimes::{SERVING_NICE, SERVING_THREAD_NAME, TransportRuntime};
pub use server::{QuicServer, RevisionFeed, ServeContext, ServeEvent};
pub use tls::TlsIdentity;
pub use turns::{ON_ITS_WAY_GRACE, SWARM_UPLOAD_BYTES, UPLOAD_BUDGET_BYTES};

/// Longest a QUIC handshake may take. Short, because an ALPN mismatch is
/// only ever reported as a handshake timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection with no traffic for this long is closed (pings keep live
/// peers well inside it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest a metadata request (`Ping`, `ListGames`, `GetGame`) may take,
/// end to end, before the client gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the server waits for a request's bytes once a stream opened.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one write of response data may stall before the server resets
/// the stream (a reader that stopped reading).
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams a peer may have open on one connection at once.
pub const MAX_STREAMS_PER_CONNECTION: u64 = 64;

/// Largest IP packet the endpoints probe for (s2n-quic's path MTU
/// discovery). Ethernet's 1500 is where it starts to matter: on a LAN with
/// jumbo frames (9000) each datagram carries six times the data, for the
/// same per-packet cost of encryption and system calls. A path that cannot
/// carry it loses only the probes, and the connection stays at the largest
/// size that got through (the lab's 1500-byte veths are such a path).
pub const MAX_MTU: u16 = 9000;

/// The UDP receive buffer (`SO_RCVBUF`) each endpoint asks for. With the
/// kernel's default (208 KiB) a downloader busy on its other core drops
/// whole GRO batches of four lanes' bursts (`RcvbufErrors` in
/// `/proc/net/snmp`), and the seeder sends them again: 2–8 % more bytes on
/// the wire in the lab's delta bench, and time lost to loss recovery. The
/// kernel caps the request at `net.core.rmem_max`, which the package raises
/// to 8 MiB (`packaging/sysctl.d`); asking for more is not an error.
pub const RECEIVE_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The queue of datagrams s2n-quic fills for its sending task, in bytes.
/// Its default (128 KiB) is cut into slots of up to 64 KiB (ten GSO
/// segments at the largest MTU, here [`MAX_MTU`]): two slots, twenty
/// packets on a 1500-byte path, so the sender stopped to hand them over
/// every twenty packets. A megabyte holds sixteen slots. In `just bench
/// single` (four rounds against the default, same session) the seeder's CPU
/// per GiB fell from 1.90–2.25 to 1.60–1.81 s, the downloader's from
/// 3.06–3.74 to 2.62–2.96 s, and lanspread moved 295–373 against 203–311
/// MiB/s; four megabytes were no better than one.
pub const SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// The UDP socket of an endpoint bound to `addr`, with the settings above
/// (GSO and GRO are s2n-quic's defaults where the kernel has them).
fn io(addr: std::net::SocketAddr) -> std::io::Result<s2n_quic::provider::io::Default> {
    s2n_quic::provider::io::Default::builder()
        .with_receive_address(addr)?
        .with_max_mtu(MAX_MTU)?
        .with_recv_buffer_size(RECEIVE_BUFFER_BYTES)?
        .with_internal_send_buffer_size(SEND_QUEUE_BYTES)?
        .build()
}

/// A QUIC server endpoint on `listen` with the daemon's transport settings
/// (TLS identity, ALPN `alpn`, limits, socket). The daemon's server and the
/// bench's bare-transport baseline (`examples/quic_ceiling.rs`) both use it.
pub fn server_endpoint(
    listen: std::net::SocketAddr,
    identity: &TlsIdentity,
    alpn: &[u8],
) -> Result<s2n_quic::Server, TransportError> {
    let start = |reason: String| TransportError::Start {
        addr: listen.to_string(),
        reason,
    };
    let tls = s2n_quic::provider::tls::default::Server::builder()
        .with_certificate(identity.cert_pem.as_str(), identity.key_pem.as_str())
        .and_then(|b| b.with_application_protocols([alpn]))
        .and_then(|b| b.build())
        .map_err(|err| TransportError::Tls(err.to_string()))?;
    s2n_quic::Server::builder()
        .with_tls(tls)
        .map_err(|err| start(err.to_string()))?
        .with_limits(server::limits().map_err(start)?)
        .map_err(|err| start(err.to_string()))?
        .with_io(io(listen).map_err(|err| start(err.to_string()))?)
        .map_err(|err| start(err.to_string()))?
        .start()
        .map_err(|err| start(err.to_string()))
}

/// A QUIC client endpoint with the daemon's transport settings, trusting
/// only `identity`'s certificate and speaking `alpn`.
pub fn client_endpoint(
    identity: &TlsIdentity,
    alpn: &[u8],
) -> Result<s2n_quic::Client, TransportError> {
    let start = |reason: String| TransportError::Start {
        addr: "0.0.0.0:0".into(),
        reason,
    };
    let tls = s2n_quic::provider::tls::default::Client::builder()
        .with_empty_trust_store()
        .and_then(|b| b.with_certificate(identity.cert_pem.as_str()))
        .and_then(|b| b.with_application_protocols([alpn]))
        .and_then(|b| b.build())
        .map_err(|err| TransportError::Tls(err.to_string()))?;
    s2n_quic::Client::builder()
        .with_tls(tls)
        .map_err(|err| start(err.to_string()))?
        .with_limits(server::limits().map_err(start)?)
        .map_err(|err| start(err.to_string()))?
        .with_io(io(([0, 0, 0, 0], 0).into()).map_err(|err| start(err.to_string()))?)
        .map_err(|err| start(err.to_string()))?
        .start()
        .map_err(|err| start(err.to_string()))
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot start the QUIC endpoint on {addr}: {reason}")]
    Start { addr: String, reason: String },
    #[error("cannot read {what}")]
    ReadIdentity {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS identity: {0}")]
    Tls(String),
    #[error("cannot connect to peer {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("request to peer {addr} failed: {reason}")]
    Stream { addr: String, reason: String },
    #[error("peer {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("peer {addr} sent an invalid answer: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("peer {addr} refused: {message} ({code:?})")]
    Refused {
        addr: String,
        code: lanspread_proto::wire::WireErrorCode,
        message: String,
    },
}
