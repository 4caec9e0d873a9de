//! The typed IPC client: one connection to `lanspreadd`, requests by id,
//! replies matched to them, events buffered while a reply is awaited.
//!
//! Shared by `lanspreadctl` and the daemon's tests, so both speak the
//! protocol exactly one way.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde::de::DeserializeOwned;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use crate::ipc::{
    CancelRequested, ClientRequest, DownloadStarted, EventMessage, GameFilesPage, GameFilesResult,
    Hello, IpcError, MAX_LINE_BYTES, OperationStarted, Outcome, PROTOCOL_VERSION, PeerCommand,
    PeerCountResult, ServerMessage, SetGameDirResult, SubscribeResult,
};
use crate::model::{DaemonStatus, GameFile, GameId, GameSummary, PeerInfo};

/// Socket file name inside the runtime directory.
pub const SOCKET_FILE_NAME: &str = "lanspreadd.sock";

/// The platform's default socket path (`docs/ipc.md#transport`): under
/// systemd `$RUNTIME_DIRECTORY`, as root `/run/lanspread/`, otherwise
/// `$XDG_RUNTIME_DIR/lanspread/` (falling back to the temp dir).
pub fn default_socket_path() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("RUNTIME_DIRECTORY") {
        // systemd may list several directories separated by ':'.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return PathBuf::from(first).join(SOCKET_FILE_NAME);
    }
    if is_root() {
        return PathBuf::from("/run/lanspread").join(SOCKET_FILE_NAME);
    }
    env("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("lanspread")
        .join(SOCKET_FILE_NAME)
}

