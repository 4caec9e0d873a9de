//! The daemon core: the one owner of the daemon's state.
//!
//! Everything that changes state arrives as a [`DaemonEvent`] on one
//! channel and is handled, one at a time, by [`Daemon::handle`]'s single
//! `match`, which calls an `on_<verb>` method. Slow work (filesystem scans)
//! runs on blocking threads and comes back as another event, so the core
//! never waits on I/O and never holds a lock across `.await`.
//!
//! The core knows nothing about sockets: IPC connections reach it through a
//! cloneable [`CoreHandle`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lanspread_proto::ipc::{
    ErrorCode, EventMessage, IpcError, PROTOCOL_VERSION, PeerCommand, PeerCountResult, PeerEvent,
    SetGameDirResult, SubscribeResult,
};
use lanspread_proto::model::{DaemonStatus, GameSummary, UnavailableComponent};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use lanspread_proto::model::GameId;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::discovery::DiscoveryEvent;
use crate::download::DownloadEvent;
use crate::download::gather::GatheredManifest;
use crate::game_dir::validate_game_dir;
use crate::library::{LibraryIndex, LocalLibrary, scan_local_library};
use crate::peer_db::{Discovered, PeerGameDb};
use crate::ping::{PingEvent, PingTarget};
use crate::runtime::{PeerRuntime, PeerRuntimeConfig, RuntimeFeeds};
use crate::serve::ServedLibrary;
use crate::state_dir::StateDir;

mod downloads;
mod install;

/// Events kept for subscribers that fall behind; a subscriber further
/// behind than this is disconnected with a reason.
pub const EVENT_BUFFER: usize = 1024;

/// Commands queued for the core before senders wait.
const INBOX_CAPACITY: usize = 256;

/// Everything that can change the daemon's state.
#[derive(Debug)]
pub enum DaemonEvent {
    /// A client command (already authorized by its connection).
    Command {
        command: PeerCommand,
        reply: oneshot::Sender<CommandOutcome>,
    },
    /// A game directory was validated and scanned (or failed to be).
    GameDirScanned(GameDirScan),
    /// Discovery learned something.
    Discovery(DiscoveryEvent),
    /// Pinging learned something.
    Ping(PingEvent),
    /// Peers answered (or not) with the file list of a game.
    ManifestGathered(downloads::ManifestGathered),
    /// A download progressed or ended.
    Download(DownloadEvent),
    /// An install or uninstall progressed or ended.
    Install(install::InstallEvent),
    /// The monitor saw a game root change (debounced).
    RootChanged(GameId),
    /// A single root was rescanned.
    RootScanned {
        game_dir: PathBuf,
        id: GameId,
        game: Option<crate::library::LocalGame>,
    },
    /// The monitor asks for a full rescan (fallback timer, re-watch).
    FullRescan,
}

/// The answer to a command.
#[derive(Debug)]
pub enum CommandOutcome {
    /// A plain reply.
    Reply(Result<serde_json::Value, IpcError>),
    /// `Subscribe` succeeded: the snapshot to send first, then the live
    /// events. Taken together inside the core, so no event falls between.
    Subscribed {
        result: SubscribeResult,
        snapshot: EventMessage,
        events: broadcast::Receiver<EventMessage>,
    },
}

/// The result of scanning a game directory off the core.
#[derive(Debug)]
pub struct GameDirScan {
    purpose: ScanPurpose,
    result: Result<(PathBuf, LocalLibrary), IpcError>,
}

/// Why a scan ran.
#[derive(Debug)]
enum ScanPurpose {
    /// `SetGameDir`: validated, then scanned. Older generations are stale.
    SetGameDir {
        generation: u64,
        reply: oneshot::Sender<CommandOutcome>,
    },
    /// The current directory changed (an operation ended); applied only if
    /// it is still the current directory.
    Rescan,
}

/// Fixed facts about this daemon, shared with connections.
#[derive(Debug)]
pub struct Identity {
    pub peer_id: String,
    pub name: String,
    pub daemon_version: &'static str,
}

