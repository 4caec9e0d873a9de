//! What this daemon's downloads hold, for serving it to peers that
//! download the same manifest (`docs/peer-protocol.md#swarm`): per game,
//! the manifest, where its files are written and which of its chunks are
//! verified. The QUIC server reads it to answer `GetChunk` and `Subscribe`
//! for a game it does not hold complete; a subscriber hears about each
//! chunk as it is verified.
//!
//! A download registers its [`Partial`] when it starts, marks each chunk
//! once verified and written, and ends it when it is cancelled or fails
//! (its chunks are served no more from that moment). A download that
//! finished keeps serving until the core hands it over, once the game is
//! served as a complete one: its subscribers then hear that it holds the
//! game complete, and chunk streams in progress go on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::AnnouncedGame;
use tokio::sync::watch;

use crate::download::journal::ChunkSet;
use crate::generation::Generation;
use crate::manifest_id::{ChunkTable, ManifestId};

/// The downloads whose chunks this daemon serves, by game.
#[derive(Debug, Default)]
pub struct Swarm {
    downloads: Mutex<HashMap<GameId, Arc<Partial>>>,
    /// Grows whenever a download is registered or retired, so peers know to
    /// fetch `ListGames` again (added to the library revision in `Pong`).
    generation: Generation,
}

/// One download's manifest and verified chunks.
#[derive(Debug)]
pub struct Partial {
    pub id: GameId,
    pub version: Version,
    pub manifest: ManifestId,
    /// The whole manifest (what `GetGame` answers with).
    pub files: Arc<Vec<GameFileDescription>>,
    pub table: ChunkTable,
    /// The game root the download writes into.
    pub root: PathBuf,
    state: Mutex<PartialState>,
    /// Bumped at every change of the state (a verified chunk, the end).
    changes: watch::Sender<u64>,
}

#[derive(Debug)]
struct PartialState {
    /// Verified (and written) chunks, by manifest chunk number.
    held: ChunkSet,
    /// Why it is no longer served, once it is not.
    ended: Option<String>,
    /// The download finished: every chunk is on disk.
    finished: bool,
    /// It finished and the game is served complete now: new requests go
    /// to the complete game; subscribers are told it holds everything.
    handed_over: bool,
}

