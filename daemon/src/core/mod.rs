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
use std::sync::Arc;
use std::time::Instant;

use lanspread_proto::ipc::{
    CommandResult, ErrorCode, EventMessage, IpcError, PeerCommand, PeerCountResult, PeerEvent,
    SubscribeResult,
};
use lanspread_proto::model::{GameId, GameSummary, Preparing};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::download::gather::GatheredManifest;
use crate::event_sender::EventSender;
use crate::identity::Identity;
use crate::library::LocalLibrary;
use crate::monitor::MonitorEvent;
use crate::peer_db::PeerGameDb;
use crate::ping::PingTarget;
use crate::runtime::PeerRuntimeConfig;
use crate::serve::ServedLibrary;

mod downloads;
mod events;
mod install;
mod limits;
mod peers;
mod scan;
mod space;
mod status;
mod verify;

pub use events::{CommandOutcome, DaemonEvent};
pub use scan::Scanner;
use status::RuntimeSlot;

/// Events kept for subscribers that fall behind; a subscriber further
/// behind than this is disconnected with a reason.
pub const EVENT_BUFFER: usize = 1024;

/// Commands queued for the core before senders wait.
const INBOX_CAPACITY: usize = 256;

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
    /// Walks the game directory off the core (owns the catalog, index
    /// and state dir handles it needs).
    scanner: Scanner,
    started: Instant,
    /// The game directory in use; `None` until one is set.
    game_dir: Option<PathBuf>,
    /// The last scan of `game_dir`.
    library: LocalLibrary,
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
    /// What the monitor watches: the game directory, minus the roots
    /// `operations` write.
    watch_target: watch::Sender<crate::monitor::WatchTarget>,
    /// Where the monitor's changes come from (notify by default).
    change_source: Arc<dyn crate::monitor::ChangeSource>,
    /// Rescans held back while an operation runs on the game; they run
    /// when it ends.
    held_rescans: std::collections::HashSet<GameId>,
    /// Local games whose file lists the preparer is still computing.
    preparing: std::collections::HashMap<GameId, Preparing>,
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
    /// The upload and download limits the transport obeys (`SetLimits`).
    limits: crate::transport::RateLimiters,
    /// What the running downloads hold, served to peers downloading the
    /// same manifest.
    swarm: Arc<crate::swarm::Swarm>,
    /// Upload totals per peer address at the last report, and when.
    upload_totals: std::collections::HashMap<std::net::IpAddr, (u64, Instant)>,
    /// Per peer, the round-trip time last published and when.
    rtt_published: std::collections::HashMap<String, (u64, Instant)>,
}

/// What [`Daemon::new`] needs.
#[derive(Debug)]
pub struct DaemonParts {
    pub identity: Arc<Identity>,
    pub scanner: Scanner,
    pub game_dir: Option<PathBuf>,
    pub library: LocalLibrary,
    pub peer_runtime: PeerRuntimeConfig,
    pub unpacker: Arc<dyn crate::install::Unpacker>,
    pub change_source: Arc<dyn crate::monitor::ChangeSource>,
}

/// An operation running on a game.
#[derive(Debug)]
enum Operation {
    /// A download, cancellable; once it runs, where peers that start
    /// holding its manifest are sent (see `Daemon::offer_sources`).
    Download(CancellationToken, Option<downloads::SourceFeed>),
    Install,
    Uninstall,
    /// A verify (and repair) of the game's files.
    Verify,
}