/// A cloneable way to talk to the core.
#[derive(Clone, Debug)]
pub struct CoreHandle {
    inbox: mpsc::Sender<DaemonEvent>,
}

impl CoreHandle {
    /// Sends `command` to the core and waits for its outcome.
    pub async fn command(&self, command: PeerCommand) -> CommandOutcome {
        let (reply, outcome) = oneshot::channel();
        let stopped = || {
            CommandOutcome::Reply(Err(IpcError::new(
                ErrorCode::Internal,
                "the daemon core is shutting down",
            )))
        };
        if self
            .inbox
            .send(DaemonEvent::Command { command, reply })
            .await
            .is_err()
        {
            return stopped();
        }
        outcome.await.unwrap_or_else(|_| stopped())
    }
}

/// The daemon's state and its one dispatch.
#[derive(Debug)]
pub struct Daemon {
    identity: Arc<Identity>,
    catalog: Arc<Catalog>,
    state_dir: StateDir,
    started: Instant,
    /// The game directory in use; `None` until one is set.
    game_dir: Option<PathBuf>,
    /// The last scan of `game_dir`.
    library: LocalLibrary,
    /// The library index, used only inside blocking scan tasks (a std
    /// mutex: it is never held across `.await`).
    index: Arc<Mutex<LibraryIndex>>,
    /// Known peers, their liveness and their games.
    peers: PeerGameDb,
    /// What peers may see; read by the QUIC server.
    served: watch::Sender<Arc<ServedLibrary>>,
    /// Peers to ping; read by the ping task.
    ping_targets: watch::Sender<Vec<PingTarget>>,
    /// The peer runtime, once a game directory is known.
    runtime: RuntimeSlot,
    /// Why discovery is not running, while it is not.
    discovery_failure: Option<String>,
    /// Our own mDNS record was seen by our browser (since the last failure).
    mdns_visible: bool,
    /// File lists gathered from peers (`GetGame`), for `DownloadGameFiles`.
    manifests: std::collections::HashMap<GameId, GatheredManifest>,
    /// Games with an operation running. One operation per game at a time;
    /// a second is refused with `busy`.
    operations: std::collections::HashMap<GameId, Operation>,
    /// Extracts archives for installs (injected; libarchive by default).
    unpacker: Arc<dyn crate::install::Unpacker>,
    /// The game directory, for the monitor to follow.
    watched_dir: watch::Sender<Option<PathBuf>>,
    /// Where the monitor's changes come from (notify by default).
    change_source: Arc<dyn crate::monitor::ChangeSource>,
    /// Rescans held back while an operation runs on the game; they run
    /// when it ends.
    held_rescans: std::collections::HashSet<GameId>,
    /// Roots rescanned after changes (reported in `Status`).
    rescans: u64,
    /// Live event stream to subscribers.
    events: broadcast::Sender<EventMessage>,
    /// Sequence number of the last published event.
    last_seq: u64,
    /// Generation of the newest game-directory scan requested.
    scan_generation: u64,
    /// Sender side of the inbox, for blocking tasks to report back.
    inbox: mpsc::Sender<DaemonEvent>,
}

/// The peer runtime's lifecycle.
#[derive(Debug)]
enum RuntimeSlot {
    /// Waiting for a game directory.
    NotStarted(PeerRuntimeConfig),
    Running(PeerRuntime),
    /// Starting failed (for example the QUIC port is taken).
    Failed(String),
    /// Taken for shutdown.
    Stopped,
}

/// What [`Daemon::new`] needs.
#[derive(Debug)]
pub struct DaemonParts {
    pub identity: Arc<Identity>,
    pub catalog: Arc<Catalog>,
    pub state_dir: StateDir,
    pub game_dir: Option<PathBuf>,
    pub library: LocalLibrary,
    pub index: Arc<Mutex<LibraryIndex>>,
    pub peer_runtime: PeerRuntimeConfig,
    pub unpacker: Arc<dyn crate::install::Unpacker>,
    pub change_source: Arc<dyn crate::monitor::ChangeSource>,
}

