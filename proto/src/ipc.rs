//! The IPC protocol between `lanspreadd` and its clients (docs/ipc.md).
//!
//! Newline-delimited JSON over a local socket, UTF-8, one object per line,
//! at most [`MAX_LINE_BYTES`] per line. The daemon speaks first with a
//! [`ServerMessage::Hello`]; a client sends [`ClientRequest`]s with ids of
//! its choosing and gets one [`ServerMessage::Reply`] per request, in order.
//! After `Subscribe`, [`ServerMessage::Event`]s are pushed, each with a
//! sequence number.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::{GameFile, GameId, GameSummary, PeerInfo, RateLimits};

/// The one IPC protocol version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts, in bytes (without the newline). The
/// daemon never writes a longer one: lists that grow with a game (its
/// files) are paged ([`PeerCommand::ListGameFiles`]).
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Most bytes of encoded entries one `ListGameFiles` page carries, so a
/// page with its envelope stays well inside [`MAX_LINE_BYTES`] whatever
/// the paths are (a path is at most 4096 bytes).
pub const PAGE_BYTES: usize = 512 * 1024;

/// A line sent by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRequest {
    /// Chosen by the client; echoed in the reply.
    pub id: u64,
    pub command: PeerCommand,
}

/// Everything a client can ask the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PeerCommand {
    /// The merged library (local + peers).
    ListGames,
    /// Ask the peers holding the latest version for the game's file list;
    /// answered (and announced as `GotGameFiles`) with its summary once a
    /// peer sent it. While the peers are still preparing it,
    /// `PreparingGameFiles` events report their progress.
    GetGame {
        id: GameId,
    },
    /// Like `GetGame`, but for an update: local archives are ignored.
    FetchLatestFromPeers {
        id: GameId,
    },
    /// Download files of the file list fetched last, named by path (`[]`:
    /// all of them).
    DownloadGameFiles {
        id: GameId,
        files: Vec<String>,
    },
    /// One page of the file list fetched last: the entries from `offset`
    /// on, as many as fit in [`PAGE_BYTES`].
    ListGameFiles {
        id: GameId,
        #[serde(default)]
        offset: u64,
    },
    InstallGame {
        id: GameId,
    },
    UninstallGame {
        id: GameId,
    },
    /// Switch the game directory (absolute, existing, writable directory).
    SetGameDir {
        path: PathBuf,
    },
    GetPeerCount,
    /// Start the event stream on this connection.
    Subscribe,
    Status,
    ListPeers,
    CancelDownload {
        id: GameId,
    },
    /// Rehash a downloaded game against the manifest its peers offer (or
    /// its own); with `repair`, refetch the chunks that differ. Its outcome
    /// comes as events.
    VerifyGame {
        id: GameId,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        repair: bool,
    },
    /// Change the rate limits (bytes per second, 0 = none); an omitted
    /// limit stays as it is.
    SetLimits {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        download: Option<u64>,
    },
}

impl PeerCommand {
    /// Every command name, as it appears in the `type` field.
    pub const NAMES: &'static [&'static str] = &[
        "ListGames",
        "GetGame",
        "FetchLatestFromPeers",
        "DownloadGameFiles",
        "ListGameFiles",
        "InstallGame",
        "UninstallGame",
        "SetGameDir",
        "GetPeerCount",
        "Subscribe",
        "Status",
        "ListPeers",
        "CancelDownload",
        "SetLimits",
        "VerifyGame",
    ];

    /// The command's name as it appears in the `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ListGames => "ListGames",
            Self::GetGame { .. } => "GetGame",
            Self::FetchLatestFromPeers { .. } => "FetchLatestFromPeers",
            Self::DownloadGameFiles { .. } => "DownloadGameFiles",
            Self::ListGameFiles { .. } => "ListGameFiles",
            Self::InstallGame { .. } => "InstallGame",
            Self::UninstallGame { .. } => "UninstallGame",
            Self::SetGameDir { .. } => "SetGameDir",
            Self::GetPeerCount => "GetPeerCount",
            Self::Subscribe => "Subscribe",
            Self::Status => "Status",
            Self::ListPeers => "ListPeers",
            Self::CancelDownload { .. } => "CancelDownload",
            Self::SetLimits { .. } => "SetLimits",
            Self::VerifyGame { .. } => "VerifyGame",
        }
    }

    /// Whether a read-only client may issue this command: reading state and
    /// following events, nothing that changes anything or reaches peers.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Self::ListGames
                | Self::GetPeerCount
                | Self::Subscribe
                | Self::Status
                | Self::ListPeers
                | Self::ListGameFiles { .. }
        )
    }
}

