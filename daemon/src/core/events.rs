//! What reaches the core: [`DaemonEvent`], the one closed enum its
//! dispatch matches on, and [`CommandOutcome`], the typed answer to a
//! client command. Each long-lived task sends its own event type through an
//! [`EventSender`](crate::event_sender::EventSender); the `From` impls
//! below are where those become daemon events.

use lanspread_proto::ipc::{CommandResult, EventMessage, IpcError, PeerCommand, SubscribeResult};
use tokio::sync::{broadcast, oneshot};

use super::downloads::ManifestGathered;
use super::install::InstallEvent;
use super::scan::Scanned;
use super::space::SpaceChecked;
use crate::discovery::DiscoveryEvent;
use crate::download::DownloadEvent;
use crate::download::gather::GatherEvent;
use crate::monitor::MonitorEvent;
use crate::ping::PingEvent;
use crate::prepare::PrepareEvent;
use crate::transport::ServeEvent;
use crate::verify::VerifyEvent;

/// Everything that can change the daemon's state.
#[derive(Debug)]
pub enum DaemonEvent {
    /// A client command (already authorized by its connection).
    Command {
        command: PeerCommand,
        reply: oneshot::Sender<CommandOutcome>,
    },
    /// A scan of the game directory (or of one root) came back.
    Scanned(Scanned),
    /// Discovery learned something.
    Discovery(DiscoveryEvent),
    /// Pinging learned something.
    Ping(PingEvent),
    /// Peers answered (or not) with the file list of a game.
    ManifestGathered(ManifestGathered),
    /// The free-space check before a download came back.
    SpaceChecked(SpaceChecked),
    /// A download progressed or ended.
    Download(DownloadEvent),
    /// An install or uninstall progressed or ended.
    Install(InstallEvent),
    /// A verify progressed or ended.
    Verify(VerifyEvent),
    /// The local game monitor asks for a rescan.
    Monitor(MonitorEvent),
    /// The manifest preparer progressed or finished a game.
    Prepare(PrepareEvent),
    /// `GetGame` is waiting for peers that prepare the file list.
    Gather(GatherEvent),
    /// The QUIC server learned that a peer follows one of our downloads.
    Serve(ServeEvent),
}

impl From<ServeEvent> for DaemonEvent {
    fn from(event: ServeEvent) -> Self {
        Self::Serve(event)
    }
}

/// The answer to a command.
#[derive(Debug)]
pub enum CommandOutcome {
    /// A plain reply.
    Reply(Result<CommandResult, IpcError>),
    /// `Subscribe` succeeded: the snapshot to send first, then the live
    /// events. Taken together inside the core, so no event falls between.
    Subscribed {
        result: SubscribeResult,
        snapshot: EventMessage,
        events: broadcast::Receiver<EventMessage>,
    },
}

impl From<DiscoveryEvent> for DaemonEvent {
    fn from(event: DiscoveryEvent) -> Self {
        Self::Discovery(event)
    }
}

impl From<PingEvent> for DaemonEvent {
    fn from(event: PingEvent) -> Self {
        Self::Ping(event)
    }
}

impl From<DownloadEvent> for DaemonEvent {
    fn from(event: DownloadEvent) -> Self {
        Self::Download(event)
    }
}

impl From<PrepareEvent> for DaemonEvent {
    fn from(event: PrepareEvent) -> Self {
        Self::Prepare(event)
    }
}

impl From<GatherEvent> for DaemonEvent {
    fn from(event: GatherEvent) -> Self {
        Self::Gather(event)
    }
}

impl From<VerifyEvent> for DaemonEvent {
    fn from(event: VerifyEvent) -> Self {
        Self::Verify(event)
    }
}

impl From<MonitorEvent> for DaemonEvent {
    fn from(event: MonitorEvent) -> Self {
        Self::Monitor(event)
    }
}
