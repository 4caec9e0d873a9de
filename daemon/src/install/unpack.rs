//! Extraction that never writes outside its target: every entry's path is
//! checked, every folder on the way must be a real folder inside the
//! target, symlinks and hard links must stay inside, and encrypted or
//! broken archives end the extraction with a clear error.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::libarchive::{ArchiveReader, EntryKind};

/// Bytes read from an archive per call.
const READ_BUFFER: usize = 1 << 20;

/// Progress of an extraction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackProgress {
    pub entries: u64,
    pub bytes: u64,
}

/// Why an extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{archive}: {reason}")]
    Broken { archive: String, reason: String },
    #[error("{archive}: entry {entry:?} is encrypted; lanspread cannot extract encrypted archives")]
    Encrypted { archive: String, entry: String },
    #[error("{archive}: entry {entry:?} refused: {why}")]
    Unsafe {
        archive: String,
        entry: String,
        why: String,
    },
    #[error("cannot write {}: {}", path.display(), describe_io(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn describe_io(err: &std::io::Error) -> String {
    if err.raw_os_error() == Some(28) {
        "no space left on the device".into()
    } else {
        err.to_string()
    }
}

/// Extracts archives into a folder. Blocking; runs on its own thread.
/// Injected into the daemon, so the runtime has no platform layer of its
/// own and tests can substitute it.
pub trait Unpacker: Send + Sync + std::fmt::Debug {
    /// Extracts one archive set (its volumes, first volume first) into
    /// `target`, an existing folder.
    fn unpack(
        &self,
        volumes: &[PathBuf],
        target: &Path,
        progress: &mut dyn FnMut(UnpackProgress),
    ) -> Result<UnpackProgress, UnpackError>;
}

/// The default unpacker: libarchive (RAR 4/5 and multi-volume RAR, zip, 7z,
/// tar and its compressions).
#[derive(Debug, Default)]
pub struct LibarchiveUnpacker;

impl Unpacker for LibarchiveUnpacker {
    fn unpack(
        &self,
        volumes: &[PathBuf],
        target: &Path,
        progress: &mut dyn FnMut(UnpackProgress),
    ) -> Result<UnpackProgress, UnpackError> {
        let archive = volumes
            .first()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let broken = |reason: String| UnpackError::Broken {
            archive: archive.clone(),
            reason,
        };
        let mut reader = ArchiveReader::open(volumes).map_err(|e| broken(e.message))?;
        let mut done = UnpackProgress::default();
        let mut buffer = vec![0u8; READ_BUFFER];
        while let Some(entry) = reader.next_entry().map_err(|e| broken(e.message))? {
            let refuse = |why: &str| UnpackError::Unsafe {
                archive: archive.clone(),
                entry: entry.path.clone(),
                why: why.to_owned(),
            };
            if entry.encrypted {
                return Err(UnpackError::Encrypted {
                    archive: archive.clone(),
                    entry: entry.path.clone(),
                });
            }
            let Some(relative) = safe_relative(&entry.path).map_err(&refuse)? else {
                continue; // the archive's own root ("." or "/")
            };
            let path = target.join(&relative);
            prepare_parents(target, &relative).map_err(|why| refuse(&why))?;
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(refuse("it would write through a symlink"));
            }
            let io = |source| UnpackError::Io {
                path: path.clone(),
                source,
            };
            match &entry.kind {
                EntryKind::Dir => {
                    if !path.is_dir() {
                        std::fs::create_dir(&path).map_err(io)?;
                    }
                }
                EntryKind::File => {
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)
                        .map_err(io)?;
                    loop {
                        let n = reader
                            .read_data(&mut buffer)
                            .map_err(|e| broken(e.message))?;
                        if n == 0 {
                            break;
                        }
                        file.write_all(&buffer[..n]).map_err(io)?;
                        done.bytes += n as u64;
                    }
                    file.sync_all().map_err(io)?;
                    set_mode(&path, entry.mode).map_err(io)?;
                }
                EntryKind::Symlink(link) => {
                    let parent = relative.parent().unwrap_or(Path::new(""));
                    if link.is_empty()
                        || Path::new(link).is_absolute()
                        || lexical_inside(&parent.join(link)).is_none()
                    {
                        return Err(refuse(&format!("symlink to {link:?} leaves the game")));
                    }
                    std::os::unix::fs::symlink(link, &path).map_err(io)?;
                }
                EntryKind::Hardlink(link) => {
                    let target_rel = safe_relative(link)
                        .ok()
                        .flatten()
                        .ok_or_else(|| refuse(&format!("hard link to {link:?} leaves the game")))?;
                    let existing = target.join(target_rel);
                    let is_file = std::fs::symlink_metadata(&existing).is_ok_and(|m| m.is_file());
                    if !is_file {
                        return Err(refuse(&format!(
                            "hard link to {link:?}, which is not a file extracted before"
                        )));
                    }
                    std::fs::hard_link(&existing, &path).map_err(io)?;
                }
                EntryKind::Other => {
                    tracing::debug!(entry = %entry.path, "special file in archive skipped");
                    continue;
                }
            }
            done.entries += 1;
            progress(done);
        }
        Ok(done)
    }
}

/// The entry path as a relative path with only normal components, `None`
/// for the archive root, or why it is refused.
fn safe_relative(path: &str) -> Result<Option<PathBuf>, &'static str> {
    if path.starts_with('/') || path.starts_with('\\') || path.contains(":\\") {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("NUL in path");
    }
    let mut relative = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("'..' in path"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// Normalizes `path` lexically; `None` if it climbs above its start.
fn lexical_inside(path: &Path) -> Option<PathBuf> {
    let mut normal = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(normal.iter().collect())
}

/// Makes sure every folder between `target` and `relative` is a real
/// folder (creating missing ones); a symlink or file on the way is refused.
fn prepare_parents(target: &Path, relative: &Path) -> Result<(), String> {
    let mut current = target.to_owned();
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    for component in parent.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("{} is a symlink on the way", current.display()));
            }
            Ok(_) => return Err(format!("{} is a file on the way", current.display())),
            Err(_) => std::fs::create_dir(&current).map_err(|err| {
                format!("cannot create {}: {}", current.display(), describe_io(&err))
            })?,
        }
    }
    Ok(())
}

/// Keeps the permission bits that matter for a game (owner/group/other
/// read, write, execute), never set-id bits.
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = (mode & 0o777) | 0o600;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_refused_when_they_could_leave_the_target() {
        assert_eq!(safe_relative("a/b.txt"), Ok(Some(PathBuf::from("a/b.txt"))));
        assert_eq!(safe_relative("./a/./b"), Ok(Some(PathBuf::from("a/b"))));
        assert_eq!(safe_relative("./"), Ok(None));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "\\\\server\\x",
            "C:\\x",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert_eq!(
            lexical_inside(Path::new("a/../b")),
            Some(PathBuf::from("b"))
        );
        assert_eq!(lexical_inside(Path::new("a/../../b")), None);
        assert_eq!(lexical_inside(Path::new("/etc")), None);
    }
}