impl Daemon {
    /// Builds the core and the handle that feeds it.
    pub fn new(parts: DaemonParts) -> (Self, CoreHandle, mpsc::Receiver<DaemonEvent>) {
        let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let served = ServedLibrary::new(parts.game_dir.clone(), &parts.library, 1);
        let limits = parts.peer_runtime.limits.clone();
        let daemon = Self {
            identity: parts.identity,
            catalog: Arc::clone(&parts.scanner.catalog),
            scanner: parts.scanner,
            started: Instant::now(),
            game_dir: parts.game_dir,
            library: parts.library,
            peers: PeerGameDb::default(),
            served: watch::channel(Arc::new(served)).0,
            ping_targets: watch::channel(Vec::new()).0,
            runtime: RuntimeSlot::NotStarted(parts.peer_runtime),
            discovery_failure: None,
            mdns_visible: false,
            manifests: Default::default(),
            operations: Default::default(),
            unpacker: parts.unpacker,
            watch_target: watch::channel(Default::default()).0,
            change_source: parts.change_source,
            held_rescans: Default::default(),
            preparing: Default::default(),
            rescans: 0,
            events,
            last_seq: 0,
            scan_generation: 0,
            inbox: inbox.clone(),
            limits,
            swarm: Default::default(),
            upload_totals: Default::default(),
            rtt_published: Default::default(),
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
        let game_dir = self.game_dir.clone();
        self.watch_target
            .send_modify(|target| target.game_dir = game_dir);
        let monitor_stop = CancellationToken::new();
        let monitor = tokio::spawn(crate::monitor::run(
            Arc::clone(&self.change_source),
            self.watch_target.subscribe(),
            EventSender::<MonitorEvent>::new(self.inbox.clone()),
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

    /// The one dispatch.
    fn handle(&mut self, event: DaemonEvent) {
        match event {
            DaemonEvent::Command { command, reply } => self.on_command(command, reply),
            DaemonEvent::Scanned(scanned) => self.on_scanned(scanned),
            DaemonEvent::Discovery(event) => self.on_discovery(event),
            DaemonEvent::Ping(event) => self.on_ping(event),
            DaemonEvent::ManifestGathered(gathered) => self.on_manifest_gathered(gathered),
            DaemonEvent::SpaceChecked(checked) => self.on_space_checked(checked),
            DaemonEvent::Download(event) => self.on_download_event(event),
            DaemonEvent::Install(event) => self.on_install_event(event),
            DaemonEvent::Verify(event) => self.on_verify_event(event),
            DaemonEvent::Monitor(MonitorEvent::RootChanged(id)) => self.on_root_changed(id),
            DaemonEvent::Monitor(MonitorEvent::FullRescan) => self.rescan(),
            DaemonEvent::Prepare(event) => self.on_prepare_event(event),
            DaemonEvent::Gather(event) => self.on_gather_event(event),
            DaemonEvent::Serve(event) => self.on_serve_event(event),
        }
    }

    fn on_command(&mut self, command: PeerCommand, reply: oneshot::Sender<CommandOutcome>) {
        let result = match command {
            PeerCommand::ListGames => Ok(CommandResult::Games(self.merged_library())),
            PeerCommand::Status => Ok(CommandResult::Status(self.status())),
            PeerCommand::GetPeerCount => Ok(CommandResult::PeerCount(PeerCountResult {
                count: self.peer_count(),
            })),
            PeerCommand::ListPeers => Ok(CommandResult::Peers(
                self.peers.known(std::time::Instant::now()),
            )),
            PeerCommand::Subscribe => {
                let _ = reply.send(self.on_subscribe());
                return;
            }
            PeerCommand::SetGameDir { path } => return self.on_set_game_dir(path, reply),
            PeerCommand::GetGame { id } | PeerCommand::FetchLatestFromPeers { id } => {
                return self.on_get_game(id, reply);
            }
            PeerCommand::DownloadGameFiles { id, files } => {
                return self.on_download_request(id, files, reply);
            }
            PeerCommand::ListGameFiles { id, offset } => self
                .list_game_files(id, offset)
                .map(CommandResult::GameFilesPage),
            PeerCommand::CancelDownload { id } => {
                self.cancel_download(id).map(CommandResult::CancelRequested)
            }
            PeerCommand::InstallGame { id } => self
                .start_install(id, false)
                .map(CommandResult::OperationStarted),
            PeerCommand::UninstallGame { id } => self
                .start_uninstall(id)
                .map(CommandResult::OperationStarted),
            PeerCommand::VerifyGame { id, repair } => self
                .start_verify(id, repair)
                .map(CommandResult::OperationStarted),
            PeerCommand::SetLimits { upload, download } => {
                Ok(CommandResult::Limits(self.set_limits(upload, download)))
            }
        };
        // The client may have gone; nothing to do then.
        let _ = reply.send(CommandOutcome::Reply(result));
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

    /// Starts `operation` on `id`: the monitor stops watching its root
    /// until it ends (the daemon's own writes are not changes to notice).
    fn operation_started(&mut self, id: GameId, operation: Operation) {
        self.operations.insert(id, operation);
        self.watch_operations();
    }

    /// An operation on `id` ended: it was rescanned with everything else,
    /// which also covers a rescan held back meanwhile.
    fn operation_ended(&mut self, id: &GameId) {
        self.operations.remove(id);
        self.watch_operations();
        if self.held_rescans.remove(id) {
            tracing::debug!(game = %id, "held rescan runs now");
        }
        self.rescan();
    }

    /// Tells the monitor which roots the running operations write.
    fn watch_operations(&self) {
        let busy: std::collections::BTreeSet<GameId> = self.operations.keys().cloned().collect();
        self.watch_target.send_if_modified(|target| {
            let changed = target.busy != busy;
            target.busy = busy;
            changed
        });
    }

    /// Tells peers (new revision) and clients (snapshot) that the local
    /// library changed.
    fn local_library_changed(&mut self) {
        let library = &self.library;
        self.preparing
            .retain(|id, _| library.games.contains_key(id));
        let current = Arc::clone(&self.served.borrow());
        let next = ServedLibrary::new(self.game_dir.clone(), &self.library, current.revision);
        if !next.same_announcement(&current) {
            let revision = current.revision + 1;
            self.served
                .send_replace(Arc::new(ServedLibrary { revision, ..next }));
        }
        self.publish_library();
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
        let mut games = self.peers.merged(&self.library, &self.catalog);
        for game in &mut games {
            game.preparing = self.preparing.get(&game.id).copied();
        }
        games
    }
}