/// An operation running on a game.
#[derive(Debug)]
enum Operation {
    /// A download, cancellable.
    Download(CancellationToken),
    Install,
    Uninstall,
}

impl Daemon {
    /// Builds the core and the handle that feeds it.
    pub fn new(parts: DaemonParts) -> (Self, CoreHandle, mpsc::Receiver<DaemonEvent>) {
        let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let served = ServedLibrary::new(parts.game_dir.clone(), &parts.library, 1);
        let daemon = Self {
            identity: parts.identity,
            catalog: parts.catalog,
            state_dir: parts.state_dir,
            started: Instant::now(),
            game_dir: parts.game_dir,
            library: parts.library,
            index: parts.index,
            peers: PeerGameDb::default(),
            served: watch::channel(Arc::new(served)).0,
            ping_targets: watch::channel(Vec::new()).0,
            runtime: RuntimeSlot::NotStarted(parts.peer_runtime),
            discovery_failure: None,
            mdns_visible: false,
            manifests: Default::default(),
            operations: Default::default(),
            unpacker: parts.unpacker,
            watched_dir: watch::channel(None).0,
            change_source: parts.change_source,
            held_rescans: Default::default(),
            rescans: 0,
            events,
            last_seq: 0,
            scan_generation: 0,
            inbox: inbox.clone(),
        };
        (daemon, CoreHandle { inbox }, inbox_rx)
    }

