//! The install-side intent log, `.lanspread.json` in a game root: which
//! transaction step is under way, written atomically (temp file, fsync,
//! rename) before the step starts, removed when the transaction ended.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the intent log in a game root.
pub const INTENT_FILE: &str = ".lanspread.json";

/// A transaction and the step it is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "step", rename_all = "snake_case")]
pub enum Intent {
    Install(InstallStep),
    Update(UpdateStep),
    Uninstall(UninstallStep),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallStep {
    /// Extracting into `.local.installing/`.
    Extracting,
    /// Renaming `.local.installing/` to `local/`.
    Activating,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStep {
    /// Extracting into `.local.installing/`; the old `local/` untouched.
    Extracting,
    /// `local/` → `.local.backup/`, then `.local.installing/` → `local/`.
    Swapping,
    /// Deleting `.local.backup/`.
    Cleaning,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UninstallStep {
    /// `local/` → `.local.backup/`, then deleting it.
    Removing,
}

/// Why the intent log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("cannot write the intent log in {}", root.display())]
    Write {
        root: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the intent log in {} is unreadable: {reason}", root.display())]
    Corrupt {
        root: std::path::PathBuf,
        reason: String,
    },
}

/// Records `intent` in `root` atomically.
pub fn write(root: &Path, intent: Intent) -> Result<(), IntentError> {
    let error = |source| IntentError::Write {
        root: root.to_owned(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".lanspread.json.")
        .tempfile_in(root)
        .map_err(error)?;
    let bytes = serde_json::to_vec(&intent).expect("intents serialize");
    tmp.write_all(&bytes).map_err(error)?;
    tmp.as_file().sync_all().map_err(error)?;
    tmp.persist(root.join(INTENT_FILE))
        .map_err(|err| error(err.error))?;
    sync_dir(root).map_err(error)
}

/// Reads the intent log of `root`, if any.
pub fn read(root: &Path) -> Result<Option<Intent>, IntentError> {
    let bytes = match std::fs::read(root.join(INTENT_FILE)) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(IntentError::Corrupt {
                root: root.to_owned(),
                reason: err.to_string(),
            });
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| IntentError::Corrupt {
            root: root.to_owned(),
            reason,
        })
}

/// Decodes the bytes of an intent log (they may have been damaged on disk).
pub fn parse(bytes: &[u8]) -> Result<Intent, String> {
    serde_json::from_slice(bytes).map_err(|err| err.to_string())
}

/// Ends the transaction: removes the intent log.
pub fn clear(root: &Path) -> Result<(), IntentError> {
    let error = |source| IntentError::Write {
        root: root.to_owned(),
        source,
    };
    match std::fs::remove_file(root.join(INTENT_FILE)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(error(err)),
        _ => {}
    }
    sync_dir(root).map_err(error)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        for intent in [
            Intent::Install(InstallStep::Extracting),
            Intent::Update(UpdateStep::Swapping),
            Intent::Uninstall(UninstallStep::Removing),
        ] {
            write(dir.path(), intent).unwrap();
            assert_eq!(read(dir.path()).unwrap(), Some(intent));
        }
        let text = std::fs::read_to_string(dir.path().join(INTENT_FILE)).unwrap();
        assert_eq!(text, r#"{"op":"uninstall","step":"removing"}"#);
        clear(dir.path()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(INTENT_FILE), b"garbage").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
