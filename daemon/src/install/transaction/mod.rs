//! Install, update and uninstall as crash-safe transactions, and the
//! startup recovery that finishes or undoes an interrupted one
//! (`docs/install.md#intent-log-and-markers`, `docs/install.md#recovery`).
//!
//! Every step first records its intent in `.lanspread.json`. The reserved
//! folders carry a `.lanspread_owned` marker. A reserved folder is deleted
//! only when the intent log or its marker proves lanspread made it; a
//! folder of the same name that lanspread did not make is left alone and
//! logged. Blocking: runs on a blocking thread.

use std::path::{Path, PathBuf};

use super::archives::archive_sets;
use super::intent::{self, InstallStep, Intent, IntentError, UninstallStep, UpdateStep, sync_dir};
use super::unpack::{UnpackError, UnpackProgress, Unpacker};
use crate::faults::crash_point;
use crate::library::LOCAL_DIR;

/// Where an install extracts before it becomes `local/`.
pub const INSTALLING: &str = ".local.installing";
/// Where the old `local/` waits during an update or uninstall.
pub const BACKUP: &str = ".local.backup";
/// The file that proves lanspread made a reserved folder.
pub const MARKER: &str = ".lanspread_owned";

/// Why an install, update or uninstall failed. The previous `local/` is
/// untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{} holds no archive to install", root.display())]
    NoArchives { root: PathBuf },
    #[error("{} is not installed", root.display())]
    NotInstalled { root: PathBuf },
    #[error("{} exists but lanspread did not create it; move it away first", path.display())]
    Foreign { path: PathBuf },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Intent(#[from] IntentError),
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io {
        action,
        path,
        source,
    }
}

/// Installs the root's archives into `local/`, or, when `local/` exists,
/// updates it (the old one is replaced only once the new one is complete).
pub fn install(
    root: &Path,
    unpacker: &dyn Unpacker,
    progress: &mut dyn FnMut(UnpackProgress),
) -> Result<UnpackProgress, InstallError> {
    let local = root.join(LOCAL_DIR);
    let installing = root.join(INSTALLING);
    let backup = root.join(BACKUP);
    let updating = local.is_dir();
    for reserved in [&installing, &backup] {
        if reserved.exists() {
            if is_ours(reserved) {
                remove_ours(reserved)?;
            } else {
                return Err(InstallError::Foreign {
                    path: reserved.clone(),
                });
            }
        }
    }
    let sets = archive_sets(root).map_err(io("list", root))?;
    if sets.is_empty() {
        return Err(InstallError::NoArchives {
            root: root.to_owned(),
        });
    }
    let op = if updating { "update" } else { "install" };
    intent::write(
        root,
        if updating {
            Intent::Update(UpdateStep::Extracting)
        } else {
            Intent::Install(InstallStep::Extracting)
        },
    )?;
    crash_point(&format!("{op}:extracting"));
    make_ours(&installing)?;
    let mut total = UnpackProgress::default();
    for set in &sets {
        let mut offset_progress = |p: UnpackProgress| {
            progress(UnpackProgress {
                entries: total.entries + p.entries,
                bytes: total.bytes + p.bytes,
            })
        };
        match unpacker.unpack(set, &installing, &mut offset_progress) {
            Ok(done) => {
                total.entries += done.entries;
                total.bytes += done.bytes;
            }
            Err(err) => {
                // The old local/ was never touched; undo the attempt.
                remove_ours(&installing)?;
                intent::clear(root)?;
                return Err(err.into());
            }
        }
    }
    crash_point(&format!("{op}:extracted"));
    if updating {
        intent::write(root, Intent::Update(UpdateStep::Swapping))?;
        crash_point("update:swapping");
        std::fs::rename(&local, &backup).map_err(io("move aside", &local))?;
        mark(&backup)?;
        crash_point("update:backed-up");
        activate(root)?;
        crash_point("update:swapped");
        intent::write(root, Intent::Update(UpdateStep::Cleaning))?;
        remove_ours(&backup)?;
        crash_point("update:cleaned");
    } else {
        intent::write(root, Intent::Install(InstallStep::Activating))?;
        crash_point("install:activating");
        activate(root)?;
        crash_point("install:activated");
    }
    intent::clear(root)?;
    Ok(total)
}

/// Removes `local/`, keeping the archives (the game stays downloaded).
pub fn uninstall(root: &Path) -> Result<(), InstallError> {
    let local = root.join(LOCAL_DIR);
    let backup = root.join(BACKUP);
    if !local.is_dir() {
        return Err(InstallError::NotInstalled {
            root: root.to_owned(),
        });
    }
    if backup.exists() {
        if is_ours(&backup) {
            remove_ours(&backup)?;
        } else {
            return Err(InstallError::Foreign { path: backup });
        }
    }
    intent::write(root, Intent::Uninstall(UninstallStep::Removing))?;
    crash_point("uninstall:removing");
    std::fs::rename(&local, &backup).map_err(io("move aside", &local))?;
    mark(&backup)?;
    sync_dir(root).map_err(io("sync", root))?;
    crash_point("uninstall:backed-up");
    remove_ours(&backup)?;
    crash_point("uninstall:removed");
    intent::clear(root)?;
    Ok(())
}

