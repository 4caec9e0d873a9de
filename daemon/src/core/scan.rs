//! The core's one scanner: every walk of the game directory (adopting a
//! new one, rescanning it, rescanning one root the monitor saw change)
//! runs on a blocking thread through [`Daemon::spawn_scan`] and comes back
//! as [`DaemonEvent::Scanned`], so the core never waits on the disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lanspread_proto::ipc::{CommandResult, ErrorCode, IpcError, PeerEvent, SetGameDirResult};
use lanspread_proto::model::{GameId, IgnoredRoot};
use tokio::sync::oneshot;

use super::{CommandOutcome, Daemon, DaemonEvent};
use crate::catalog::Catalog;
use crate::error_chain::err_chain;
use crate::game_dir::validate_game_dir;
use crate::library::{LibraryIndex, LocalGame, LocalLibrary, ScanError, scan_local_library};
use crate::state_dir::StateDir;

/// What the scanner needs, cloned onto the blocking thread.
#[derive(Clone, Debug)]
pub struct Scanner {
    pub catalog: Arc<Catalog>,
    /// The library index, used only on blocking threads (a std mutex: it
    /// is never held across `.await`).
    pub index: Arc<Mutex<LibraryIndex>>,
    pub state_dir: StateDir,
}

/// A scan to run.
#[derive(Debug)]
pub(super) enum ScanJob {
    /// `SetGameDir`: validate, repair interrupted installs, scan, remember.
    /// Older generations are stale when they come back.
    Adopt {
        path: PathBuf,
        generation: u64,
        reply: oneshot::Sender<CommandOutcome>,
    },
    /// Rescan the whole current directory (an operation ended, the
    /// fallback timer, a re-watch).
    All { game_dir: PathBuf },
    /// Rescan one root the monitor saw change.
    Root { game_dir: PathBuf, id: GameId },
}

/// A scan that came back.
#[derive(Debug)]
pub enum Scanned {
    Adopted {
        generation: u64,
        reply: oneshot::Sender<CommandOutcome>,
        result: Result<(PathBuf, LocalLibrary), IpcError>,
    },
    All {
        game_dir: PathBuf,
        result: Result<LocalLibrary, ScanError>,
    },
    Root {
        game_dir: PathBuf,
        id: GameId,
        game: Option<LocalGame>,
        /// Why the folder is not served, when it is a folder that is not.
        ignored: Option<IgnoredRoot>,
    },
}

impl Scanner {
    fn run(&self, job: ScanJob) -> Scanned {
        match job {
            ScanJob::Adopt {
                path,
                generation,
                reply,
            } => Scanned::Adopted {
                generation,
                reply,
                result: self.adopt(&path),
            },
            ScanJob::All { game_dir } => Scanned::All {
                result: self.scan(&game_dir),
                game_dir,
            },
            ScanJob::Root { game_dir, id } => {
                let mut index = self.lock_index();
                let game = crate::library::scan_one_root(&game_dir, &id, &self.catalog, &mut index);
                self.save_index(&index);
                drop(index);
                let ignored = game
                    .is_none()
                    .then(|| crate::library::ignored_root(&game_dir, &id, &self.catalog))
                    .flatten();
                Scanned::Root {
                    game_dir,
                    id,
                    game,
                    ignored,
                }
            }
        }
    }

    /// Validates `path`, repairs interrupted installs in it, scans it, and
    /// remembers it in the state dir. Blocking.
    pub fn adopt(&self, path: &Path) -> Result<(PathBuf, LocalLibrary), IpcError> {
        let invalid =
            |err: &dyn std::error::Error| IpcError::new(ErrorCode::InvalidGameDir, err_chain(err));
        let path = validate_game_dir(path).map_err(|err| invalid(&err))?;
        // Interrupted installs are repaired before anything reads the roots.
        crate::install::recover_all(&path);
        let library = self.scan(&path).map_err(|err| invalid(&err))?;
        self.state_dir
            .save_game_dir(&path)
            .map_err(|err| IpcError::new(ErrorCode::Internal, err_chain(&err)))?;
        Ok((path, library))
    }

