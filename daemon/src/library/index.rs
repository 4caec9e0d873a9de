//! The lightweight library index kept in the state dir: per root, the
//! fingerprint that proves it unchanged and the scan result it produced, so
//! an unchanged root is not walked again.
//!
//! The index is a cache. A missing, unreadable or foreign index costs a full
//! walk and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lanspread_proto::model::{GameId, Version};
use serde::{Deserialize, Serialize};

/// File name of the index inside the state dir.
pub const INDEX_FILE_NAME: &str = "library-index.json";

/// Bumped when the index layout changes; other formats are discarded.
const INDEX_FORMAT: u32 = 2;

/// Chunk hashes of a file, valid while its size and mtime hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CachedHashes {
    pub size: u64,
    pub mtime: i128,
    pub hashes: Vec<String>,
}

/// Everything the daemon remembers about the roots of one game directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LibraryIndex {
    format: u32,
    /// The game directory the entries belong to.
    game_dir: PathBuf,
    pub(super) roots: BTreeMap<GameId, IndexedRoot>,
}

/// What a walk of one root found, and the fingerprint it was taken under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct IndexedRoot {
    pub fingerprint: RootFingerprint,
    pub version: Option<Version>,
    pub files: Vec<IndexedFile>,
    /// Entries whose names are not UTF-8 (escaped); see
    /// [`super::LocalGame::unnamed_files`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed: Vec<String>,
}

/// Modification times that change whenever the root's file set or sentinel
/// changes: every served directory (adding, removing or renaming an entry
/// touches its parent) and `version.ini`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RootFingerprint {
    /// `(relative path, mtime)` of the root (`""`) and each served directory.
    pub dirs: Vec<(String, Option<i128>)>,
    /// `(len, mtime)` of `version.ini`, if present.
    pub version_ini: Option<(u64, Option<i128>)>,
}

/// One served file or directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IndexedFile {
    pub relative_path: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime: Option<i128>,
    /// BLAKE3 chunk hashes, once computed, valid for `size` and `mtime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_hashes: Option<Vec<String>>,
}

/// Nanoseconds since the epoch, if the platform reports a modification time.
pub fn mtime_ns(meta: &std::fs::Metadata) -> Option<i128> {
    let mtime = meta.modified().ok()?;
    Some(match mtime.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    })
}

impl LibraryIndex {
    /// Loads the index from `state_dir`, or an empty one (with a log line
    /// saying why) when it is missing or unreadable.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(INDEX_FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(err) => {
                tracing::warn!(path = %path.display(), cause = %err, "cannot read library index, rebuilding it");
                return Self::default();
            }
        };
        Self::parse(&bytes).unwrap_or_else(|err| {
            tracing::warn!(path = %path.display(), cause = %err, "library index is unusable, rebuilding it");
            Self::default()
        })
    }

    /// Decodes index bytes; an index of another format is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let index = serde_json::from_slice::<Self>(bytes).map_err(|err| err.to_string())?;
        if index.format != INDEX_FORMAT {
            return Err(format!(
                "index format {} is not {INDEX_FORMAT}",
                index.format
            ));
        }
        Ok(index)
    }

    /// Encodes the index as it is saved (fails for a game directory whose
    /// path is not UTF-8).
    pub fn to_bytes(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&IndexRef {
            format: INDEX_FORMAT,
            game_dir: &self.game_dir,
            roots: &self.roots,
        })
    }

    /// Writes the index atomically (temp file, fsync, rename).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
        let json = self.to_bytes().map_err(std::io::Error::other)?;
        tmp.write_all(&json)?;
        tmp.as_file().sync_all()?;
        tmp.persist(state_dir.join(INDEX_FILE_NAME))
            .map_err(|err| err.error)?;
        Ok(())
    }

    /// Cached chunk hashes of a file, if still valid for `size` and `mtime`.
    #[cfg(test)]
    pub(super) fn cached_hashes(
        &self,
        id: &GameId,
        relative_path: &str,
        size: u64,
        mtime: Option<i128>,
    ) -> Option<Vec<String>> {
        let file = self.file(id, relative_path)?;
        (file.size == size && file.mtime == mtime && mtime.is_some())
            .then(|| file.chunk_hashes.clone())
            .flatten()
    }

    /// Every file of the root `id` with cached hashes, by path, with the
    /// size and mtime they are valid for. One pass, for manifests of any
    /// number of files.
    pub(super) fn cached_root(&self, id: &GameId) -> HashMap<String, CachedHashes> {
        let Some(root) = self.roots.get(id) else {
            return HashMap::new();
        };
        root.files
            .iter()
            .filter_map(|f| {
                let hashes = f.chunk_hashes.clone()?;
                Some((
                    f.relative_path.clone(),
                    CachedHashes {
                        size: f.size,
                        mtime: f.mtime?,
                        hashes,
                    },
                ))
            })
            .collect()
    }

    /// Remembers many computed hash lists of the root `id` at once (one
    /// pass over the root's files).
    pub(super) fn store_root_hashes(&mut self, id: &GameId, computed: Vec<(String, CachedHashes)>) {
        let Some(root) = self.roots.get_mut(id) else {
            return;
        };
        let mut by_path: HashMap<String, CachedHashes> = computed.into_iter().collect();
        for file in &mut root.files {
            if let Some(cached) = by_path.remove(&file.relative_path) {
                file.size = cached.size;
                file.mtime = Some(cached.mtime);
                file.chunk_hashes = Some(cached.hashes);
            }
        }
    }

    #[cfg(test)]
    fn file(&self, id: &GameId, relative_path: &str) -> Option<&IndexedFile> {
        self.roots
            .get(id)?
            .files
            .iter()
            .find(|f| f.relative_path == relative_path)
    }

    /// Forgets everything unless the index belongs to `game_dir`.
    pub(super) fn retarget(&mut self, game_dir: &Path) {
        if self.game_dir != game_dir {
            self.roots.clear();
            self.game_dir = game_dir.to_owned();
        }
        self.format = INDEX_FORMAT;
    }
}

/// Borrowed view of [`LibraryIndex`] for saving without a clone.
#[derive(Serialize)]
struct IndexRef<'a> {
    format: u32,
    game_dir: &'a Path,
    roots: &'a BTreeMap<GameId, IndexedRoot>,
}
