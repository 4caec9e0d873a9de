//! The peer wire protocol spoken between daemons over QUIC.
//!
//! One request per bidirectional stream: the client writes one JSON
//! [`Request`] (at most [`MAX_REQUEST_BYTES`]) and finishes its send side.
//! Metadata answers are one JSON [`Response`] (at most
//! [`MAX_RESPONSE_BYTES`]). File data (`GetGameFileData`,
//! `GetGameFileChunk`) is answered by a JSON [`DataHeader`] line followed,
//! when it is [`DataHeader::Data`], by exactly `length` raw bytes, so the
//! receiver can tell an error from data and detects truncation.

use serde::{Deserialize, Serialize};

use crate::model::{GameFileDescription, GameId, Version};

/// The one wire version. Peers announcing another one are ignored.
/// 2: `GetGame` may be answered with `Preparing`.
pub const WIRE_VERSION: u32 = 2;

/// ALPN protocol id negotiated on every QUIC connection (carries the wire
/// version, so a peer of another version fails the handshake, never a
/// request).
pub const ALPN: &[u8] = b"lanspread/2";

/// TLS server name used by clients (the compiled-in certificate is issued
/// for it).
pub const SERVER_NAME: &str = "lanspread";

/// mDNS service type registered and browsed by every daemon.
pub const MDNS_SERVICE_TYPE: &str = "_lanspread._udp";

/// Size of one transfer chunk in bytes; also the unit of the manifest's
/// BLAKE3 chunk hashes.
pub const CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Largest encoded [`Request`] a server reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest encoded [`Response`] a client reads, in bytes. A manifest of
/// 150,000 files and 38,000 chunks (a 150 GB game) is about 20 MiB.
pub const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Most entries a manifest may list; more is a lying peer.
pub const MAX_MANIFEST_FILES: usize = 1_000_000;

/// Longest relative path a manifest may list, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// A request from one peer to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Liveness probe; answered by [`Response::Pong`].
    Ping,
    /// The peer's announced library.
    ListGames,
    /// The file manifest of one game, with chunk hashes.
    GetGame { id: GameId },
    /// One whole file.
    GetGameFileData { id: GameId, relative_path: String },
    /// One byte range of a file.
    GetGameFileChunk {
        id: GameId,
        relative_path: String,
        offset: u64,
        length: u64,
    },
}

/// A game as one peer announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedGame {
    pub id: GameId,
    pub version: Version,
    /// Bytes of the served files.
    pub size: u64,
}

/// A metadata answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    Pong {
        peer_id: String,
        wire_version: u32,
        /// Changes whenever the peer's announced library changes, so a
        /// pinger knows when to fetch `ListGames` again.
        library_revision: u64,
    },
    Games {
        games: Vec<AnnouncedGame>,
    },
    Game {
        id: GameId,
        version: Version,
        files: Vec<GameFileDescription>,
    },
    /// The answer to `GetGame` while the server is still computing the
    /// game's chunk hashes: ask again later. Sent at once; a server never
    /// hashes inside a request.
    Preparing {
        id: GameId,
        version: Version,
        /// Bytes hashed so far.
        bytes_done: u64,
        /// Bytes of the game's files.
        bytes_total: u64,
    },
    Error(WireError),
}

/// The header in front of file data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DataHeader {
    /// Exactly `length` raw bytes follow.
    Data {
        length: u64,
    },
    Error(WireError),
}

/// Why a peer refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: WireErrorCode,
    pub message: String,
}

/// Stable reasons a server gives for refusing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireErrorCode {
    /// The request did not parse or was too large.
    BadRequest,
    /// The id is not in the catalog or the root is not served.
    UnknownGame,
    /// The path is absolute, contains `..`, names a reserved entry, `local/`,
    /// or a symlink leaving the root.
    ForbiddenPath,
    /// The file does not exist in the served root.
    NotFound,
    /// Offset or length outside the file.
    OutOfRange,
    /// The server failed to read its own disk.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_a_type_tag() {
        let request = Request::GetGameFileChunk {
            id: GameId::new("openarena").unwrap(),
            relative_path: "data/pak0.eti".into(),
            offset: CHUNK_SIZE,
            length: 10,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.starts_with(r#"{"type":"GetGameFileChunk""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        let error = Response::Error(WireError {
            code: WireErrorCode::ForbiddenPath,
            message: "path contains ..".into(),
        });
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), error);
    }

    #[test]
    fn a_request_with_an_invalid_game_id_does_not_parse() {
        let json = r#"{"type":"GetGame","id":"../etc"}"#;
        assert!(serde_json::from_str::<Request>(json).is_err());
    }
}
