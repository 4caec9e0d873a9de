//! The peer wire protocol spoken between daemons over QUIC.
//!
//! One request per bidirectional stream: the client writes one JSON
//! [`Request`] (at most [`MAX_REQUEST_BYTES`]) and finishes its send side.
//! Metadata answers are one JSON [`Response`] (at most
//! [`MAX_RESPONSE_BYTES`]). A chunk (`GetChunk`) is answered by a JSON
//! [`DataHeader`] line followed, when it is [`DataHeader::Data`], by
//! exactly `length` raw bytes, so the receiver can tell an error from data
//! and detects truncation. `Subscribe` is answered by a stream of JSON
//! [`Availability`] lines, each at most [`MAX_AVAILABILITY_LINE`] bytes.
//!
//! Chunks are named by the digest of the manifest they belong to (BLAKE3
//! over its canonical encoding, 64 hex digits) and their index in it: the
//! manifest's files in order, each file's chunks in offset order. So two
//! hosts holding different bytes under one version string never mix
//! chunks: a peer refuses a manifest it does not hold
//! ([`WireErrorCode::UnknownManifest`]).

use serde::{Deserialize, Serialize};

use crate::model::{GameFileDescription, GameId, Version};

/// The one wire version. Peers announcing another one are ignored.
/// 2: `GetGame` may be answered with `Preparing`.
/// 3: the swarm: chunks named by manifest digest and index (`GetChunk`),
/// availability streams (`Subscribe`), downloads announced in `Games`.
/// 4: `Ping` names the asker and its library revision (a change is pushed
/// by pinging at once, not found by polling).
/// 5: delta updates: `GetSignatures` (block signatures of chunks) and
/// `GetChunk` with a `range` (part of a chunk).
/// 6: `Busy`: a downloader serving the swarm refuses what it cannot send
/// at once, instead of queueing it.
/// 7: a downloader that finished ends its availability streams with a
/// complete `Have` (it is a complete holder now), and its chunk streams in
/// progress go on.
pub const WIRE_VERSION: u32 = 7;

/// ALPN protocol id negotiated on every QUIC connection (carries the wire
/// version, so a peer of another version fails the handshake, never a
/// request).
pub const ALPN: &[u8] = b"lanspread/7";

/// TLS server name used by clients (the compiled-in certificate is issued
/// for it).
pub const SERVER_NAME: &str = "lanspread";

/// mDNS service type registered and browsed by every daemon.
pub const MDNS_SERVICE_TYPE: &str = "_lanspread._udp";

/// Size of one transfer chunk in bytes; also the unit of the manifest's
/// BLAKE3 chunk hashes.
pub const CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// Size of one signature block in bytes: the unit in which an update finds
/// data it already holds at another offset or in another file
/// (`GetSignatures`) and fetches what it lacks (`GetChunk` with a range).
/// 128 blocks per chunk: an insertion costs at most one block more than
/// its own bytes, and the signatures of a chunk are 3 KiB of hex.
pub const SIGNATURE_BLOCK: u64 = 32 * 1024;

/// Bytes of one block's signature: an 8-byte rolling checksum and the
/// first 4 bytes of the block's BLAKE3 hash, both little-endian.
pub const SIGNATURE_BYTES: usize = 12;

/// Most chunks one `GetSignatures` may ask for (the server reads them all
/// from disk to answer: 64 MiB).
pub const MAX_SIGNATURE_CHUNKS: u32 = 16;

/// Longest `have` a `Subscribe` carries, in hex digits (a set of up to
/// 131,072 chunks, a 512 GiB game); a larger set is sent empty.
pub const MAX_HAVE_HEX: usize = 32 * 1024;

/// Largest encoded [`Request`] a server reads, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest encoded [`Response`] a client reads, in bytes. A manifest of
/// 150,000 files and 38,000 chunks (a 150 GB game) is about 20 MiB.
pub const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Most entries a manifest may list; more is a lying peer.
pub const MAX_MANIFEST_FILES: usize = 1_000_000;

/// Longest relative path a manifest may list, in bytes (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most alternatives a `GetChunk` may offer; a server looks at no more.
pub const MAX_ALTERNATIVES: usize = 64;

/// Longest [`Availability`] line, in bytes: a set of every chunk of the
/// largest manifest (1,000,000 files) is 250,000 hex digits.
pub const MAX_AVAILABILITY_LINE: usize = 1024 * 1024;