/// A message that would not fit on one line ([`MAX_LINE_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} of {bytes} bytes does not fit in one IPC line ({MAX_LINE_BYTES} at most)")]
pub struct LineTooLong {
    pub kind: &'static str,
    pub bytes: usize,
}

impl ServerMessage {
    /// The message as one line (without the newline), or why it cannot be
    /// sent: the daemon never writes a line a client would have to refuse.
    pub fn encode(&self) -> Result<String, LineTooLong> {
        let line = serde_json::to_string(self).expect("server messages always serialize");
        if line.len() > MAX_LINE_BYTES {
            let kind = match self {
                Self::Hello(_) => "hello",
                Self::Reply(_) => "reply",
                Self::Event(_) => "event",
                Self::Closing { .. } => "closing",
            };
            return Err(LineTooLong {
                kind,
                bytes: line.len(),
            });
        }
        Ok(line)
    }
}

/// A line sent by the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First line on every connection.
    Hello(Hello),
    /// The answer to one request.
    Reply(Reply),
    /// A pushed event (after `Subscribe`).
    Event(EventMessage),
    /// The daemon is closing this connection, and why.
    Closing { reason: String },
}

/// The daemon's greeting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub daemon_version: String,
    pub protocol: u32,
    pub peer_id: String,
    /// What this connection may do, decided from its peer credentials.
    pub access: Access,
}

/// What a connection may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Every command.
    Operator,
    /// Only reads: `ListGames`, `Status`, `ListPeers`, `GetPeerCount`,
    /// `Subscribe`.
    ReadOnly,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id; `None` when the line did not parse far enough to
    /// carry one.
    pub id: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Result or error of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command's result; its shape depends on the command (docs/ipc.md).
    Result(serde_json::Value),
    Error(IpcError),
}

/// A failed request: a stable code for programs, a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub code: ErrorCode,
    pub message: String,
}

impl IpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for IpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for IpcError {}

/// Stable error codes (docs/ipc.md lists them with their meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON.
    MalformedJson,
    /// The line is longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// The command's `type` is not one this daemon knows.
    UnknownCommand,
    /// JSON, but not a valid request (missing or mistyped field, bad id).
    InvalidRequest,
    /// The connection's access level does not allow the command.
    PermissionDenied,
    /// The command exists but its machinery is not available in this
    /// daemon (yet, or not right now).
    NotAvailable,
    /// `SetGameDir` refused the path.
    InvalidGameDir,
    /// No game directory is set.
    NoGameDir,
    /// No connected peer holds the game.
    NoPeers,
    /// Another operation runs on the same game (or, for `SetGameDir`, on
    /// any game); try again when it ended.
    Busy,
    /// There is nothing to act on (no download of that game runs; no file
    /// list was fetched for it).
    NotRunning,
    /// The game directory's filesystem has too little free space for the
    /// download and its install; the message has the figures.
    NoSpace,
    /// The daemon failed internally; the message says what.
    Internal,
}

impl ErrorCode {
    /// Every error code (docs/ipc.md documents each; a test checks it).
    pub const ALL: &'static [ErrorCode] = &[
        Self::MalformedJson,
        Self::LineTooLong,
        Self::UnknownCommand,
        Self::InvalidRequest,
        Self::PermissionDenied,
        Self::NotAvailable,
        Self::InvalidGameDir,
        Self::NoGameDir,
        Self::NoPeers,
        Self::Busy,
        Self::NotRunning,
        Self::NoSpace,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::LineTooLong => "line_too_long",
            Self::UnknownCommand => "unknown_command",
            Self::InvalidRequest => "invalid_request",
            Self::PermissionDenied => "permission_denied",
            Self::NotAvailable => "not_available",
            Self::InvalidGameDir => "invalid_game_dir",
            Self::NoGameDir => "no_game_dir",
            Self::NoPeers => "no_peers",
            Self::Busy => "busy",
            Self::NotRunning => "not_running",
            Self::NoSpace => "no_space",
            Self::Internal => "internal",
        }
    }
}

