//! The core's part of `VerifyGame`: pick the manifest to check against
//! (the one the peers holding the same version agree on, else the
//! daemon's own), hold the game as one operation, and turn the verify's
//! reports into events. The rehashing and repair run in `crate::verify`.

use std::sync::Arc;

use lanspread_proto::ipc::{ErrorCode, IpcError, OperationStarted, PeerEvent};
use lanspread_proto::model::GameId;
use tokio_util::sync::CancellationToken;

use super::{Daemon, Operation};
use crate::download::Source;
use crate::download::gather::{GatherEvent, gather};
use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::library::game_manifest;
use crate::verify::{self, VerifyEvent, VerifyRequest};

impl Daemon {
    /// `VerifyGame`: answers once the verify started; its outcome comes as
    /// events.
    pub(super) fn start_verify(
        &mut self,
        id: GameId,
        repair: bool,
    ) -> Result<OperationStarted, IpcError> {
        let root = self.operation_root(&id)?;
        let local = self
            .library
            .games
            .get(&id)
            .filter(|g| g.downloaded)
            .and_then(|g| Some((g.version.clone()?, g.files.clone())));
        let Some((version, local_files)) = local else {
            return Err(IpcError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{id} is not downloaded here (or its version is unknown): nothing to verify"
                ),
            ));
        };
        let holders = self.holders_of(&id, &version);
        let client = self.peer_client().ok();
        let (index, state_dir) = (
            Arc::clone(&self.scanner.index),
            self.scanner.state_dir.path().to_owned(),
        );
        self.operation_started(id.clone(), Operation::Verify);
        let events = EventSender::<VerifyEvent>::new(self.inbox.clone());
        let gather_events = EventSender::<GatherEvent>::new(self.inbox.clone());
        let task_id = id.clone();
        tokio::spawn(async move {
            let id = task_id;
            let mut against = None;
            if let Some(client) = client.as_ref().filter(|_| !holders.is_empty()) {
                match gather(client, &id, &version, holders, &gather_events).await {
                    Ok(manifest) => {
                        let sources = manifest
                            .holders
                            .iter()
                            .map(|h| Source {
                                peer_id: h.peer_id.clone(),
                                addr: h.addr,
                                complete: h.complete,
                                tentative: false,
                            })
                            .collect::<Vec<_>>();
                        against = Some((manifest.files, sources));
                    }
                    Err(reason) => {
                        tracing::warn!(game = %id, %reason, "no peer manifest to verify against; using our own");
                    }
                }
            }
            let (files, sources) = match against {
                Some(found) => found,
                None => {
                    let (root, hashed_id) = (root.clone(), id.clone());
                    let own = tokio::task::spawn_blocking(move || {
                        let no_cancel = std::sync::atomic::AtomicBool::new(false);
                        game_manifest(
                            &root,
                            &hashed_id,
                            &local_files,
                            &index,
                            Some(&state_dir),
                            &|_| {},
                            &no_cancel,
                        )
                        .map(|(files, _)| files)
                        .map_err(|err| err_chain(&err))
                    })
                    .await
                    .unwrap_or_else(|_| Err("hashing panicked".into()));
                    match own {
                        Ok(files) => (files, Vec::new()),
                        Err(reason) => {
                            let _ = events.send(VerifyEvent::Failed { id, reason }).await;
                            return;
                        }
                    }
                }
            };
            let _ = events
                .send(VerifyEvent::Begin {
                    id: id.clone(),
                    peers: sources.len() as u32,
                })
                .await;
            let request = VerifyRequest {
                id,
                root,
                version,
                files,
                sources,
                repair,
            };
            verify::run(request, client, events, CancellationToken::new()).await;
        });
        Ok(OperationStarted { id })
    }

    pub(super) fn on_verify_event(&mut self, event: VerifyEvent) {
        let (ended, published) = match event {
            VerifyEvent::Begin { id, peers } => (None, PeerEvent::VerifyGameBegin { id, peers }),
            VerifyEvent::Progress {
                id,
                bytes_done,
                bytes_total,
            } => (
                None,
                PeerEvent::VerifyGameProgress {
                    id,
                    bytes_done,
                    bytes_total,
                },
            ),
            VerifyEvent::Finished {
                id,
                bytes,
                differing,
                repaired_chunks,
            } => (
                Some(id.clone()),
                PeerEvent::VerifyGameFinished {
                    id,
                    bytes,
                    differing,
                    repaired_chunks,
                },
            ),
            VerifyEvent::Failed { id, reason } => {
                (Some(id.clone()), PeerEvent::VerifyGameFailed { id, reason })
            }
        };
        self.publish(published);
        if let Some(id) = ended {
            self.operation_ended(&id);
        }
    }
}
