//! The core's part of install transactions: starting installs, updates
//! and uninstalls on a blocking thread, one operation per game, and turning
//! their outcome into events. The transactions live in `crate::install`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lanspread_proto::ipc::{ErrorCode, IpcError, OperationStarted, PeerEvent};
use lanspread_proto::model::GameId;

use super::{Daemon, DaemonEvent, Operation};
use crate::error_chain::err_chain;
use crate::install::{InstallError, UnpackProgress, install, uninstall};
use crate::library::{is_downloaded, is_installed};

/// Least time between two install progress events.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What an install or uninstall reports.
#[derive(Debug)]
pub enum InstallEvent {
    Progress {
        id: GameId,
        progress: UnpackProgress,
    },
    Installed {
        id: GameId,
        progress: UnpackProgress,
    },
    InstallFailed {
        id: GameId,
        error: InstallError,
    },
    /// The install after a download had nothing to do.
    Skipped {
        id: GameId,
        reason: String,
    },
    Uninstalled {
        id: GameId,
    },
    UninstallFailed {
        id: GameId,
        error: InstallError,
    },
}

impl Daemon {
    /// `InstallGame` (and the automatic install after a download): install,
    /// or update when `local/` exists. Answers once it started.
    pub(super) fn start_install(
        &mut self,
        id: GameId,
        after_download: bool,
    ) -> Result<OperationStarted, IpcError> {
        let root = self.operation_root(&id)?;
        // The disk, not the library snapshot: the snapshot catches up with
        // a download or install that just ended only after its rescan.
        if !after_download && !is_downloaded(&root) {
            return Err(IpcError::new(
                ErrorCode::InvalidRequest,
                format!("{id} is not downloaded here; download it first"),
            ));
        }
        self.operation_started(id.clone(), Operation::Install);
        self.publish(PeerEvent::InstallGameBegin { id: id.clone() });
        let (inbox, unpacker) = (self.inbox.clone(), Arc::clone(&self.unpacker));
        let task_id = id.clone();
        tokio::task::spawn_blocking(move || {
            let mut last = Instant::now();
            let mut report = |progress: UnpackProgress| {
                if last.elapsed() >= PROGRESS_INTERVAL {
                    last = Instant::now();
                    let event = InstallEvent::Progress {
                        id: task_id.clone(),
                        progress,
                    };
                    let _ = inbox.blocking_send(DaemonEvent::Install(event));
                }
            };
            let event = match install(&root, &*unpacker, &mut report) {
                Ok(progress) => InstallEvent::Installed {
                    id: task_id,
                    progress,
                },
                // A game without archives is complete once downloaded.
                Err(InstallError::NoArchives { .. }) if after_download => InstallEvent::Skipped {
                    id: task_id,
                    reason: "nothing to install: the game holds no archive".into(),
                },
                Err(error) => InstallEvent::InstallFailed { id: task_id, error },
            };
            let _ = inbox.blocking_send(DaemonEvent::Install(event));
        });
        Ok(OperationStarted { id })
    }

    /// `UninstallGame`: removes `local/`, keeps the archives.
    pub(super) fn start_uninstall(&mut self, id: GameId) -> Result<OperationStarted, IpcError> {
        let root = self.operation_root(&id)?;
        if !is_installed(&root) {
            return Err(IpcError::new(
                ErrorCode::InvalidRequest,
                format!("{id} is not installed"),
            ));
        }
        self.operation_started(id.clone(), Operation::Uninstall);
        self.publish(PeerEvent::UninstallGameBegin { id: id.clone() });
        let inbox = self.inbox.clone();
        let task_id = id.clone();
        tokio::task::spawn_blocking(move || {
            let event = match uninstall(&root) {
                Ok(()) => InstallEvent::Uninstalled { id: task_id },
                Err(error) => InstallEvent::UninstallFailed { id: task_id, error },
            };
            let _ = inbox.blocking_send(DaemonEvent::Install(event));
        });
        Ok(OperationStarted { id })
    }

    /// The root of `id`, if an operation may start on it now.
    pub(super) fn operation_root(&self, id: &GameId) -> Result<std::path::PathBuf, IpcError> {
        let game_dir = self
            .game_dir
            .as_ref()
            .ok_or_else(|| IpcError::new(ErrorCode::NoGameDir, "no game directory is set"))?;
        if self.catalog.get(id).is_none() {
            return Err(IpcError::new(
                ErrorCode::InvalidRequest,
                format!("{id} is not in the catalog"),
            ));
        }
        if self.operations.contains_key(id) {
            return Err(IpcError::new(
                ErrorCode::Busy,
                format!("an operation on {id} is already running"),
            ));
        }
        Ok(game_dir.join(id.as_str()))
    }

    pub(super) fn on_install_event(&mut self, event: InstallEvent) {
        let (ended, published) = match event {
            InstallEvent::Progress { id, progress } => (
                None,
                PeerEvent::InstallGameProgress {
                    id,
                    entries: progress.entries,
                    bytes: progress.bytes,
                },
            ),
            InstallEvent::Installed { id, progress } => {
                tracing::info!(game = %id, entries = progress.entries, bytes = progress.bytes, "installed");
                (Some(id.clone()), PeerEvent::InstallGameFinished { id })
            }
            InstallEvent::Skipped { id, reason } => {
                tracing::info!(game = %id, %reason, "install skipped");
                (
                    Some(id.clone()),
                    PeerEvent::InstallGameSkipped { id, reason },
                )
            }
            InstallEvent::InstallFailed { id, error } => {
                let reason = err_chain(&error);
                tracing::warn!(game = %id, %reason, "install failed");
                (
                    Some(id.clone()),
                    PeerEvent::InstallGameFailed { id, reason },
                )
            }
            InstallEvent::Uninstalled { id } => {
                tracing::info!(game = %id, "uninstalled");
                (Some(id.clone()), PeerEvent::UninstallGameFinished { id })
            }
            InstallEvent::UninstallFailed { id, error } => {
                let reason = err_chain(&error);
                tracing::warn!(game = %id, %reason, "uninstall failed");
                (
                    Some(id.clone()),
                    PeerEvent::UninstallGameFailed { id, reason },
                )
            }
        };
        self.publish(published);
        if let Some(id) = ended {
            self.operation_ended(&id);
        }
    }
}