    /// Scans `game_dir` with the shared index and saves the index. Blocking.
    fn scan(&self, game_dir: &Path) -> Result<LocalLibrary, ScanError> {
        let mut index = self.lock_index();
        let (library, stats) = scan_local_library(game_dir, &self.catalog, &mut index)?;
        tracing::debug!(game_dir = %game_dir.display(), walked = stats.walked, reused = stats.reused, skipped = stats.skipped, "library scanned");
        self.save_index(&index);
        Ok(library)
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, LibraryIndex> {
        // Poisoning only means another scan panicked; the index is a cache.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save_index(&self, index: &LibraryIndex) {
        if let Err(err) = index.save(self.state_dir.path()) {
            tracing::warn!(cause = %err_chain(&err), "cannot save library index");
        }
    }
}

impl Daemon {
    /// Runs `job` on a blocking thread; it comes back as
    /// [`DaemonEvent::Scanned`].
    pub(super) fn spawn_scan(&self, job: ScanJob) {
        let (scanner, inbox) = (self.scanner.clone(), self.inbox.clone());
        tokio::task::spawn_blocking(move || {
            let scanned = scanner.run(job);
            // The core may be gone (shutdown): then nobody needs the result.
            let _ = inbox.blocking_send(DaemonEvent::Scanned(scanned));
        });
    }

    /// Rescans the current game directory, if there is one.
    pub(super) fn rescan(&self) {
        if let Some(game_dir) = self.game_dir.clone() {
            self.spawn_scan(ScanJob::All { game_dir });
        }
    }

    /// `SetGameDir`: the reply is sent when the scan comes back.
    pub(super) fn on_set_game_dir(
        &mut self,
        path: PathBuf,
        reply: oneshot::Sender<CommandOutcome>,
    ) {
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
        self.spawn_scan(ScanJob::Adopt {
            path,
            generation,
            reply,
        });
    }

    /// A root changed on disk: rescan it now, or when the operation
    /// running on it ends.
    pub(super) fn on_root_changed(&mut self, id: GameId) {
        if self.operations.contains_key(&id) {
            tracing::debug!(game = %id, "rescan held while an operation runs");
            self.held_rescans.insert(id);
            return;
        }
        if let Some(game_dir) = self.game_dir.clone() {
            self.spawn_scan(ScanJob::Root { game_dir, id });
        }
    }

    pub(super) fn on_scanned(&mut self, scanned: Scanned) {
        match scanned {
            Scanned::Adopted {
                generation,
                reply,
                result,
            } => {
                let outcome = match result {
                    Err(err) => Err(err),
                    Ok(_) if generation != self.scan_generation => Err(IpcError::new(
                        ErrorCode::InvalidGameDir,
                        "superseded by a newer SetGameDir request",
                    )),
                    Ok((path, library)) => {
                        let games = library.games.len() as u32;
                        self.apply_scan(path.clone(), library);
                        Ok(CommandResult::GameDirSet(SetGameDirResult { path, games }))
                    }
                };
                let _ = reply.send(CommandOutcome::Reply(outcome));
            }
            Scanned::All { game_dir, result } => {
                if self.game_dir.as_ref() != Some(&game_dir) {
                    return; // a rescan of a directory no longer in use
                }
                match result {
                    Ok(library) => self.apply_scan(game_dir, library),
                    Err(err) => tracing::warn!(cause = %err_chain(&err), "rescan failed"),
                }
            }
            Scanned::Root {
                game_dir,
                id,
                game,
                ignored,
            } => self.on_root_scanned(game_dir, id, game, ignored),
        }
    }

    /// Makes `library` of `path` the current one and tells whoever needs
    /// to know.
    fn apply_scan(&mut self, path: PathBuf, library: LocalLibrary) {
        let dir_changed = self.game_dir.as_ref() != Some(&path);
        let library_changed = self.library != library;
        self.game_dir = Some(path.clone());
        self.library = library;
        if dir_changed {
            tracing::info!(game_dir = %path.display(), games = self.library.games.len(), "game directory in use");
            self.manifests.clear();
            let game_dir = Some(path.clone());
            self.watch_target
                .send_modify(|target| target.game_dir = game_dir);
            self.publish(PeerEvent::GameDirChanged { path });
        }
        if dir_changed || library_changed {
            self.local_library_changed();
        }
        self.start_peer_runtime();
    }

    fn on_root_scanned(
        &mut self,
        game_dir: PathBuf,
        id: GameId,
        game: Option<LocalGame>,
        ignored: Option<IgnoredRoot>,
    ) {
        if self.game_dir.as_ref() != Some(&game_dir) || self.operations.contains_key(&id) {
            return; // stale: the directory moved, or an operation began since
        }
        self.rescans += 1;
        self.library.ignored.retain(|i| i.name != id.as_str());
        self.library.ignored.extend(ignored);
        self.library.ignored.sort();
        let changed = match game {
            Some(game) => self.library.games.insert(id.clone(), game.clone()) != Some(game),
            None => self.library.games.remove(&id).is_some(),
        };
        tracing::debug!(game = %id, changed, "root rescanned after a change");
        if changed {
            self.local_library_changed();
        }
    }
}
