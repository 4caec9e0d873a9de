//! The local library: which cataloged games this host holds, at which
//! version, downloaded and/or installed, with their served files.
//!
//! Scanning is blocking filesystem work; callers run it off the async
//! threads. This module reads the game directory and never writes to it.

mod beneath;
mod index;
mod manifest;
pub mod version_ini;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lanspread_proto::model::{GameId, IgnoredRoot, Version};

use crate::catalog::Catalog;
pub use beneath::{OpenBeneathError, open_beneath};
pub use index::LibraryIndex;
pub use index::mtime_ns;
use index::{IndexedFile, IndexedRoot, RootFingerprint};
pub use manifest::{FileStamp, ManifestError, game_manifest, hash_chunks};
pub use version_ini::{VersionIniError, parse_version_ini, read_version_ini};

/// The sentinel file whose presence means "downloaded".
pub const SENTINEL: &str = "version.ini";

/// The folder whose presence (as a directory) means "installed".
pub const LOCAL_DIR: &str = "local";

/// Deepest folder nesting walked inside a root.
const MAX_WALK_DEPTH: usize = 64;

/// Most entries walked inside one root; a root with more is not served.
const MAX_ROOT_ENTRIES: usize = 200_000;

/// True for top-level names of a game root that are never served:
/// `local/` and the reserved transaction names.
pub fn is_reserved_root_entry(name: &str) -> bool {
    name == LOCAL_DIR
        || name.starts_with(".lanspread")
        || name.starts_with(".local.")
        || name.starts_with(".version.ini.")
}

/// Bytes as readable text: UTF-8 kept, anything else as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut text = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            text.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    text
}

/// One cataloged game on this host.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalGame {
    pub id: GameId,
    /// Display name from the catalog.
    pub name: String,
    /// From `version.ini`; `None` when it is missing or unreadable.
    pub version: Option<Version>,
    /// `version.ini` is present.
    pub downloaded: bool,
    /// `local/` is a directory.
    pub installed: bool,
    /// Sum of the served files' sizes.
    pub size: u64,
    /// Served files and folders, sorted by path.
    pub files: Vec<LocalFile>,
    /// Entries whose names are not UTF-8 (escaped, relative to the root).
    /// The protocol names files by UTF-8 paths, so such a file could not be
    /// sent, and a peer would get the game without it: while any exist, the
    /// game is not served (it stays in the local library).
    pub unnamed_files: Vec<String>,
}

/// One served file or folder of a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    /// `/`-separated path relative to the root.
    pub relative_path: String,
    pub is_dir: bool,
    pub size: u64,
}

/// The cataloged games of one game directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalLibrary {
    pub games: BTreeMap<GameId, LocalGame>,
    /// Folders of the game directory left out, with the reason, by name.
    pub ignored: Vec<IgnoredRoot>,
}

/// What a scan did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Roots whose files were walked.
    pub walked: usize,
    /// Roots taken from the index unchanged.
    pub reused: usize,
    /// Entries of the game directory that are not served games.
    pub skipped: usize,
}

/// Why the game directory as a whole could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot list game directory {}", path.display())]
    ReadGameDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why one root was left out of the library (logged, never fatal).
#[derive(Debug, thiserror::Error)]
enum RootError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("more than {MAX_ROOT_ENTRIES} entries")]
    TooManyEntries,
}

/// Scans `game_dir`: every cataloged root, reusing `index` entries whose
/// fingerprint is unchanged and updating the index with the rest.
pub fn scan_local_library(
    game_dir: &Path,
    catalog: &Catalog,
    index: &mut LibraryIndex,
) -> Result<(LocalLibrary, ScanStats), ScanError> {
    let read_error = |source| ScanError::ReadGameDir {
        path: game_dir.to_owned(),
        source,
    };
    index.retarget(game_dir);
    let mut library = LocalLibrary::default();
    let mut stats = ScanStats::default();
    for entry in std::fs::read_dir(game_dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let id = match root_id(&entry, catalog) {
            Ok(id) => id,
            Err(ignored) => {
                stats.skipped += 1;
                library.ignored.extend(ignored);
                continue;
            }
        };
        let root = entry.path();
        match scan_root(&root, index.roots.get(&id)) {
            Ok((indexed, reused)) => {
                if reused {
                    stats.reused += 1;
                } else {
                    stats.walked += 1;
                }
                let name = catalog.get(&id).map(|e| e.name.clone()).unwrap_or_default();
                library
                    .games
                    .insert(id.clone(), local_game(&root, id.clone(), name, &indexed));
                index.roots.insert(id, indexed);
            }
            Err(err) => {
                stats.skipped += 1;
                tracing::warn!(game = %id, cause = %err, "game root skipped");
                library.ignored.push(IgnoredRoot {
                    name: id.to_string(),
                    reason: format!("cannot be read: {}", crate::error_chain::err_chain(&err)),
                });
            }
        }
    }
    library.ignored.sort();
    index.roots.retain(|id, _| library.games.contains_key(id));
    Ok((library, stats))
}

