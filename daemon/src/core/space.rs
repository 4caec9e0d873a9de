//! The free-space check between accepting `DownloadGameFiles` and starting
//! the transfer (`docs/download.md#free-space`). The check stats every
//! file, so it runs on a blocking thread; the game counts as busy
//! meanwhile, and the client's reply waits for the outcome: the download
//! started, or `no_space` with the figures, before anything was written.

use lanspread_proto::ipc::{CommandResult, ErrorCode, IpcError};
use lanspread_proto::model::GameId;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::downloads::PreparedDownload;
use super::{CommandOutcome, Daemon, DaemonEvent, Operation};
use crate::download::space::{SpaceNeed, space_need};

/// A space check that came back.
#[derive(Debug)]
pub struct SpaceChecked {
    prepared: PreparedDownload,
    cancel: CancellationToken,
    need: std::io::Result<SpaceNeed>,
    reply: oneshot::Sender<CommandOutcome>,
}

impl Daemon {
    /// `DownloadGameFiles`: checks the request, holds the game, and checks
    /// free space off the core.
    pub(super) fn on_download_request(
        &mut self,
        id: GameId,
        files: Vec<String>,
        reply: oneshot::Sender<CommandOutcome>,
    ) {
        let prepared = match self.prepare_download(id.clone(), files) {
            Ok(prepared) => prepared,
            Err(err) => {
                let _ = reply.send(CommandOutcome::Reply(Err(err)));
                return;
            }
        };
        let cancel = CancellationToken::new();
        self.operations
            .insert(id, Operation::Download(cancel.clone(), None));
        let inbox = self.inbox.clone();
        tokio::task::spawn_blocking(move || {
            let mut prepared = prepared;
            // The swarm's name for the manifest: hashed here, off the core.
            prepared.partial = Some(crate::swarm::Partial::new(
                prepared.request.id.clone(),
                prepared.request.version.clone(),
                Arc::clone(&prepared.request.manifest),
                prepared.request.root.clone(),
            ));
            let root = &prepared.request.root;
            let game_dir = root.parent().unwrap_or(root);
            let need = space_need(game_dir, root, &prepared.request.files);
            let checked = SpaceChecked {
                prepared,
                cancel,
                need,
                reply,
            };
            // The core is gone only at shutdown.
            let _ = inbox.blocking_send(DaemonEvent::SpaceChecked(checked));
        });
    }

    pub(super) fn on_space_checked(&mut self, checked: SpaceChecked) {
        let SpaceChecked {
            prepared,
            cancel,
            need,
            reply,
        } = checked;
        let id = prepared.request.id.clone();
        let refusal = match need {
            Ok(need) if need.fits() => None,
            Ok(need) => Some(IpcError::new(
                ErrorCode::NoSpace,
                no_space_message(&id, &prepared, &need),
            )),
            Err(err) => Some(IpcError::new(
                ErrorCode::Internal,
                format!("cannot check free space for {id}: {err}"),
            )),
        };
        let outcome = match refusal {
            Some(err) => {
                tracing::warn!(game = %id, cause = %err.message, "download refused");
                self.operation_ended(&id);
                Err(err)
            }
            None if cancel.is_cancelled() => {
                // `CancelDownload` came during the check: nothing was
                // written, so nothing starts.
                let started = prepared.started.clone();
                self.publish(
                    lanspread_proto::ipc::PeerEvent::DownloadGameFilesCancelled { id: id.clone() },
                );
                self.operation_ended(&id);
                Ok(CommandResult::DownloadStarted(started))
            }
            None => {
                let started = prepared.started.clone();
                self.start_download(prepared, cancel);
                Ok(CommandResult::DownloadStarted(started))
            }
        };
        let _ = reply.send(CommandOutcome::Reply(outcome));
    }
}

fn no_space_message(id: &GameId, prepared: &PreparedDownload, need: &SpaceNeed) -> String {
    let game_dir = prepared
        .request
        .root
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "not enough space for {id} in {game_dir}: it needs {} bytes ({} to write, less {} already on disk, plus {} for the install, estimated as the archives' size) and {} bytes are free",
        need.needed(),
        need.write,
        need.reusable,
        need.install,
        need.free
    )
}