    /// Drains the inbox until every handle is gone or `shutdown` fires.
    pub async fn run(
        mut self,
        mut inbox: mpsc::Receiver<DaemonEvent>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        if self.game_dir.is_some() {
            self.start_peer_runtime();
        }
        self.watched_dir.send_replace(self.game_dir.clone());
        let monitor_stop = CancellationToken::new();
        let monitor = tokio::spawn(crate::monitor::run(
            Arc::clone(&self.change_source),
            self.watched_dir.subscribe(),
            self.inbox.clone(),
            monitor_stop.clone(),
        ));
        loop {
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                () = &mut shutdown => break,
            }
        }
        monitor_stop.cancel();
        let _ = monitor.await;
        if let RuntimeSlot::Running(runtime) =
            std::mem::replace(&mut self.runtime, RuntimeSlot::Stopped)
        {
            runtime.stop().await;
        }
        tracing::debug!("daemon core stopped");
    }

    /// Starts the QUIC server, discovery and pings (once).
    fn start_peer_runtime(&mut self) {
        let RuntimeSlot::NotStarted(config) = &self.runtime else {
            return;
        };
        let feeds = RuntimeFeeds {
            served: self.served.subscribe(),
            targets: self.ping_targets.subscribe(),
            index: Arc::clone(&self.index),
            state_dir: self.state_dir.path().to_owned(),
            inbox: self.inbox.clone(),
        };
        self.runtime = match PeerRuntime::start(config, &self.identity, feeds) {
            Ok(runtime) => {
                tracing::info!(listen = %runtime.listen, "peer runtime started");
                RuntimeSlot::Running(runtime)
            }
            Err(err) => {
                let reason = err_chain(&err);
                tracing::error!(cause = %reason, "peer runtime failed to start");
                self.publish(PeerEvent::RuntimeFailed {
                    component: "transport".into(),
                    reason: reason.clone(),
                });
                RuntimeSlot::Failed(reason)
            }
        };
    }

    /// The one dispatch.
    fn handle(&mut self, event: DaemonEvent) {
        match event {
            DaemonEvent::Command { command, reply } => self.on_command(command, reply),
            DaemonEvent::GameDirScanned(scan) => self.on_game_dir_scanned(scan),
            DaemonEvent::Discovery(event) => self.on_discovery(event),
            DaemonEvent::Ping(event) => self.on_ping(event),
            DaemonEvent::ManifestGathered(gathered) => self.on_manifest_gathered(gathered),
            DaemonEvent::Download(event) => self.on_download_event(event),
            DaemonEvent::Install(event) => self.on_install_event(event),
            DaemonEvent::RootChanged(id) => self.on_root_changed(id),
            DaemonEvent::RootScanned { game_dir, id, game } => {
                self.on_root_scanned(game_dir, id, game)
            }
            DaemonEvent::FullRescan => self.rescan(),
        }
    }

    fn on_command(&mut self, command: PeerCommand, reply: oneshot::Sender<CommandOutcome>) {
        let outcome = match command {
            PeerCommand::ListGames => to_reply(&self.merged_library()),
            PeerCommand::Status => to_reply(&self.status()),
            PeerCommand::GetPeerCount => to_reply(&PeerCountResult {
                count: self.peer_count(),
            }),
            PeerCommand::ListPeers => to_reply(&self.peers.known(std::time::Instant::now())),
            PeerCommand::Subscribe => self.on_subscribe(),
            PeerCommand::SetGameDir { path } => return self.on_set_game_dir(path, reply),
            PeerCommand::GetGame { id } | PeerCommand::FetchLatestFromPeers { id } => {
                return self.on_get_game(id, reply);
            }
            PeerCommand::DownloadGameFiles { id, files } => self.on_download(id, files),
            PeerCommand::CancelDownload { id } => self.on_cancel_download(&id),
            PeerCommand::InstallGame { id } => CommandOutcome::Reply(self.start_install(id, false)),
            PeerCommand::UninstallGame { id } => CommandOutcome::Reply(self.start_uninstall(id)),
        };
        // The client may have gone; nothing to do then.
        let _ = reply.send(outcome);
    }

    fn on_subscribe(&mut self) -> CommandOutcome {
        let events = self.events.subscribe();
        CommandOutcome::Subscribed {
            result: SubscribeResult { seq: self.last_seq },
            snapshot: EventMessage {
                seq: self.last_seq,
                event: PeerEvent::LibrarySnapshot {
                    games: self.merged_library(),
                },
            },
            events,
        }
    }

    /// Validates and scans `path` on a blocking thread; the reply is sent
    /// when the scan comes back as [`DaemonEvent::GameDirScanned`].
    fn on_set_game_dir(&mut self, path: PathBuf, reply: oneshot::Sender<CommandOutcome>) {
        if let Some(busy) = self.operations.keys().next() {
            let err = IpcError::new(
                ErrorCode::Busy,
                format!(
                    "an operation on {busy} is running; cancel it or wait before switching directories"
                ),
            );
            let _ = reply.send(CommandOutcome::Reply(Err(err)));
            return;
        }
        self.scan_generation += 1;
        let generation = self.scan_generation;
        let catalog = Arc::clone(&self.catalog);
        let index = Arc::clone(&self.index);
        let state_dir = self.state_dir.clone();
        let inbox = self.inbox.clone();
        tokio::task::spawn_blocking(move || {
            let result = adopt_game_dir(&path, &catalog, &index, &state_dir);
            let scan = GameDirScan {
                purpose: ScanPurpose::SetGameDir { generation, reply },
                result,
            };
            // The core may be gone (shutdown): then nobody needs the result.
            let _ = inbox.blocking_send(DaemonEvent::GameDirScanned(scan));
        });
    }

    /// Rescans the current game directory off the core (after an
    /// operation changed a root).
    fn rescan(&mut self) {
        let Some(game_dir) = self.game_dir.clone() else {
            return;
        };
        let (catalog, index) = (Arc::clone(&self.catalog), Arc::clone(&self.index));
        let (state_dir, inbox) = (self.state_dir.clone(), self.inbox.clone());
        tokio::task::spawn_blocking(move || {
            let result = scan_game_dir(&game_dir, &catalog, &index, &state_dir)
                .map(|library| (game_dir, library))
                .map_err(|err| IpcError::new(ErrorCode::Internal, err_chain(&*err)));
            let scan = GameDirScan {
                purpose: ScanPurpose::Rescan,
                result,
            };
            let _ = inbox.blocking_send(DaemonEvent::GameDirScanned(scan));
        });
    }

    fn on_game_dir_scanned(&mut self, scan: GameDirScan) {
        let (reply, generation) = match scan.purpose {
            ScanPurpose::SetGameDir { generation, reply } => (Some(reply), Some(generation)),
            ScanPurpose::Rescan => (None, None),
        };
        let outcome = match scan.result {
            Err(err) => Err(err),
            Ok(_) if generation.is_some_and(|g| g != self.scan_generation) => Err(IpcError::new(
                ErrorCode::InvalidGameDir,
                "superseded by a newer SetGameDir request",
            )),
            Ok((path, _)) if generation.is_none() && self.game_dir.as_ref() != Some(&path) => {
                Ok(serde_json::Value::Null) // a rescan of a directory no longer in use
            }
            Ok((path, library)) => {
                let games = library.games.len() as u32;
                let dir_changed = self.game_dir.as_ref() != Some(&path);
                let library_changed = self.library != library;
                self.game_dir = Some(path.clone());
                self.library = library;
                if dir_changed {
                    tracing::info!(game_dir = %path.display(), games, "game directory in use");
                    self.manifests.clear();
                    self.watched_dir.send_replace(Some(path.clone()));
                    self.publish(PeerEvent::GameDirChanged { path: path.clone() });
                }
                if dir_changed || library_changed {
                    self.local_library_changed();
                }
                self.start_peer_runtime();
                serde_json::to_value(SetGameDirResult { path, games }).map_err(internal)
            }
        };
        match reply {
            Some(reply) => {
                let _ = reply.send(CommandOutcome::Reply(outcome));
            }
            None => {
                if let Err(err) = outcome {
                    tracing::warn!(cause = %err.message, "rescan failed");
                }
            }
        }
    }

    /// A root changed on disk: rescan it now, or when the operation
    /// running on it ends.
    fn on_root_changed(&mut self, id: GameId) {
        if self.operations.contains_key(&id) {
            tracing::debug!(game = %id, "rescan held while an operation runs");
            self.held_rescans.insert(id);
            return;
        }
        let Some(game_dir) = self.game_dir.clone() else {
            return;
        };
        let (catalog, index) = (Arc::clone(&self.catalog), Arc::clone(&self.index));
        let (state_dir, inbox) = (self.state_dir.clone(), self.inbox.clone());
        tokio::task::spawn_blocking(move || {
            let game = {
                let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
                let game = crate::library::scan_one_root(&game_dir, &id, &catalog, &mut index);
                if let Err(err) = index.save(state_dir.path()) {
                    tracing::warn!(cause = %err, "cannot save library index");
                }
                game
            };
            let _ = inbox.blocking_send(DaemonEvent::RootScanned { game_dir, id, game });
        });
    }

    fn on_root_scanned(
        &mut self,
        game_dir: PathBuf,
        id: GameId,
        game: Option<crate::library::LocalGame>,
    ) {
        if self.game_dir.as_ref() != Some(&game_dir) || self.operations.contains_key(&id) {
            return; // stale: the directory moved, or an operation began since
        }
        self.rescans += 1;
        let changed = match game {
            Some(game) => self.library.games.insert(id.clone(), game.clone()) != Some(game),
            None => self.library.games.remove(&id).is_some(),
        };
        tracing::debug!(game = %id, changed, "root rescanned after a change");
        if changed {
            self.local_library_changed();
        }
    }

    /// An operation on `id` ended: it was rescanned with everything else,
    /// which also covers a rescan held back meanwhile.
    fn operation_ended(&mut self, id: &GameId) {
        self.operations.remove(id);
        if self.held_rescans.remove(id) {
            tracing::debug!(game = %id, "held rescan runs now");
        }
        self.rescan();
    }

    fn on_discovery(&mut self, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Running => {
                if self.discovery_failure.take().is_some() {
                    tracing::info!("mdns discovery recovered");
                }
            }
            DiscoveryEvent::SelfVisible => self.mdns_visible = true,
            DiscoveryEvent::Failed { reason, retry_in } => {
                self.mdns_visible = false;
                self.publish(PeerEvent::RuntimeFailed {
                    component: "discovery".into(),
                    reason: format!("{reason}; retrying in {retry_in:?}"),
                });
                self.discovery_failure = Some(reason);
            }
            DiscoveryEvent::Found {
                peer_id,
                name,
                addrs,
            } => match self.peers.discovered(&peer_id, &name, &addrs) {
                Discovered::New => {
                    tracing::info!(peer = %peer_id, name = %name, ?addrs, "peer discovered");
                    let peer = self.peers.get(&peer_id).map(|p| p.info.clone());
                    if let Some(peer) = peer {
                        self.publish(PeerEvent::PeerDiscovered { peer });
                    }
                    self.update_ping_targets();
                }
                Discovered::Moved => {
                    tracing::info!(peer = %peer_id, ?addrs, "peer addresses changed");
                    self.update_ping_targets();
                }
                Discovered::Unchanged => {}
            },
            DiscoveryEvent::Gone { peer_id } => {
                // mDNS is a hint: only a peer that also stopped answering
                // pings is forgotten.
                if self.peers.left_mdns(&peer_id) {
                    tracing::info!(peer = %peer_id, "lost peer left mdns, forgotten");
                    self.update_ping_targets();
                }
            }
        }
    }

    fn on_ping(&mut self, event: PingEvent) {
        match event {
            PingEvent::Answered { peer_id, addr, rtt } => {
                self.peers
                    .answered(&peer_id, addr, rtt, std::time::Instant::now());
            }
            PingEvent::Library {
                peer_id,
                revision,
                games,
            } => {
                if self.peers.library(&peer_id, revision, games) {
                    tracing::info!(peer = %peer_id, "peer connected");
                    if let Some(peer) = self.peers.get(&peer_id).map(|p| p.info.clone()) {
                        self.publish(PeerEvent::PeerConnected { peer });
                    }
                    self.publish_peer_count();
                }
                self.publish_library();
            }
            PingEvent::Unreachable { peer_id, reason } => {
                if self.peers.lost(&peer_id) {
                    tracing::warn!(peer = %peer_id, %reason, "peer lost");
                    self.publish(PeerEvent::PeerLost { peer_id });
                    self.publish_peer_count();
                    self.publish_library();
                }
                // A peer that left mDNS and stopped answering is forgotten.
                self.update_ping_targets();
            }
        }
    }

    /// Tells peers (new revision) and clients (snapshot) that the local
    /// library changed.
    fn local_library_changed(&mut self) {
        let current = Arc::clone(&self.served.borrow());
        let next = ServedLibrary::new(self.game_dir.clone(), &self.library, current.revision);
        if !next.same_announcement(&current) {
            let revision = current.revision + 1;
            self.served
                .send_replace(Arc::new(ServedLibrary { revision, ..next }));
        }
        self.publish_library();
    }

    fn update_ping_targets(&mut self) {
        let targets = self
            .peers
            .all()
            .map(|p| PingTarget {
                peer_id: p.info.peer_id.clone(),
                addrs: p.addrs.clone(),
            })
            .collect();
        self.ping_targets.send_replace(targets);
    }

    fn publish_peer_count(&mut self) {
        let count = self.peer_count();
        self.publish(PeerEvent::PeerCountChanged { count });
    }

    fn publish_library(&mut self) {
        let games = self.merged_library();
        self.publish(PeerEvent::LibrarySnapshot { games });
        crate::service::status(self.library.games.len(), self.peer_count());
    }

    /// Stamps `event` with the next sequence number and sends it to every
    /// subscriber. Never blocks: slow subscribers lag and are dropped by
    /// their connection.
    fn publish(&mut self, event: PeerEvent) {
        self.last_seq += 1;
        let _ = self.events.send(EventMessage {
            seq: self.last_seq,
            event,
        });
    }

    /// The library clients see: local games merged with connected peers'.
    fn merged_library(&self) -> Vec<GameSummary> {
        self.peers.merged(&self.library, &self.catalog)
    }

    fn peer_count(&self) -> u32 {
        self.peers.connected_count()
    }

    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            peer_id: self.identity.peer_id.clone(),
            name: self.identity.name.clone(),
            game_dir: self.game_dir.clone(),
            peer_count: self.peer_count(),
            local_games: self.library.games.len() as u32,
            daemon_version: self.identity.daemon_version.to_owned(),
            protocol: PROTOCOL_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
            listen: match &self.runtime {
                RuntimeSlot::Running(runtime) => Some(runtime.listen.to_string()),
                _ => None,
            },
            rescans: self.rescans,
            mdns_visible: self.mdns_visible,
            unavailable: self.unavailable(),
        }
    }

    fn unavailable(&self) -> Vec<UnavailableComponent> {
        let component = |name: &str, reason: String| UnavailableComponent {
            component: name.into(),
            reason,
        };
        let mut missing = Vec::new();
        match &self.runtime {
            RuntimeSlot::NotStarted(_) => missing.push(component(
                "peers",
                "waiting for a game directory (SetGameDir)".into(),
            )),
            RuntimeSlot::Failed(reason) => missing.push(component("transport", reason.clone())),
            RuntimeSlot::Running(_) | RuntimeSlot::Stopped => {}
        }
        if let Some(reason) = &self.discovery_failure {
            missing.push(component("discovery", reason.clone()));
        }
        missing
    }
}

