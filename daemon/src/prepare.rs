//! The manifest preparer: computes the chunk hashes of every served game
//! in the background, when the game appears or changes, so a peer that
//! asks for a file list gets it at once, or at once hears "preparing"
//! with the progress (`docs/peer-protocol.md#requests-and-answers`). A
//! request never waits on hashing.
//!
//! One game at a time, each hashed by one thread per core at the lowest
//! CPU priority (`library::game_manifest`); hashes already in the library
//! index are reused, so a restart re-hashes nothing that did not change.
//! A change of the served library cancels the game being hashed and starts
//! over with the new state. Reports to the core through its own
//! [`PrepareEvent`]; the QUIC server reads [`Manifests`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanspread_proto::model::{GameFileDescription, GameId, Preparing, Version};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::library::{FileStamp, LibraryIndex, ManifestError, game_manifest};
use crate::manifest_id::{ChunkTable, ManifestId};
use crate::serve::{ServedGame, ServedLibrary};

/// A game whose files changed while they were hashed is tried again after
/// this long (the monitor usually rescans it first, which restarts it).
const RETRY_CHANGED: Duration = Duration::from_secs(5);

/// What the preparer tells the core.
#[derive(Debug)]
pub enum PrepareEvent {
    /// Hashing `id` progressed.
    Progress { id: GameId, progress: Preparing },
    /// The file list of `id` is ready to serve.
    Ready { id: GameId },
    /// The file list of `id` cannot be built (an unreadable file).
    Failed { id: GameId, error: ManifestError },
}

/// The prepared manifests, shared by the preparer (writes) and the QUIC
/// server (reads). A std mutex, never held across `.await` or hashing.
#[derive(Debug, Default)]
pub struct Manifests {
    entries: Mutex<HashMap<GameId, Entry>>,
    /// Grows whenever a manifest becomes ready or is dropped (peers then
    /// fetch `ListGames` again: it carries the manifests' digests).
    generation: crate::generation::Generation,
}

#[derive(Debug)]
struct Entry {
    /// What was hashed: valid only while the game is served like this
    /// (its version and the digest of its file list, so a lookup costs the
    /// same for 10 files or 150,000).
    version: Version,
    source: u64,
    state: State,
}

#[derive(Clone, Debug)]
enum State {
    Preparing(Preparing),
    Ready(Arc<PreparedManifest>),
    Failed(String),
}

/// A served game's file list, ready to send, with what serving its chunks
/// needs: its digest, its chunk numbering, and each file's size and mtime
/// when it was hashed (a file that no longer matches is not served under
/// this manifest).
#[derive(Debug)]
pub struct PreparedManifest {
    pub files: Arc<Vec<GameFileDescription>>,
    pub manifest: ManifestId,
    pub table: ChunkTable,
    pub stamps: Vec<Option<FileStamp>>,
}

/// The manifest of a served game, as far as it exists.
#[derive(Clone, Debug)]
pub enum Lookup {
    Ready(Arc<PreparedManifest>),
    Preparing(Preparing),
    /// Building it failed; the reason (for the log, not for peers).
    Failed(String),
}

