//! The resume journal: which chunks of a download are verified and durable,
//! kept in the state dir so a restarted daemon (even after SIGKILL) fetches
//! only the rest.
//!
//! A chunk enters the journal only after its bytes were fsynced. Losing the
//! journal costs a full download, nothing else.

use std::io::Write;
use std::path::{Path, PathBuf};

use lanspread_proto::model::{GameFileDescription, GameId, Version};
use serde::{Deserialize, Serialize};

/// Folder of journals inside the state dir.
const DIR: &str = "downloads";

/// A download's progress on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub id: GameId,
    pub version: Version,
    /// The files being downloaded, exactly as requested.
    pub files: Vec<GameFileDescription>,
    /// Per file, the indices of verified chunks.
    pub done: Vec<Vec<u32>>,
}

impl Journal {
    pub fn path(state_dir: &Path, id: &GameId) -> PathBuf {
        state_dir.join(DIR).join(format!("{id}.json"))
    }

    /// The journal of `id`, if one exists for exactly this version and
    /// file list (anything else is stale and ignored).
    pub fn load_matching(
        state_dir: &Path,
        id: &GameId,
        version: &Version,
        files: &[GameFileDescription],
    ) -> Option<Self> {
        let bytes = std::fs::read(Self::path(state_dir, id)).ok()?;
        let journal: Self = serde_json::from_slice(&bytes).ok()?;
        let matches = &journal.id == id
            && &journal.version == version
            && journal.files == files
            && journal.done.len() == files.len()
            && journal
                .done
                .iter()
                .zip(files)
                .all(|(done, f)| done.iter().all(|&c| (c as usize) < f.chunk_hashes.len()));
        matches.then_some(journal)
    }

    /// Writes the journal atomically.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(Self::path(state_dir, &self.id))
            .map_err(|err| err.error)?;
        Ok(())
    }

    /// Removes the journal of `id` (the download finished).
    pub fn remove(state_dir: &Path, id: &GameId) {
        let _ = std::fs::remove_file(Self::path(state_dir, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_is_reused_only_for_the_same_version_and_files() {
        let state = tempfile::tempdir().unwrap();
        let id = GameId::new("g").unwrap();
        let files = vec![GameFileDescription {
            relative_path: "a".into(),
            is_dir: false,
            size: 10,
            chunk_hashes: vec!["h0".into(), "h1".into()],
        }];
        let journal = Journal {
            id: id.clone(),
            version: Version::new("1"),
            files: files.clone(),
            done: vec![vec![1]],
        };
        journal.save(state.path()).unwrap();
        let v1 = Version::new("1");
        assert_eq!(
            Journal::load_matching(state.path(), &id, &v1, &files),
            Some(journal)
        );
        assert_eq!(
            Journal::load_matching(state.path(), &id, &Version::new("2"), &files),
            None
        );
        let mut other = files.clone();
        other[0].chunk_hashes[1] = "changed".into();
        assert_eq!(Journal::load_matching(state.path(), &id, &v1, &other), None);
        Journal::remove(state.path(), &id);
        assert_eq!(Journal::load_matching(state.path(), &id, &v1, &files), None);
    }
}