/// A request from one peer to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Liveness probe; answered by [`Response::Pong`]. Says who asks and
    /// the revision of the asker's own library (as its `Pong` would), so a
    /// peer learns of a change as soon as the asker pings it.
    Ping {
        peer_id: String,
        library_revision: u64,
    },
    /// The peer's announced library.
    ListGames,
    /// The file manifest of one game, with chunk hashes (from a peer that
    /// holds it complete, or from one that is downloading it).
    GetGame { id: GameId },
    /// One chunk of the manifest with digest `manifest`: chunk number
    /// `chunk`, or, from a peer that holds the whole game, whichever of
    /// `chunk` and `alternatives` it has sent least often (the answer's
    /// header says which).
    ///
    /// With a `range`, only those bytes of chunk `chunk` (alternatives are
    /// then not allowed): an update fetching the part of a chunk it does
    /// not hold already.
    GetChunk {
        id: GameId,
        manifest: String,
        chunk: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        alternatives: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<ChunkRange>,
    },
    /// The block signatures of chunks `first .. first + count` of manifest
    /// `manifest` (at most [`MAX_SIGNATURE_CHUNKS`]), answered by
    /// [`Response::Signatures`]. Asked by an update before it looks for
    /// the new version's bytes among the files it already holds.
    GetSignatures {
        id: GameId,
        manifest: String,
        first: u32,
        count: u32,
    },
    /// Which chunks of manifest `manifest` the peer holds, then each chunk
    /// it verifies from now on, as a stream of [`Availability`] lines
    /// until it stops holding the manifest. `have` is the asker's own set
    /// (hex, see [`Availability::Have`]): it is not told about those. An
    /// empty `have` stands for "nothing" (an asker whose set would not fit
    /// in [`MAX_REQUEST_BYTES`] sends it empty).
    /// `peer_id` is the asker's: it is downloading this manifest too, so a
    /// server downloading it as well takes the asker as a source at once.
    Subscribe {
        id: GameId,
        manifest: String,
        have: String,
        peer_id: String,
    },
}

/// Part of a chunk: `length` bytes from `offset` (relative to the chunk's
/// start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRange {
    pub offset: u64,
    pub length: u64,
}

/// A game as one peer announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedGame {
    pub id: GameId,
    pub version: Version,
    /// Bytes of the served files.
    pub size: u64,
    /// The digest of its manifest, once known (a complete game's file list
    /// may still be being prepared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Whether the peer holds the whole game (false: it is downloading it
    /// and serves the chunks it verified).
    pub complete: bool,
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
    /// The answer to `GetSignatures`: per chunk from `first` on, the
    /// signatures of its [`SIGNATURE_BLOCK`]-byte blocks (the last one may
    /// be shorter), [`SIGNATURE_BYTES`] each, in lower-case hex.
    Signatures {
        first: u32,
        chunks: Vec<String>,
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
    /// Exactly `length` raw bytes of chunk number `chunk` follow (of the
    /// asked range, when the request had one).
    Data {
        chunk: u32,
        length: u64,
    },
    Error(WireError),
}

/// One line of the answer to `Subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Availability {
    /// The first line: the chunks the peer holds (less those the asker
    /// said it holds), as lower-case hex of a bit set: bit `i % 8` of byte
    /// `i / 8` is chunk `i`. `complete`: it holds the whole game, and no
    /// line follows. A downloader whose download finished and whose game
    /// is served complete now ends its stream with one that is complete
    /// (the chunks it had not told of yet).
    Have { chunks: String, complete: bool },
    /// Chunks it verified since the last line.
    More { chunks: Vec<u32> },
    /// It no longer serves this manifest (its download was cancelled,
    /// failed or ended, or its game changed); the last line.
    Gone { reason: String },
    /// The subscription is refused; the only line.
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
    /// Offset or length outside the file, or a chunk number outside the
    /// manifest.
    OutOfRange,
    /// The peer does not hold a manifest with this digest (any more): its
    /// game changed, or its download of it ended. The message names the
    /// version it holds now, if any.
    UnknownManifest,
    /// The peer is downloading this manifest but has not verified this
    /// chunk (or any of the alternatives) yet.
    NotHeld,
    /// The server is downloading this manifest too and is already sending
    /// as much of it as it serves at once, or holds it complete and every
    /// chunk asked is on its way to another peer: ask another peer, or
    /// this one again a little later. Nothing failed.
    Busy,
    /// The server failed to read its own disk.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_a_type_tag() {
        let request = Request::GetChunk {
            id: GameId::new("openarena").unwrap(),
            manifest: "ab".repeat(32),
            chunk: 7,
            alternatives: vec![3, 9],
            range: None,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.starts_with(r#"{"type":"GetChunk""#), "{json}");
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
        let error = Response::Error(WireError {
            code: WireErrorCode::ForbiddenPath,
            message: "path contains ..".into(),
        });
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), error);
    }

    #[test]
    fn a_range_is_left_out_when_absent_and_round_trips_when_present() {
        let whole = r#"{"type":"GetChunk","id":"g","manifest":"00","chunk":1}"#;
        let Request::GetChunk { range, .. } = serde_json::from_str(whole).unwrap() else {
            panic!("a GetChunk");
        };
        assert_eq!(range, None);
        let request = Request::GetChunk {
            id: GameId::new("g").unwrap(),
            manifest: "00".into(),
            chunk: 1,
            alternatives: vec![],
            range: Some(ChunkRange {
                offset: 65536,
                length: 7,
            }),
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(
            json.contains(r#""range":{"offset":65536,"length":7}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), request);
    }

    #[test]
    fn a_request_with_an_invalid_game_id_does_not_parse() {
        let json = r#"{"type":"GetGame","id":"../etc"}"#;
        assert!(serde_json::from_str::<Request>(json).is_err());
    }
}