/// A pushed event with its sequence number.
///
/// Sequence numbers grow by one per event the daemon publishes. The first
/// event after `Subscribe` is a [`PeerEvent::LibrarySnapshot`] carrying the
/// number of the last event it reflects; the next live event has that
/// number plus one, so a gap means events were missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMessage {
    pub seq: u64,
    pub event: PeerEvent,
}

/// Everything the daemon reports on its event stream.
/// What this daemon is sending to one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPeer {
    /// Its peer id, or empty when the address belongs to no known peer.
    pub peer_id: String,
    /// Its name, or its address when unknown.
    pub name: String,
    /// Bytes of chunk data sent to it since this daemon started.
    pub bytes: u64,
    /// Bytes per second over the last interval.
    pub rate: u64,
}

/// What one source of a download sent so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBytes {
    pub peer_id: String,
    pub bytes: u64,
    /// It holds the complete game (else it was downloading it too).
    pub complete: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PeerEvent {
    /// The whole merged library; sent first after `Subscribe` and after
    /// every change.
    LibrarySnapshot {
        games: Vec<GameSummary>,
    },
    /// The game directory changed (`SetGameDir`).
    GameDirChanged {
        path: PathBuf,
    },
    /// The file list of a game was gathered from peers (its summary; the
    /// entries are paged with `ListGameFiles`).
    GotGameFiles {
        id: GameId,
        version: crate::model::Version,
        /// Entries (files and folders).
        files: u32,
        /// Bytes of its files.
        bytes: u64,
        /// Peers that serve it.
        peers: u32,
    },
    /// `GetGame` waits for a peer that is still computing the game's chunk
    /// hashes (it just started, or the game just appeared or changed).
    PreparingGameFiles {
        id: GameId,
        peer_id: String,
        /// The peer's name, for people.
        peer_name: String,
        bytes_done: u64,
        bytes_total: u64,
    },
    /// No peer holds the requested game.
    NoPeersHaveGame {
        id: GameId,
    },
    DownloadGameFilesBegin {
        id: GameId,
    },
    DownloadGameFilesProgress {
        id: GameId,
        bytes_done: u64,
        bytes_total: u64,
        /// Bytes per second over the last interval.
        rate: u64,
        peers: u32,
        /// Bytes received so far from peers holding the complete game.
        #[serde(default)]
        bytes_from_seeders: u64,
        /// Bytes received so far from peers that were downloading it too.
        #[serde(default)]
        bytes_from_downloaders: u64,
        /// Bytes received so far per source.
        #[serde(default)]
        sources: Vec<SourceBytes>,
        /// Bytes found already in place on disk so far (not fetched).
        #[serde(default)]
        bytes_reused: u64,
    },
    DownloadGameFilesFinished {
        id: GameId,
        /// Bytes of the downloaded files.
        bytes: u64,
        /// Chunks fetched over the network in this run.
        chunks_fetched: u64,
        /// Chunks already verified by an interrupted earlier run.
        chunks_resumed: u64,
        /// Wall time of this run, in milliseconds.
        millis: u64,
        /// Bytes received from peers holding the complete game.
        #[serde(default)]
        bytes_from_seeders: u64,
        /// Bytes received from peers that were downloading it too.
        #[serde(default)]
        bytes_from_downloaders: u64,
        /// Bytes taken from this host's disk, not fetched: chunks already
        /// in place (an update's unchanged chunks) and the local blocks of
        /// chunks whose data moved.
        #[serde(default)]
        bytes_reused: u64,
        /// Chunks found in place on disk or assembled from data that moved
        /// (their fetched ranges count in the bytes from sources).
        #[serde(default)]
        chunks_reused: u64,
    },
    DownloadGameFilesFailed {
        id: GameId,
        reason: String,
    },
    DownloadGameFilesCancelled {
        id: GameId,
    },
    InstallGameBegin {
        id: GameId,
    },
    /// Extraction progress, at most 4 a second.
    InstallGameProgress {
        id: GameId,
        /// Entries extracted so far.
        entries: u64,
        /// Bytes extracted so far.
        bytes: u64,
    },
    InstallGameFinished {
        id: GameId,
    },
    /// The install after a download had nothing to do (the game holds no
    /// archive: its files are the game).
    InstallGameSkipped {
        id: GameId,
        reason: String,
    },
    InstallGameFailed {
        id: GameId,
        reason: String,
    },
    UninstallGameBegin {
        id: GameId,
    },
    UninstallGameFinished {
        id: GameId,
    },
    UninstallGameFailed {
        id: GameId,
        reason: String,
    },
    /// A subsystem failed and is retrying or stopped.
    RuntimeFailed {
        component: String,
        reason: String,
    },
    PeerDiscovered {
        peer: PeerInfo,
    },
    PeerConnected {
        peer: PeerInfo,
    },
    PeerLost {
        peer_id: String,
    },
    /// What this daemon is sending to peers: about once a second while it
    /// serves chunks (the peers with a rate above 0), and once with an
    /// empty list when serving stops.
    Uploading {
        peers: Vec<UploadPeer>,
    },
    /// A peer's round-trip time changed noticeably (first measured, or by
    /// more than a quarter; at most every 5 s per peer).
    PeerRtt {
        peer_id: String,
        rtt_us: u64,
    },
    PeerCountChanged {
        count: u32,
    },
    /// A verify started; `peers` is how many peers offered the manifest it
    /// checks against (0: the daemon's own, see docs/ipc.md).
    VerifyGameBegin {
        id: GameId,
        peers: u32,
    },
    /// Rehashing progress, at most 4 a second.
    VerifyGameProgress {
        id: GameId,
        bytes_done: u64,
        bytes_total: u64,
    },
    VerifyGameFinished {
        id: GameId,
        /// Bytes checked.
        bytes: u64,
        /// Every file that differs from the manifest (empty: clean).
        differing: Vec<DifferingFile>,
        /// Chunks fetched again and verified (`repair`).
        repaired_chunks: u64,
    },
    VerifyGameFailed {
        id: GameId,
        reason: String,
    },
}