/// What recovery did to a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Nothing to do.
    Clean,
    /// An interrupted transaction was finished or undone; what happened.
    Repaired(String),
    /// Something looked odd but was not ours to touch; left alone.
    LeftAlone(String),
}

/// Brings one root to a consistent state after a crash: the old complete
/// `local/`, the new complete one, or none — never a mix.
pub fn recover(root: &Path) -> Result<Recovered, InstallError> {
    let local = root.join(LOCAL_DIR);
    let installing = root.join(INSTALLING);
    let backup = root.join(BACKUP);
    let intent = match intent::read(root) {
        Ok(intent) => intent,
        Err(err) => {
            return Ok(Recovered::LeftAlone(format!("{err}; nothing touched")));
        }
    };
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let repaired = match intent {
        None => {
            let mut notes = Vec::new();
            for reserved in [&installing, &backup] {
                if exists(reserved) && !is_ours(reserved) {
                    notes.push(format!(
                        "{} has no marker and no intent",
                        reserved.display()
                    ));
                }
            }
            if exists(&installing) && is_ours(&installing) {
                remove_ours(&installing)?;
                notes.push("removed a stale .local.installing".into());
            }
            if exists(&backup) && is_ours(&backup) {
                if exists(&local) {
                    remove_ours(&backup)?;
                    notes.push("removed a stale .local.backup".into());
                } else {
                    std::fs::rename(&backup, &local).map_err(io("restore", &backup))?;
                    unmark(&local)?;
                    notes.push("restored local/ from .local.backup".into());
                }
            }
            unmark(&local)?;
            return Ok(match notes.is_empty() {
                true => Recovered::Clean,
                false if notes.iter().all(|n| n.contains("no marker")) => {
                    Recovered::LeftAlone(notes.join("; "))
                }
                false => Recovered::Repaired(notes.join("; ")),
            });
        }
        Some(Intent::Install(InstallStep::Extracting) | Intent::Update(UpdateStep::Extracting)) => {
            remove_if_exists(&installing)?;
            "an interrupted extraction was undone; the previous state stands"
        }
        Some(Intent::Install(InstallStep::Activating)) => {
            if exists(&installing) {
                if exists(&local) {
                    remove_if_exists(&installing)?;
                } else {
                    activate(root)?;
                }
            }
            "an install whose extraction had completed was finished"
        }
        Some(Intent::Update(UpdateStep::Swapping)) => {
            if exists(&installing) {
                if exists(&local) && !exists(&backup) {
                    std::fs::rename(&local, &backup).map_err(io("move aside", &local))?;
                    mark(&backup)?;
                }
                if !exists(&local) {
                    activate(root)?;
                }
            } else if !exists(&local) && exists(&backup) {
                std::fs::rename(&backup, &local).map_err(io("restore", &backup))?;
            }
            remove_if_exists(&backup)?;
            "an update whose extraction had completed was finished"
        }
        Some(Intent::Update(UpdateStep::Cleaning)) => {
            remove_if_exists(&backup)?;
            "an update's cleanup was finished"
        }
        Some(Intent::Uninstall(UninstallStep::Removing)) => {
            if exists(&local) && !exists(&backup) {
                std::fs::rename(&local, &backup).map_err(io("move aside", &local))?;
            }
            remove_if_exists(&backup)?;
            "an interrupted uninstall was finished"
        }
    };
    unmark(&local)?;
    intent::clear(root)?;
    Ok(Recovered::Repaired(repaired.into()))
}

/// `.local.installing/` → `local/`, without the marker.
fn activate(root: &Path) -> Result<(), InstallError> {
    let (installing, local) = (root.join(INSTALLING), root.join(LOCAL_DIR));
    std::fs::rename(&installing, &local).map_err(io("activate", &installing))?;
    unmark(&local)?;
    sync_dir(root).map_err(io("sync", root))
}

fn make_ours(dir: &Path) -> Result<(), InstallError> {
    std::fs::create_dir(dir).map_err(io("create", dir))?;
    mark(dir)
}

fn mark(dir: &Path) -> Result<(), InstallError> {
    let marker = dir.join(MARKER);
    std::fs::write(
        &marker,
        b"made by lanspread; safe to delete with its folder\n",
    )
    .map_err(io("mark", &marker))?;
    sync_dir(dir).map_err(io("sync", dir))
}

fn unmark(dir: &Path) -> Result<(), InstallError> {
    let marker = dir.join(MARKER);
    match std::fs::remove_file(&marker) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(io("unmark", &marker)(err)),
        _ => Ok(()),
    }
}

fn is_ours(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file())
}

/// Deletes a reserved folder the intent log proves lanspread made.
fn remove_if_exists(dir: &Path) -> Result<(), InstallError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir).map_err(io("remove", dir)),
        _ => Ok(()),
    }
}

/// Deletes a reserved folder carrying the marker.
fn remove_ours(dir: &Path) -> Result<(), InstallError> {
    debug_assert!(is_ours(dir), "{} is not ours", dir.display());
    remove_if_exists(dir)
}

#[cfg(test)]
mod tests;
