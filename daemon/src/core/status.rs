//! The peer runtime's lifecycle as the core sees it (started once a game
//! directory is known) and the `Status` answer built from the core's state.

use std::sync::Arc;

use lanspread_proto::ipc::{ErrorCode, IpcError, PROTOCOL_VERSION, PeerEvent};
use lanspread_proto::model::{DaemonStatus, PreparingGame, UnavailableComponent};

use super::Daemon;
use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::prepare::PrepareEvent;
use crate::runtime::{PeerRuntime, PeerRuntimeConfig, RuntimeFeeds};
use crate::transport::PeerClient;

/// The peer runtime's lifecycle.
#[derive(Debug)]
pub(super) enum RuntimeSlot {
    /// Waiting for a game directory.
    NotStarted(PeerRuntimeConfig),
    Running(PeerRuntime),
    /// Starting failed (for example the QUIC port is taken).
    Failed(String),
    /// Taken for shutdown.
    Stopped,
}

impl Daemon {
    /// Starts the QUIC server, discovery and pings (once).
    pub(super) fn start_peer_runtime(&mut self) {
        let RuntimeSlot::NotStarted(config) = &self.runtime else {
            return;
        };
        let feeds = RuntimeFeeds {
            served: self.served.subscribe(),
            targets: self.ping_targets.subscribe(),
            index: Arc::clone(&self.scanner.index),
            state_dir: self.scanner.state_dir.path().to_owned(),
            discovery: EventSender::new(self.inbox.clone()),
            pings: EventSender::new(self.inbox.clone()),
            prepare: EventSender::new(self.inbox.clone()),
            swarm: Arc::clone(&self.swarm),
            serve: EventSender::new(self.inbox.clone()),
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

    /// The transport's client side, while the peer runtime runs.
    pub(super) fn peer_client(&self) -> Result<Arc<PeerClient>, IpcError> {
        match &self.runtime {
            RuntimeSlot::Running(runtime) => Ok(runtime.client()),
            _ => Err(IpcError::new(
                ErrorCode::NotAvailable,
                "the peer runtime is not running (set a game directory first)",
            )),
        }
    }

    /// The prepared file list of the version of `id` served here now, if
    /// it is ready.
    pub(super) fn own_manifest(
        &self,
        id: &lanspread_proto::model::GameId,
    ) -> Option<Arc<crate::prepare::PreparedManifest>> {
        let RuntimeSlot::Running(runtime) = &self.runtime else {
            return None;
        };
        let served = Arc::clone(&self.served.borrow());
        let (_, game) = served.game(id).ok()?;
        match runtime.manifests().lookup(id, game) {
            crate::prepare::Lookup::Ready(prepared) => Some(prepared),
            _ => None,
        }
    }

    pub(super) fn status(&self) -> DaemonStatus {
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
            preparing: self
                .preparing
                .iter()
                .map(|(id, progress)| PreparingGame {
                    id: id.clone(),
                    progress: *progress,
                })
                .collect(),
            limits: self.limits.limits(),
            catalog: self.catalog.origin().to_owned(),
            ignored_roots: self.library.ignored.clone(),
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

    /// The preparer progressed, finished or failed a local game's file
    /// list. Kept for `ListGames` and `Status`; no event is published for
    /// it (a snapshot reflects it when the library changes for another
    /// reason), so preparing many games does not flood subscribers.
    pub(super) fn on_prepare_event(&mut self, event: PrepareEvent) {
        match event {
            PrepareEvent::Progress { id, progress } => {
                self.preparing.insert(id, progress);
            }
            PrepareEvent::Ready { id } => {
                self.preparing.remove(&id);
                // Served complete now: a finished download of it retires.
                self.swarm.retire_finished(&id);
            }
            PrepareEvent::Failed { id, error } => {
                tracing::warn!(game = %id, cause = %err_chain(&error), "file list cannot be prepared");
                self.preparing.remove(&id);
            }
        }
    }
}