impl Partial {
    pub fn new(
        id: GameId,
        version: Version,
        files: Arc<Vec<GameFileDescription>>,
        root: PathBuf,
    ) -> Arc<Self> {
        let manifest = ManifestId::of(&version, &files);
        let table = ChunkTable::new(&files);
        let held = ChunkSet::new(table.len());
        Arc::new(Self {
            id,
            version,
            manifest,
            files,
            table,
            root,
            state: Mutex::new(PartialState {
                held,
                ended: None,
                finished: false,
                handed_over: false,
            }),
            changes: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, PartialState> {
        // Poisoning only means a holder panicked between two plain writes.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunks `chunks` (manifest numbers) are verified and written.
    pub fn verified(&self, chunks: impl IntoIterator<Item = usize>) {
        let mut state = self.lock();
        if state.ended.is_some() {
            return;
        }
        for chunk in chunks {
            if chunk < state.held.len() {
                state.held.insert(chunk);
            }
        }
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The download finished (every chunk is verified and committed): it
    /// serves until the core retires it.
    pub fn finish(&self) {
        self.lock().finished = true;
    }

    /// Whether the download finished.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// The finished download is served as a complete game from now on:
    /// what it holds stays served (streams in progress go on), and its
    /// subscribers are told it is complete.
    fn hand_over(&self) {
        let mut state = self.lock();
        if state.ended.is_some() {
            return;
        }
        state.handed_over = true;
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether it was handed over to the complete game.
    pub fn is_handed_over(&self) -> bool {
        self.lock().handed_over
    }

    /// Whether chunk `chunk` may be served: verified, and the download
    /// still serves.
    pub fn holds(&self, chunk: usize) -> bool {
        let state = self.lock();
        state.ended.is_none() && state.held.contains(chunk)
    }

    /// The verified chunks, or why it is no longer served.
    pub fn held(&self) -> Result<ChunkSet, String> {
        let state = self.lock();
        match &state.ended {
            Some(reason) => Err(reason.clone()),
            None => Ok(state.held.clone()),
        }
    }

    /// Stops serving: nothing of it is sent from now on, and subscribers
    /// hear `reason`.
    pub fn end(&self, reason: &str) {
        let mut state = self.lock();
        if state.ended.is_none() {
            state.ended = Some(reason.to_owned());
        }
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Wakes on every change of what it holds.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Swarm {
    fn lock(&self) -> MutexGuard<'_, HashMap<GameId, Arc<Partial>>> {
        self.downloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `partial` from now on, in place of any earlier download of
    /// the game (which ends).
    pub fn register(&self, partial: Arc<Partial>) {
        let previous = self.lock().insert(partial.id.clone(), partial);
        if let Some(previous) = previous {
            previous.end("superseded by a new download");
        }
        self.generation.bump();
    }

    /// Ends and forgets `partial` (if it is still the registered download
    /// of its game).
    pub fn retire(&self, partial: &Arc<Partial>, reason: &str) {
        partial.end(reason);
        self.forget(partial);
    }

    /// Forgets `partial` if it is still the registered download of its
    /// game.
    fn forget(&self, partial: &Arc<Partial>) {
        let mut downloads = self.lock();
        if downloads
            .get(&partial.id)
            .is_some_and(|p| Arc::ptr_eq(p, partial))
        {
            downloads.remove(&partial.id);
            drop(downloads);
            self.generation.bump();
        }
    }

    /// Hands the download of `id` over to the complete game if it
    /// finished (the game is served as a complete one from now on): it is
    /// forgotten, its subscribers are told it holds everything, and chunk
    /// streams in progress go on (the same files, now the complete game's).
    pub fn retire_finished(&self, id: &GameId) {
        let partial = self.lock().get(id).cloned();
        if let Some(partial) = partial.filter(|p| p.lock().finished) {
            partial.hand_over();
            self.forget(&partial);
        }
    }

    /// The registered download of `id` that still serves.
    pub fn get(&self, id: &GameId) -> Option<Arc<Partial>> {
        self.lock().get(id).cloned()
    }

    /// Woken whenever the set of downloads changes.
    pub fn watch_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The downloads as `ListGames` announces them (not complete).
    pub fn announced(&self) -> Vec<AnnouncedGame> {
        self.lock()
            .values()
            .filter(|p| p.held().is_ok())
            .map(|p| AnnouncedGame {
                id: p.id.clone(),
                version: p.version.clone(),
                size: p.files.iter().map(|f| f.size).sum(),
                manifest: Some(p.manifest.to_hex()),
                complete: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(id: &str) -> Arc<Partial> {
        let files = vec![GameFileDescription {
            relative_path: "a".into(),
            is_dir: false,
            size: 10,
            chunk_hashes: vec!["0".repeat(64)],
        }];
        Partial::new(
            GameId::new(id).unwrap(),
            Version::new("1"),
            Arc::new(files),
            PathBuf::from("/nonexistent"),
        )
    }

    #[test]
    fn an_ended_download_serves_nothing_and_says_why() {
        let swarm = Swarm::default();
        let first = partial("game");
        swarm.register(Arc::clone(&first));
        let changes = first.watch();
        first.verified([0]);
        assert!(changes.has_changed().unwrap());
        assert!(first.holds(0));
        assert_eq!(swarm.announced().len(), 1);
        // A new download of the game supersedes it.
        let second = partial("game");
        swarm.register(Arc::clone(&second));
        assert!(!first.holds(0));
        assert!(first.held().unwrap_err().contains("superseded"));
        // Retiring the old one leaves the new one registered.
        swarm.retire(&first, "cancelled");
        assert!(
            swarm
                .get(&second.id)
                .is_some_and(|p| Arc::ptr_eq(&p, &second))
        );
        swarm.retire(&second, "cancelled");
        assert!(swarm.get(&second.id).is_none());
        assert!(swarm.announced().is_empty());
        second.verified([0]);
        assert!(!second.holds(0), "an ended download learns nothing new");
    }

    #[test]
    fn a_finished_download_is_handed_over_and_keeps_serving_what_it_holds() {
        let swarm = Swarm::default();
        let done = partial("game");
        swarm.register(Arc::clone(&done));
        done.verified([0]);
        let changes = done.watch();
        // Not finished yet: nothing to hand over.
        swarm.retire_finished(&done.id);
        assert!(swarm.get(&done.id).is_some() && !done.is_handed_over());
        done.finish();
        swarm.retire_finished(&done.id);
        assert!(
            swarm.get(&done.id).is_none(),
            "requests go to the complete game"
        );
        assert!(swarm.announced().is_empty());
        assert!(done.is_handed_over());
        assert!(changes.has_changed().unwrap(), "subscribers are woken");
        assert!(done.holds(0), "a stream in progress goes on");
        assert!(done.held().is_ok());
    }
}
