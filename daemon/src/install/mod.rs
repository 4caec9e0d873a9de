//! Install transactions (`docs/install.md`): extraction of a game's
//! archives into `local/`, update and uninstall as crash-safe
//! transactions, and the startup recovery that repairs an interrupted one.
//!
//! The only module that writes inside `local/` and the reserved folders
//! `.local.installing/` and `.local.backup/`, and the only one that knows
//! libarchive. Everything here is blocking filesystem work.

pub mod archives;
pub mod intent;
mod libarchive;
pub mod transaction;
mod unpack;

use std::path::Path;

use lanspread_proto::model::GameId;

pub use archives::archive_sets;
pub use intent::INTENT_FILE;
pub use transaction::{InstallError, Recovered, install, recover, uninstall};
pub use unpack::{LibarchiveUnpacker, UnpackError, UnpackProgress, Unpacker};

/// Runs [`recover`] over every game root of `game_dir` (never following
/// symlinks), logging what it did. Blocking.
pub fn recover_all(game_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(game_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_dir || GameId::new(&*name).is_err() {
            continue;
        }
        match recover(&entry.path()) {
            Ok(Recovered::Clean) => {}
            Ok(Recovered::Repaired(what)) => {
                tracing::warn!(game = %name, %what, "recovered an interrupted transaction");
            }
            Ok(Recovered::LeftAlone(what)) => {
                tracing::warn!(game = %name, %what, "left a folder alone that lanspread did not make");
            }
            Err(err) => {
                tracing::error!(game = %name, cause = %crate::error_chain::err_chain(&err), "recovery failed");
            }
        }
    }
}