impl Manifests {
    /// The manifest of `id` as it is served now.
    pub fn lookup(&self, id: &GameId, game: &ServedGame) -> Lookup {
        let entries = self.lock();
        match entries.get(id) {
            Some(entry) if entry.version == game.version && entry.source == game.files_digest => {
                match &entry.state {
                    State::Ready(prepared) => Lookup::Ready(Arc::clone(prepared)),
                    State::Preparing(progress) => Lookup::Preparing(*progress),
                    State::Failed(reason) => Lookup::Failed(reason.clone()),
                }
            }
            // Not started yet, or prepared for an older state.
            _ => Lookup::Preparing(Preparing {
                bytes_done: 0,
                bytes_total: game.size,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GameId, Entry>> {
        // Poisoning only means a holder panicked between two plain writes.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_current(&self, id: &GameId, game: &ServedGame) -> bool {
        self.lock().get(id).is_some_and(|e| {
            e.version == game.version
                && e.source == game.files_digest
                && !matches!(e.state, State::Preparing(_))
        })
    }

    /// Woken whenever a manifest becomes ready or is dropped.
    pub fn watch_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn set(&self, id: &GameId, game: &ServedGame, state: State) {
        self.generation.bump();
        self.lock().insert(
            id.clone(),
            Entry {
                version: game.version.clone(),
                source: game.files_digest,
                state,
            },
        );
    }

    fn progress(&self, id: &GameId, progress: Preparing) {
        if let Some(entry) = self.lock().get_mut(id)
            && let State::Preparing(current) = &mut entry.state
        {
            *current = progress;
        }
    }

    fn retain_served(&self, library: &ServedLibrary) {
        self.lock().retain(|id, _| library.games.contains_key(id));
    }
}

/// Everything the preparer needs.
#[derive(Debug)]
pub struct Preparer {
    pub served: watch::Receiver<Arc<ServedLibrary>>,
    pub index: Arc<Mutex<LibraryIndex>>,
    /// Where the index is saved after new hashes.
    pub state_dir: PathBuf,
    pub manifests: Arc<Manifests>,
    pub events: EventSender<PrepareEvent>,
}

impl Preparer {
    /// Prepares every served game, again whenever the served library
    /// changes, until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        'outer: loop {
            let library = Arc::clone(&self.served.borrow_and_update());
            self.manifests.retain_served(&library);
            let mut retry = false;
            for (id, game) in &library.games {
                if self.manifests.is_current(id, game) {
                    continue;
                }
                let Some(root) = library.game_dir.as_ref().map(|d| d.join(id.as_str())) else {
                    break;
                };
                match self.prepare(id, game, root, &shutdown).await {
                    Outcome::Done => {}
                    Outcome::Retry => retry = true,
                    Outcome::LibraryChanged => continue 'outer,
                    Outcome::Shutdown => return,
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = self.served.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RETRY_CHANGED), if retry => {
                    // A game whose files moved under the hashing: again.
                    self.served.mark_changed();
                }
            }
        }
    }

    /// Hashes one game off the async threads, watching for a newer served
    /// library and for shutdown meanwhile.
    async fn prepare(
        &mut self,
        id: &GameId,
        game: &ServedGame,
        root: PathBuf,
        shutdown: &CancellationToken,
    ) -> Outcome {
        let total = game.size;
        self.manifests.set(
            id,
            game,
            State::Preparing(Preparing {
                bytes_done: 0,
                bytes_total: total,
            }),
        );
        tracing::debug!(game = %id, bytes = total, files = game.files.len(), "preparing file list");
        let cancel = Arc::new(AtomicBool::new(false));
        let job = {
            let (id, files, index) = (id.clone(), game.files.clone(), Arc::clone(&self.index));
            let version = game.version.clone();
            let (state_dir, manifests, events) = (
                self.state_dir.clone(),
                Arc::clone(&self.manifests),
                self.events.clone(),
            );
            let cancel = Arc::clone(&cancel);
            tokio::task::spawn_blocking(move || {
                let report = |done: u64| {
                    let progress = Preparing {
                        bytes_done: done.min(total),
                        bytes_total: total,
                    };
                    manifests.progress(&id, progress);
                    let _ = events.blocking_send(PrepareEvent::Progress {
                        id: id.clone(),
                        progress,
                    });
                };
                game_manifest(
                    &root,
                    &id,
                    &files,
                    &index,
                    Some(&state_dir),
                    &report,
                    &cancel,
                )
                .map(|(files, stamps)| PreparedManifest {
                    manifest: ManifestId::of(&version, &files),
                    table: ChunkTable::new(&files),
                    files: Arc::new(files),
                    stamps,
                })
            })
        };
        tokio::pin!(job);
        let interrupted = tokio::select! {
            result = &mut job => return self.finish(id, game, result).await,
            () = shutdown.cancelled() => Outcome::Shutdown,
            changed = self.served.changed() => match changed {
                Ok(()) => Outcome::LibraryChanged,
                Err(_) => Outcome::Shutdown,
            },
        };
        cancel.store(true, Ordering::Relaxed);
        let _ = job.await;
        interrupted
    }

    async fn finish(
        &self,
        id: &GameId,
        game: &ServedGame,
        result: Result<Result<PreparedManifest, ManifestError>, tokio::task::JoinError>,
    ) -> Outcome {
        match result {
            Ok(Ok(prepared)) => {
                tracing::info!(game = %id, files = prepared.files.len(), manifest = %prepared.manifest, "file list ready");
                self.manifests
                    .set(id, game, State::Ready(Arc::new(prepared)));
                let _ = self
                    .events
                    .send(PrepareEvent::Ready { id: id.clone() })
                    .await;
                Outcome::Done
            }
            Ok(Err(ManifestError::Changed { path })) => {
                tracing::debug!(game = %id, path = %path.display(), "a file changed while it was hashed; again later");
                Outcome::Retry
            }
            Ok(Err(ManifestError::Cancelled)) => Outcome::Done,
            Ok(Err(error)) => {
                let reason = err_chain(&error);
                tracing::warn!(game = %id, cause = %reason, "cannot prepare the file list");
                self.manifests.set(id, game, State::Failed(reason));
                let _ = self
                    .events
                    .send(PrepareEvent::Failed {
                        id: id.clone(),
                        error,
                    })
                    .await;
                Outcome::Done
            }
            Err(_) => {
                self.manifests.set(
                    id,
                    game,
                    State::Failed("preparing the file list panicked".into()),
                );
                Outcome::Done
            }
        }
    }
}

/// How preparing one game ended.
enum Outcome {
    Done,
    /// A file changed under the hashing: try again later.
    Retry,
    LibraryChanged,
    Shutdown,
}