/// Scans the single root `id` of `game_dir` (after a change the monitor
/// saw); `None` if it is no longer a served root.
pub fn scan_one_root(
    game_dir: &Path,
    id: &GameId,
    catalog: &Catalog,
    index: &mut LibraryIndex,
) -> Option<LocalGame> {
    index.retarget(game_dir);
    let root = game_dir.join(id.as_str());
    let is_root = std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir());
    let Some(entry) = catalog.get(id).filter(|_| is_root) else {
        index.roots.remove(id);
        return None;
    };
    match scan_root(&root, index.roots.get(id)) {
        Ok((indexed, _)) => {
            let game = local_game(&root, id.clone(), entry.name.clone(), &indexed);
            index.roots.insert(id.clone(), indexed);
            Some(game)
        }
        Err(err) => {
            tracing::warn!(game = %id, cause = %err, "game root skipped");
            index.roots.remove(id);
            None
        }
    }
}

/// The game id of a game-directory entry, if it is a cataloged root; logs
/// one line for every entry that is not. A folder (or a symlink) that is
/// not served comes back as the reason; a plain file, a hidden entry and
/// `lost+found` as nothing.
fn root_id(entry: &std::fs::DirEntry, catalog: &Catalog) -> Result<GameId, Option<IgnoredRoot>> {
    let path = entry.path();
    let name = entry.file_name().to_string_lossy().into_owned();
    let ignored = |reason: &str| {
        Err(Some(IgnoredRoot {
            name: name.clone(),
            reason: reason.to_owned(),
        }))
    };
    if name.starts_with('.') || name == "lost+found" {
        return Err(None);
    }
    let file_type = match entry.file_type() {
        Ok(file_type) => file_type,
        Err(err) => {
            tracing::warn!(path = %path.display(), cause = %err, "cannot stat game directory entry, skipped");
            return ignored(&format!("cannot be read: {err}"));
        }
    };
    if file_type.is_symlink() {
        tracing::warn!(path = %path.display(), "symlinked game root is not served, skipped");
        return ignored("a symlink: game folders must be real folders to be served");
    }
    if !file_type.is_dir() {
        tracing::debug!(path = %path.display(), "not a directory, skipped");
        return Err(None);
    }
    let Some(text) = entry.file_name().to_str().map(str::to_owned) else {
        let name = escape_bytes(entry.file_name().as_encoded_bytes());
        tracing::warn!(name = %name, "game directory entry is not UTF-8, so it is no game id, skipped");
        return ignored("the name is not UTF-8; a game folder is named by its game id");
    };
    let id = match GameId::new(text) {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!(path = %path.display(), cause = %err, "game root skipped");
            return ignored(
                "the name is not a game id (1 to 64 of a-z, 0-9, '-', '_'); a game folder is named by its id",
            );
        }
    };
    if catalog.get(&id).is_none() {
        tracing::info!(game = %id, "game root is not in the catalog, skipped");
        return ignored("not in the catalog");
    }
    Ok(id)
}

/// Why the folder `id` of `game_dir` is not served, if it is a folder that
/// is not (after a change the monitor saw; see [`scan_one_root`]).
pub fn ignored_root(game_dir: &Path, id: &GameId, catalog: &Catalog) -> Option<IgnoredRoot> {
    std::fs::read_dir(game_dir)
        .ok()?
        .flatten()
        .find(|entry| entry.file_name() == id.as_str())
        .and_then(|entry| root_id(&entry, catalog).err().flatten())
}

/// Whether the game at `root` is installed: its `local/` is a directory
/// (not a symlink to one).
pub fn is_installed(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join(LOCAL_DIR)).is_ok_and(|m| m.is_dir())
}

/// Whether the game at `root` is downloaded: its `version.ini` is a file.
pub fn is_downloaded(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join(SENTINEL)).is_ok_and(|m| m.is_file())
}

/// The library entry for a root; the installed flag is read fresh since it
/// is not part of the fingerprint.
fn local_game(root: &Path, id: GameId, name: String, indexed: &IndexedRoot) -> LocalGame {
    let installed = is_installed(root);
    LocalGame {
        id,
        name,
        version: indexed.version.clone(),
        downloaded: indexed.fingerprint.version_ini.is_some(),
        installed,
        size: indexed.files.iter().map(|f| f.size).sum(),
        files: indexed
            .files
            .iter()
            .map(|f| LocalFile {
                relative_path: f.relative_path.clone(),
                is_dir: f.is_dir,
                size: f.size,
            })
            .collect(),
        unnamed_files: indexed.unnamed.clone(),
    }
}

