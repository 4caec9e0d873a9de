//! What this daemon offers to peers, and the rules for serving it: which
//! games are announced, and which paths a peer may read
//! (`docs/peer-protocol.md#serving-rules`).
//!
//! Pure policy over a [`ServedLibrary`] snapshot plus the open itself,
//! which must not follow links. Knows nothing about QUIC.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use lanspread_proto::model::{GameId, Version};
use lanspread_proto::wire::{AnnouncedGame, WireError, WireErrorCode};

use crate::library::{
    LOCAL_DIR, LocalFile, LocalLibrary, OpenBeneathError, is_reserved_root_entry, open_beneath,
};

/// The part of the local library peers may see: downloaded, cataloged
/// games with a known version. Published by the core on every change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServedLibrary {
    /// Grows whenever the announced library changes (sent in `Pong`).
    pub revision: u64,
    pub game_dir: Option<PathBuf>,
    pub games: BTreeMap<GameId, ServedGame>,
}

/// One served game.
#[derive(Clone, Debug, PartialEq)]
pub struct ServedGame {
    pub version: Version,
    pub size: u64,
    pub files: Vec<LocalFile>,
    /// The paths of its regular files, so an open checks its path in
    /// constant time however many files the game has.
    pub regular_files: std::collections::HashSet<String>,
    /// A digest of `files` (paths, kinds, sizes), taken once per scan, so
    /// "is this still the game that was hashed?" costs O(1) per request.
    pub files_digest: u64,
}

impl ServedLibrary {
    /// The served view of `library` (games without `version.ini`, with an
    /// unreadable one, or holding a file whose name is not UTF-8 are not
    /// served).
    pub fn new(game_dir: Option<PathBuf>, library: &LocalLibrary, revision: u64) -> Self {
        let games = library
            .games
            .values()
            .filter(|game| game.downloaded && game.unnamed_files.is_empty())
            .filter_map(|game| {
                Some((
                    game.id.clone(),
                    ServedGame {
                        version: game.version.clone()?,
                        size: game.size,
                        regular_files: game
                            .files
                            .iter()
                            .filter(|f| !f.is_dir)
                            .map(|f| f.relative_path.clone())
                            .collect(),
                        files_digest: files_digest(&game.files),
                        files: game.files.clone(),
                    },
                ))
            })
            .collect();
        Self {
            revision,
            game_dir,
            games,
        }
    }

    /// Whether `other` announces the same games (revision aside).
    pub fn same_announcement(&self, other: &Self) -> bool {
        self.game_dir == other.game_dir && self.games == other.games
    }

    /// The `ListGames` answer.
    pub fn announced(&self) -> Vec<AnnouncedGame> {
        self.games
            .iter()
            .map(|(id, game)| AnnouncedGame {
                id: id.clone(),
                version: game.version.clone(),
                size: game.size,
                manifest: None,
                complete: true,
            })
            .collect()
    }

    /// The root and entry of a served game, or the refusal.
    pub fn game(&self, id: &GameId) -> Result<(PathBuf, &ServedGame), WireError> {
        let unknown = || {
            refusal(
                WireErrorCode::UnknownGame,
                format!("game {id} is not served here"),
            )
        };
        let game_dir = self.game_dir.as_ref().ok_or_else(unknown)?;
        let game = self.games.get(id).ok_or_else(unknown)?;
        Ok((game_dir.join(id.as_str()), game))
    }

    /// Opens a file of a served game for reading: the path must pass
    /// [`check_relative_path`] and name a served regular file, and it is
    /// opened beneath the root without following a symlink at any step
    /// ([`open_beneath`]), so a symlink swapped in after these checks is
    /// refused at the open itself.
    pub fn open_file(&self, id: &GameId, relative_path: &str) -> Result<File, WireError> {
        check_relative_path(relative_path)?;
        let (root, game) = self.game(id)?;
        if !game.regular_files.contains(relative_path) {
            return Err(refusal(
                WireErrorCode::NotFound,
                format!("{relative_path} is not a served file of {id}"),
            ));
        }
        open_beneath(&root, relative_path).map_err(|err| {
            if err.is_refusal() {
                refusal(
                    WireErrorCode::ForbiddenPath,
                    format!("{relative_path} of {id} refused: {err}"),
                )
            } else if matches!(err, OpenBeneathError::NotFound { .. }) {
                refusal(
                    WireErrorCode::NotFound,
                    format!("{relative_path} of {id} is gone"),
                )
            } else {
                tracing::warn!(game = %id, path = %relative_path, cause = %crate::error_chain::err_chain(&err), "cannot read served file");
                refusal(
                    WireErrorCode::Internal,
                    format!("cannot read {relative_path}"),
                )
            }
        })
    }
}

/// A 64-bit digest of a file list (BLAKE3, truncated): equal lists, equal
/// digests; different ones collide with probability 2^-64.
pub fn files_digest(files: &[LocalFile]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    for file in files {
        hasher.update(&(file.relative_path.len() as u64).to_le_bytes());
        hasher.update(file.relative_path.as_bytes());
        hasher.update(&[u8::from(file.is_dir)]);
        hasher.update(&file.size.to_le_bytes());
    }
    let bytes = hasher.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Checks a peer-supplied relative path before it touches the filesystem:
/// not empty, not absolute, `/`-separated without `\`, NUL, empty, `.` or
/// `..` components, and not naming `local/` or a reserved entry.
pub fn check_relative_path(relative_path: &str) -> Result<(), WireError> {
    let forbidden = |why: &str| {
        Err(refusal(
            WireErrorCode::ForbiddenPath,
            format!("path {relative_path:?} refused: {why}"),
        ))
    };
    if relative_path.is_empty() {
        return forbidden("empty");
    }
    if relative_path.len() > 4096 {
        return forbidden("longer than 4096 bytes");
    }
    if relative_path.starts_with('/') || Path::new(relative_path).is_absolute() {
        return forbidden("absolute");
    }
    if relative_path.contains('\\') || relative_path.contains('\0') {
        return forbidden("backslash or NUL");
    }
    let mut components = relative_path.split('/');
    if components
        .clone()
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return forbidden("empty, '.' or '..' component");
    }
    let first = components.next().unwrap_or_default();
    if first == LOCAL_DIR || is_reserved_root_entry(first) {
        return forbidden("local/ and reserved names are never served");
    }
    Ok(())
}

pub fn refusal(code: WireErrorCode, message: String) -> WireError {
    WireError { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_paths_are_checked_before_use() {
        for ok in [
            "pak0.eti",
            "maps/dm1.eti",
            "a/b/c/d",
            "maps/local/x",
            "version.ini",
        ] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "maps/../../x",
            "maps/./x",
            "maps//x",
            "maps/",
            "local/game.exe",
            "local",
            ".lanspread.json",
            ".local.backup/x",
            ".version.ini.tmp",
            "a\\..\\b",
            "a\0b",
        ] {
            let err = check_relative_path(bad).unwrap_err();
            assert_eq!(err.code, WireErrorCode::ForbiddenPath, "{bad:?}");
        }
    }
}
