//! Validation of a game directory before the daemon adopts it.

use std::path::{Path, PathBuf};

/// Why a path cannot be the game directory.
#[derive(Debug, thiserror::Error)]
pub enum GameDirError {
    #[error("game directory {} is not an absolute path", path.display())]
    NotAbsolute { path: PathBuf },
    #[error("game directory {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("game directory {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("game directory {} cannot be accessed", path.display())]
    Inaccessible {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("game directory {} is not writable", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `path` is an absolute, existing, writable directory and
/// returns its canonical form (symlinks resolved).
///
/// Writability is proven by creating and removing a temp file, since
/// permission bits say nothing for root or on read-only mounts.
pub fn validate_game_dir(path: &Path) -> Result<PathBuf, GameDirError> {
    if !path.is_absolute() {
        return Err(GameDirError::NotAbsolute {
            path: path.to_owned(),
        });
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(GameDirError::Missing {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(GameDirError::Inaccessible {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(GameDirError::NotADirectory {
            path: path.to_owned(),
        });
    }
    let canonical = std::fs::canonicalize(path).map_err(|source| GameDirError::Inaccessible {
        path: path.to_owned(),
        source,
    })?;
    tempfile::Builder::new()
        .prefix(".lanspread-write-check")
        .tempfile_in(&canonical)
        .map_err(|source| GameDirError::NotWritable {
            path: path.to_owned(),
            source,
        })?;
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_missing_and_file_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            validate_game_dir(Path::new("games")),
            Err(GameDirError::NotAbsolute { .. })
        ));
        assert!(matches!(
            validate_game_dir(&dir.path().join("missing")),
            Err(GameDirError::Missing { .. })
        ));
        assert!(matches!(
            validate_game_dir(&file),
            Err(GameDirError::NotADirectory { .. })
        ));
        let ok = validate_game_dir(dir.path()).unwrap();
        assert_eq!(ok, std::fs::canonicalize(dir.path()).unwrap());
        // The write check leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
