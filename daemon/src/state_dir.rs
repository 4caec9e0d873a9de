//! The daemon's state dir: its stable peer id, the remembered game
//! directory, and the library index (see `library::LibraryIndex`).
//!
//! Nothing here is needed for the game directory to be correct: deleting
//! the state dir costs a new peer id, a rescan and the resume of an
//! interrupted download.

use std::io::Write;
use std::path::{Path, PathBuf};

/// File holding the peer id.
const PEER_ID_FILE: &str = "peer_id";

/// File holding the game directory chosen with `SetGameDir`.
const GAME_DIR_FILE: &str = "game_dir";

/// Why the state dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create state dir {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The daemon's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state dir at `path`.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        std::fs::create_dir_all(path).map_err(|source| StateDirError::Create {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stable peer id: read from the state dir, or generated (random
    /// 128 bits, hex) and stored on first start.
    pub fn peer_id(&self) -> Result<String, StateDirError> {
        let path = self.path.join(PEER_ID_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let id = text.trim();
            if is_valid_peer_id(id) {
                return Ok(id.to_owned());
            }
            tracing::warn!(path = %path.display(), "peer id file is invalid, generating a new peer id");
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.write_atomically(PEER_ID_FILE, id.as_bytes())?;
        Ok(id)
    }

    /// The game directory remembered from an earlier `SetGameDir`.
    pub fn saved_game_dir(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.path.join(GAME_DIR_FILE)).ok()?;
        let path = PathBuf::from(text.trim_end_matches('\n'));
        path.is_absolute().then_some(path)
    }

    /// Remembers `game_dir` for the next start.
    pub fn save_game_dir(&self, game_dir: &Path) -> Result<(), StateDirError> {
        let mut text = game_dir.as_os_str().to_string_lossy().into_owned();
        text.push('\n');
        self.write_atomically(GAME_DIR_FILE, text.as_bytes())
    }

    /// Writes `name` in the state dir via a temp file, fsync and rename.
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), StateDirError> {
        let path = self.path.join(name);
        let write_error = |source| StateDirError::Write {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.path).map_err(write_error)?;
        tmp.write_all(bytes).map_err(write_error)?;
        tmp.as_file().sync_all().map_err(write_error)?;
        tmp.persist(&path).map_err(|err| write_error(err.error))?;
        Ok(())
    }
}

fn is_valid_peer_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_id_is_stable_across_opens_and_repaired_when_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap().peer_id().unwrap();
        let second = StateDir::open(dir.path()).unwrap().peer_id().unwrap();
        assert_eq!(first, second);
        assert!(is_valid_peer_id(&first));
        std::fs::write(dir.path().join(PEER_ID_FILE), "garbage").unwrap();
        let third = StateDir::open(dir.path()).unwrap().peer_id().unwrap();
        assert!(is_valid_peer_id(&third));
        assert_ne!(third, first);
    }

    #[test]
    fn the_game_dir_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("nested/state")).unwrap();
        assert_eq!(state.saved_game_dir(), None);
        state.save_game_dir(Path::new("/srv/games")).unwrap();
        assert_eq!(state.saved_game_dir(), Some(PathBuf::from("/srv/games")));
    }
}