/// A file of a verified game that differs from the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferingFile {
    pub relative_path: String,
    /// `missing`, `size` (its length differs) or `content` (some chunks
    /// hash differently).
    pub problem: String,
    /// Indices of the chunks that differ (all of them for `missing` and
    /// `size`).
    pub bad_chunks: Vec<u32>,
    /// Every bad chunk was fetched again and verified.
    pub repaired: bool,
}

/// The typed answer to a command: one variant per command, so the daemon
/// core returns types and JSON is written only at the IPC edge. It is
/// encoded as the bare result (untagged): a client knows which variant to
/// expect from the command it sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CommandResult {
    /// `ListGames`.
    Games(Vec<GameSummary>),
    /// `Status`.
    Status(crate::model::DaemonStatus),
    /// `ListPeers`.
    Peers(Vec<crate::model::KnownPeer>),
    /// `GetPeerCount`.
    PeerCount(PeerCountResult),
    /// `Subscribe`.
    Subscribed(SubscribeResult),
    /// `SetGameDir`.
    GameDirSet(SetGameDirResult),
    /// `GetGame`, `FetchLatestFromPeers`.
    GameFiles(GameFilesResult),
    /// `DownloadGameFiles`.
    DownloadStarted(DownloadStarted),
    /// `CancelDownload`.
    CancelRequested(CancelRequested),
    /// `InstallGame`, `UninstallGame`.
    OperationStarted(OperationStarted),
    /// `ListGameFiles`.
    GameFilesPage(GameFilesPage),
    /// `SetLimits`: the limits now in effect.
    Limits(RateLimits),
}

/// Result of `ListGameFiles`: one page of a game's file list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameFilesPage {
    pub id: GameId,
    pub version: crate::model::Version,
    /// Index of the first entry of this page.
    pub offset: u64,
    pub files: Vec<GameFile>,
    /// The `offset` of the next page; `None` on the last one.
    pub next: Option<u64>,
}