/// Scans one root, or reuses `cached` when its fingerprint still holds.
/// Returns the entry and whether it was reused.
fn scan_root(root: &Path, cached: Option<&IndexedRoot>) -> Result<(IndexedRoot, bool), RootError> {
    let version_ini = sentinel_stamp(root)?;
    if let Some(cached) = cached
        && cached.fingerprint.version_ini == version_ini
        && cached
            .fingerprint
            .dirs
            .iter()
            .all(|(rel, mtime)| dir_mtime(root, rel).is_some_and(|m| &m == mtime))
    {
        return Ok((cached.clone(), true));
    }
    let mut walk = Walk::default();
    walk.dir(root, "", 0)?;
    // Chunk hashes stay valid for files whose size and mtime did not change.
    if let Some(cached) = cached {
        for file in &mut walk.files {
            if let Some(old) = cached
                .files
                .iter()
                .find(|old| old.relative_path == file.relative_path)
                && old.size == file.size
                && old.mtime == file.mtime
            {
                file.chunk_hashes.clone_from(&old.chunk_hashes);
            }
        }
    }
    let version = match version_ini {
        None => None,
        Some(_) => match read_version_ini(&root.join(SENTINEL)) {
            Ok(version) => Some(version),
            Err(err) => {
                tracing::warn!(root = %root.display(), cause = %err, "game version unknown");
                None
            }
        },
    };
    walk.files
        .sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    if !walk.unnamed.is_empty() {
        tracing::warn!(
            root = %root.display(),
            names = %walk.unnamed.join(", "),
            "file names that are not UTF-8 cannot be sent to peers: this game is not served until they are renamed"
        );
    }
    let indexed = IndexedRoot {
        fingerprint: RootFingerprint {
            dirs: walk.dirs,
            version_ini,
        },
        version,
        files: walk.files,
        unnamed: walk.unnamed,
    };
    Ok((indexed, false))
}

/// `(len, mtime)` of the root's `version.ini`, if it is a regular file.
fn sentinel_stamp(root: &Path) -> Result<Option<(u64, Option<i128>)>, RootError> {
    let path = root.join(SENTINEL);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(Some((meta.len(), mtime_ns(&meta)))),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RootError::Io { path, source }),
    }
}

fn dir_mtime(root: &Path, rel: &str) -> Option<Option<i128>> {
    let path = if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    };
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.is_dir().then(|| mtime_ns(&meta))
}

/// Accumulates a recursive walk of one root.
#[derive(Default)]
struct Walk {
    dirs: Vec<(String, Option<i128>)>,
    files: Vec<IndexedFile>,
    /// Entries whose names are not UTF-8, escaped.
    unnamed: Vec<String>,
}

impl Walk {
    fn dir(&mut self, path: &Path, rel: &str, depth: usize) -> Result<(), RootError> {
        let io_error = |source| RootError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::symlink_metadata(path).map_err(io_error)?;
        self.dirs.push((rel.to_owned(), mtime_ns(&meta)));
        if depth > MAX_WALK_DEPTH {
            tracing::warn!(path = %path.display(), "folders nested deeper than {MAX_WALK_DEPTH}, not served");
            return Ok(());
        }
        for entry in std::fs::read_dir(path).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let entry_path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                let name = escape_bytes(entry.file_name().as_encoded_bytes());
                self.unnamed.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
                continue;
            };
            if depth == 0 && is_reserved_root_entry(&name) {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&entry_path).map_err(|source| RootError::Io {
                path: entry_path.clone(),
                source,
            })?;
            if self.files.len() >= MAX_ROOT_ENTRIES {
                return Err(RootError::TooManyEntries);
            }
            if meta.is_dir() {
                self.files.push(IndexedFile {
                    relative_path: child_rel.clone(),
                    is_dir: true,
                    size: 0,
                    mtime: None,
                    chunk_hashes: None,
                });
                self.dir(&entry_path, &child_rel, depth + 1)?;
            } else if meta.is_file() {
                self.files.push(IndexedFile {
                    relative_path: child_rel,
                    is_dir: false,
                    size: meta.len(),
                    mtime: mtime_ns(&meta),
                    chunk_hashes: None,
                });
            } else {
                tracing::debug!(path = %entry_path.display(), "symlink or special file, not served");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