/// Validates `path`, scans it, and remembers it in the state dir.
/// Blocking: runs on a blocking thread.
pub fn adopt_game_dir(
    path: &std::path::Path,
    catalog: &Catalog,
    index: &Mutex<LibraryIndex>,
    state_dir: &StateDir,
) -> Result<(PathBuf, LocalLibrary), IpcError> {
    let invalid =
        |err: &dyn std::error::Error| IpcError::new(ErrorCode::InvalidGameDir, err_chain(err));
    let path = validate_game_dir(path).map_err(|err| invalid(&err))?;
    // Interrupted installs are repaired before anything reads the roots.
    crate::install::recover_all(&path);
    let library = scan_game_dir(&path, catalog, index, state_dir).map_err(|err| invalid(&*err))?;
    state_dir
        .save_game_dir(&path)
        .map_err(|err| IpcError::new(ErrorCode::Internal, err_chain(&err)))?;
    Ok((path, library))
}

/// Scans `game_dir` with the shared index and saves the index. Blocking.
pub fn scan_game_dir(
    game_dir: &std::path::Path,
    catalog: &Catalog,
    index: &Mutex<LibraryIndex>,
    state_dir: &StateDir,
) -> Result<LocalLibrary, Box<dyn std::error::Error + Send + Sync>> {
    // Poisoning only means another scan panicked; the index is a cache.
    let mut index = index
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (library, stats) = scan_local_library(game_dir, catalog, &mut index)?;
    tracing::debug!(game_dir = %game_dir.display(), walked = stats.walked, reused = stats.reused, skipped = stats.skipped, "library scanned");
    if let Err(err) = index.save(state_dir.path()) {
        tracing::warn!(cause = %err, "cannot save library index");
    }
    Ok(library)
}

/// `err` and its sources, joined with ": ".
pub fn err_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn to_reply(value: &impl Serialize) -> CommandOutcome {
    CommandOutcome::Reply(serde_json::to_value(value).map_err(internal))
}

fn internal(err: serde_json::Error) -> IpcError {
    IpcError::new(ErrorCode::Internal, format!("cannot encode reply: {err}"))
}