/// Result of `CancelDownload`: the download was told to stop; it ends with
/// `DownloadGameFilesCancelled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequested {
    pub id: GameId,
}

/// Result of `InstallGame` and `UninstallGame`: the operation started; its
/// outcome comes as events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStarted {
    pub id: GameId,
}

/// Result of `SetGameDir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetGameDirResult {
    /// The directory now in use.
    pub path: PathBuf,
    /// Cataloged games found in it.
    pub games: u32,
}

/// Result of `GetGame` and `FetchLatestFromPeers` (also sent as the
/// `GotGameFiles` event): the file list's summary. Its entries are paged
/// with `ListGameFiles`; chunk hashes never leave the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameFilesResult {
    pub id: GameId,
    /// The latest version, which these files are.
    pub version: crate::model::Version,
    /// Entries (files and folders).
    pub files: u32,
    /// Bytes of its files.
    pub bytes: u64,
    /// Peers that serve it.
    pub peers: u32,
}

/// Result of `DownloadGameFiles`: the download started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadStarted {
    pub id: GameId,
    pub files: u32,
    pub bytes: u64,
}

/// Result of `GetPeerCount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCountResult {
    pub count: u32,
}

/// Result of `Subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Sequence number of the snapshot event that follows.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_either_result_or_error() {
        let ok = ServerMessage::Reply(Reply {
            id: Some(3),
            outcome: Outcome::Result(serde_json::json!({"count": 0})),
        });
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "reply", "id": 3, "result": {"count": 0}})
        );
        let err = ServerMessage::Reply(Reply {
            id: None,
            outcome: Outcome::Error(IpcError::new(ErrorCode::MalformedJson, "x")),
        });
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "reply", "id": null, "error": {"code": "malformed_json", "message": "x"}})
        );
        assert_eq!(serde_json::from_value::<ServerMessage>(json).unwrap(), err);
    }

    #[test]
    fn the_encoder_refuses_a_line_over_the_limit() {
        let page = |entries: usize| {
            ServerMessage::Reply(Reply {
                id: Some(1),
                outcome: Outcome::Result(serde_json::json!({
                    "files": (0..entries)
                        .map(|i| format!("data/textures/level{i:06}/diffuse_albedo.dds"))
                        .collect::<Vec<_>>()
                })),
            })
        };
        let small = page(100).encode().unwrap();
        assert!(small.len() < MAX_LINE_BYTES);
        let err = page(30_000).encode().unwrap_err();
        assert_eq!(err.kind, "reply");
        assert!(err.bytes > MAX_LINE_BYTES, "{err}");
    }

    #[test]
    fn error_code_names_match_their_serialization() {
        let mut names = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(
                names.insert(code.as_str()),
                "{} listed twice",
                code.as_str()
            );
        }
    }

    #[test]
    fn command_names_match_their_type_tag() {
        let id = GameId::new("x").unwrap();
        let commands = [
            PeerCommand::ListGames,
            PeerCommand::GetGame { id: id.clone() },
            PeerCommand::FetchLatestFromPeers { id: id.clone() },
            PeerCommand::DownloadGameFiles {
                id: id.clone(),
                files: vec![],
            },
            PeerCommand::ListGameFiles {
                id: id.clone(),
                offset: 0,
            },
            PeerCommand::InstallGame { id: id.clone() },
            PeerCommand::UninstallGame { id: id.clone() },
            PeerCommand::SetGameDir { path: "/g".into() },
            PeerCommand::GetPeerCount,
            PeerCommand::Subscribe,
            PeerCommand::Status,
            PeerCommand::ListPeers,
            PeerCommand::CancelDownload { id },
            PeerCommand::SetLimits {
                upload: Some(1),
                download: None,
            },
            PeerCommand::VerifyGame {
                id: GameId::new("y").unwrap(),
                repair: true,
            },
        ];
        assert_eq!(commands.len(), PeerCommand::NAMES.len());
        for command in commands {
            let json = serde_json::to_value(&command).unwrap();
            assert_eq!(json["type"], command.name());
            assert!(PeerCommand::NAMES.contains(&command.name()));
        }
    }
}