#[cfg(unix)]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach lanspreadd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to lanspreadd failed")]
    Io(#[source] std::io::Error),
    #[error("lanspreadd sent a line this client cannot read")]
    Line(#[source] LinesCodecError),
    #[error("lanspreadd sent an undecodable message: {line}")]
    Decode {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("lanspreadd speaks IPC protocol {daemon}, this client speaks {client}")]
    ProtocolMismatch { daemon: u32, client: u32 },
    #[error("lanspreadd sent an unexpected message: {0}")]
    Unexpected(String),
    #[error("lanspreadd closed the connection{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },
    #[error("lanspreadd refused the request: {0}")]
    Daemon(#[source] IpcError),
}

impl ClientError {
    /// True when the daemon could not be reached at all (exit code 3 in
    /// `lanspreadctl`).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// The daemon's error, if the daemon answered with one.
    pub fn daemon_error(&self) -> Option<&IpcError> {
        match self {
            Self::Daemon(err) => Some(err),
            _ => None,
        }
    }
}

/// One connection to `lanspreadd`.
#[derive(Debug)]
pub struct IpcClient {
    framed: Framed<Stream, LinesCodec>,
    hello: Hello,
    /// Next request id; ids are unique per connection.
    next_id: u64,
    /// Events that arrived while a reply was awaited, in order.
    pending_events: VecDeque<EventMessage>,
}

impl IpcClient {
    /// Connects to the daemon at `socket` and reads its hello.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let connect_error = |source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        };
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(connect_error)?;
        let stream = Stream::connect(name).await.map_err(connect_error)?;
        let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
        let hello = match read_message(&mut framed).await? {
            ServerMessage::Hello(hello) => hello,
            ServerMessage::Closing { reason } => {
                return Err(ClientError::Closed {
                    reason: Some(reason),
                });
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        if hello.protocol != PROTOCOL_VERSION {
            return Err(ClientError::ProtocolMismatch {
                daemon: hello.protocol,
                client: PROTOCOL_VERSION,
            });
        }
        Ok(Self {
            framed,
            hello,
            next_id: 1,
            pending_events: VecDeque::new(),
        })
    }

    /// The daemon's greeting (version, peer id, this connection's access).
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends `command` and waits for its reply's raw result. The typed
    /// methods below are the way to call the daemon; this is for programs
    /// that relay commands they do not interpret (and protocol tests).
    pub async fn request(
        &mut self,
        command: PeerCommand,
    ) -> Result<serde_json::Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_string(&ClientRequest { id, command })
            .expect("a ClientRequest always serializes");
        self.framed.send(line).await.map_err(|err| match err {
            LinesCodecError::Io(io) => ClientError::Io(io),
            other => ClientError::Line(other),
        })?;
        loop {
            match read_message(&mut self.framed).await? {
                ServerMessage::Reply(reply) if reply.id == Some(id) => {
                    return match reply.outcome {
                        Outcome::Result(value) => Ok(value),
                        Outcome::Error(err) => Err(ClientError::Daemon(err)),
                    };
                }
                ServerMessage::Event(event) => self.pending_events.push_back(event),
                ServerMessage::Closing { reason } => {
                    return Err(ClientError::Closed {
                        reason: Some(reason),
                    });
                }
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            }
        }
    }

    /// Sends `command` and decodes its result as `T`.
    async fn call<T: DeserializeOwned>(&mut self, command: PeerCommand) -> Result<T, ClientError> {
        let value = self.request(command).await?;
        serde_json::from_value(value.clone()).map_err(|source| ClientError::Decode {
            line: value.to_string(),
            source,
        })
    }

    /// `ListGames`: the merged library.
    pub async fn list_games(&mut self) -> Result<Vec<GameSummary>, ClientError> {
        self.call(PeerCommand::ListGames).await
    }

    /// `Status`.
    pub async fn status(&mut self) -> Result<DaemonStatus, ClientError> {
        self.call(PeerCommand::Status).await
    }

    /// `ListPeers`.
    pub async fn list_peers(&mut self) -> Result<Vec<PeerInfo>, ClientError> {
        self.call(PeerCommand::ListPeers).await
    }

    /// `GetPeerCount`: connected peers.
    pub async fn peer_count(&mut self) -> Result<u32, ClientError> {
        Ok(self
            .call::<PeerCountResult>(PeerCommand::GetPeerCount)
            .await?
            .count)
    }

    /// `SetGameDir`.
    pub async fn set_game_dir(&mut self, path: &Path) -> Result<SetGameDirResult, ClientError> {
        self.call(PeerCommand::SetGameDir {
            path: path.to_owned(),
        })
        .await
    }

    /// `GetGame`: the file list of the latest version among peers.
    pub async fn get_game(&mut self, id: &GameId) -> Result<GameFilesResult, ClientError> {
        self.call(PeerCommand::GetGame { id: id.clone() }).await
    }

    /// `FetchLatestFromPeers`: like [`get_game`](Self::get_game), for an
    /// update.
    pub async fn fetch_latest(&mut self, id: &GameId) -> Result<GameFilesResult, ClientError> {
        self.call(PeerCommand::FetchLatestFromPeers { id: id.clone() })
            .await
    }

    /// `ListGameFiles`: one page of the file list fetched last.
    pub async fn list_game_files(
        &mut self,
        id: &GameId,
        offset: u64,
    ) -> Result<GameFilesPage, ClientError> {
        self.call(PeerCommand::ListGameFiles {
            id: id.clone(),
            offset,
        })
        .await
    }

    /// Every entry of the file list fetched last, page by page.
    pub async fn game_files(&mut self, id: &GameId) -> Result<Vec<GameFile>, ClientError> {
        let mut files = Vec::new();
        let mut offset = Some(0);
        while let Some(at) = offset {
            let page = self.list_game_files(id, at).await?;
            files.extend(page.files);
            offset = page.next;
        }
        Ok(files)
    }

    /// `DownloadGameFiles`: starts a download of the files at `paths`
    /// (empty: all) of the file list fetched last.
    pub async fn download(
        &mut self,
        id: &GameId,
        files: Vec<String>,
    ) -> Result<DownloadStarted, ClientError> {
        self.call(PeerCommand::DownloadGameFiles {
            id: id.clone(),
            files,
        })
        .await
    }

    /// `CancelDownload`.
    pub async fn cancel_download(&mut self, id: &GameId) -> Result<CancelRequested, ClientError> {
        self.call(PeerCommand::CancelDownload { id: id.clone() })
            .await
    }

    /// `InstallGame`: starts an install (or an update, when installed).
    pub async fn install(&mut self, id: &GameId) -> Result<OperationStarted, ClientError> {
        self.call(PeerCommand::InstallGame { id: id.clone() }).await
    }

    /// `UninstallGame`.
    pub async fn uninstall(&mut self, id: &GameId) -> Result<OperationStarted, ClientError> {
        self.call(PeerCommand::UninstallGame { id: id.clone() })
            .await
    }

    /// Starts the event stream; the first event is the library snapshot.
    pub async fn subscribe(&mut self) -> Result<SubscribeResult, ClientError> {
        self.call(PeerCommand::Subscribe).await
    }

    /// The next pushed event (after [`subscribe`](Self::subscribe)).
    pub async fn next_event(&mut self) -> Result<EventMessage, ClientError> {
        if let Some(event) = self.pending_events.pop_front() {
            return Ok(event);
        }
        match read_message(&mut self.framed).await? {
            ServerMessage::Event(event) => Ok(event),
            ServerMessage::Closing { reason } => Err(ClientError::Closed {
                reason: Some(reason),
            }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

async fn read_message(
    framed: &mut Framed<Stream, LinesCodec>,
) -> Result<ServerMessage, ClientError> {
    match framed.next().await {
        None => Err(ClientError::Closed { reason: None }),
        Some(Err(LinesCodecError::Io(err))) => Err(ClientError::Io(err)),
        Some(Err(err)) => Err(ClientError::Line(err)),
        Some(Ok(line)) => {
            serde_json::from_str(&line).map_err(|source| ClientError::Decode { line, source })
        }
    }
}
