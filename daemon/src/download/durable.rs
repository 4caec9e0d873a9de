//! Making written chunks durable and recording them in the resume journal
//! (`docs/download.md#resume-journal`), in the background of the download
//! loop: a save syncs the files written since the last one, then writes
//! the journal; the journal never lists a chunk that a crash could lose.
//!
//! A save runs while fetches go on (the loop only starts it and later
//! takes its result): a sync of a second's worth of writes can take a few
//! hundred milliseconds, and a download that waited for it asked no peer
//! for anything meanwhile (`just bench single` showed the stall as idle
//! CPU and I/O wait).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::journal::{ChunkSet, Journal};
use super::plan::ChunkId;
use super::sentinel::Durability;
use super::{DownloadError, DownloadRequest};
use crate::manifest_id::ManifestId;

/// Chunks written (verified) but not yet synced.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    /// The files they were written to.
    pub files: BTreeSet<usize>,
    pub chunks: Vec<ChunkId>,
}

impl Unsynced {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Chunk `id` of file `file` was written (or found in place).
    pub fn add(&mut self, file: usize, id: ChunkId) {
        self.files.insert(file);
        self.chunks.push(id);
    }
}

/// The durable chunks of one download and the save under way.
pub(super) struct Saver {
    /// Names the manifest in the journal.
    manifest: ManifestId,
    /// Syncs the game root's files.
    durability: Arc<Durability>,
    /// Chunks durable and in the journal.
    done: ChunkSet,
    /// Written since the last save started.
    unsynced: Unsynced,
    /// A save under way: the chunks it makes durable, once it did.
    under_way: Option<JoinHandle<Result<Vec<ChunkId>, DownloadError>>>,
}

impl Saver {
    /// `done`: the chunks the journal already lists (a resumed download).
    pub fn new(manifest: ManifestId, durability: Arc<Durability>, done: ChunkSet) -> Self {
        Self {
            manifest,
            durability,
            done,
            unsynced: Unsynced::default(),
            under_way: None,
        }
    }

    /// Records that chunk `id` of file `file` was written.
    pub fn written(&mut self, file: usize, id: ChunkId) {
        self.unsynced.add(file, id);
    }

    /// Whether a save is under way.
    pub fn is_saving(&self) -> bool {
        self.under_way.is_some()
    }

    /// Starts a save of what was written so far in the background, unless
    /// one is under way or nothing waits; whether it started one.
    pub fn start(&mut self, request: &DownloadRequest) -> bool {
        if self.under_way.is_some() || self.unsynced.is_empty() {
            return false;
        }
        let unsynced = std::mem::take(&mut self.unsynced);
        let paths: Vec<PathBuf> = unsynced
            .files
            .iter()
            .map(|&file| request.root.join(&request.files[file].relative_path))
            .collect();
        let mut listed = self.done.clone();
        for &chunk in &unsynced.chunks {
            listed.insert(chunk);
        }
        let journal = Journal {
            id: request.id.clone(),
            version: request.version.clone(),
            manifest: self.manifest.to_hex(),
            done: listed,
        };
        let (durability, state_dir) = (Arc::clone(&self.durability), request.state_dir.clone());
        self.under_way = Some(tokio::task::spawn_blocking(move || {
            // A sync failure is an error (the bytes may not be on disk); a
            // journal that cannot be written only costs a resume.
            durability.sync(&paths).map_err(DownloadError::Disk)?;
            if let Err(err) = journal.save(&state_dir) {
                tracing::warn!(game = %journal.id, cause = %err, "cannot save the download journal");
            }
            Ok(unsynced.chunks)
        }));
        true
    }

    /// The save under way, once it ended (pending forever if none is: for
    /// `select!`, guarded by [`Saver::is_saving`]).
    pub async fn saved(&mut self) -> Result<(), DownloadError> {
        let Some(job) = self.under_way.as_mut() else {
            return std::future::pending().await;
        };
        let result = job.await;
        self.under_way = None;
        let chunks = result.map_err(|_| DownloadError::Panicked("syncing downloaded files"))??;
        for chunk in chunks {
            self.done.insert(chunk);
        }
        Ok(())
    }

    /// Every chunk written so far durable and in the journal: waits for the
    /// save under way, then saves the rest.
    pub async fn save_all(&mut self, request: &DownloadRequest) -> Result<(), DownloadError> {
        if self.is_saving() {
            self.saved().await?;
        }
        if self.start(request) {
            self.saved().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanspread_proto::model::{GameId, Version};

    #[tokio::test]
    async fn a_save_lists_only_what_was_written_before_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let files = vec![crate::download::test_file("a.bin", 100)];
        let (durability, _) = crate::download::sentinel::begin(&root, &files).unwrap();
        let request = DownloadRequest {
            id: GameId::new("g").unwrap(),
            version: Version::new("1"),
            root,
            manifest: Arc::new(files.clone()),
            files: Arc::new(files),
            sources: Vec::new(),
            state_dir: state_dir.clone(),
            replaces: None,
        };
        let manifest = ManifestId::of(&request.version, &request.files);
        let journaled = || {
            let journal =
                Journal::load_matching(&state_dir, &request.id, &request.version, &manifest, 3)
                    .expect("a journal");
            (0..3).map(|c| journal.done.contains(c)).collect::<Vec<_>>()
        };
        let mut saver = Saver::new(manifest, Arc::new(durability), ChunkSet::new(3));
        saver.written(0, 0);
        assert!(saver.start(&request));
        assert!(saver.is_saving());
        // Written while the save runs: not in it, kept for the next one.
        saver.written(0, 1);
        assert!(!saver.start(&request), "one save at a time");
        saver.saved().await.unwrap();
        assert_eq!(journaled(), [true, false, false]);
        saver.save_all(&request).await.unwrap();
        assert_eq!(journaled(), [true, true, false]);
        assert!(!saver.is_saving());
        assert!(!saver.start(&request), "nothing left to save");
    }
}
