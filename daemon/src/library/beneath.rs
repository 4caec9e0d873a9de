//! Opening a file of a game root for reading without following a symlink
//! at any step, so a path checked once cannot be redirected afterwards.
//!
//! The root is opened with `O_NOFOLLOW | O_DIRECTORY` (and `O_PATH` on Linux),
//! then every folder on the way relative to the one before (`openat`, same
//! flags), then the file itself with `O_NOFOLLOW` and checked to be a regular
//! file through its descriptor. Each step names one component and refuses a
//! symlink, so someone who can write the game directory and swaps a file or
//! folder for a symlink between a check and the open gets a refusal, never a
//! file outside the root. A plain walk rather than `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`: the same guarantee on every Unix and every kernel
//! (and under seccomp filters that refuse `openat2`), for one `openat` per path
//! component.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat, lstat};

/// How the folders on the way are opened: on Linux only as handles to
/// walk from (`O_PATH`), because opening a folder for reading is an
/// inotify event for whoever watches the folder above it (the daemon's
/// own monitor watches the game directory and each root), and a seeder
/// walks one chain of folders per file it serves (two events, and two
/// wake-ups of the monitor, per small file: `docs/design.md`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const FOLDER_ACCESS: OFlag = OFlag::O_PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const FOLDER_ACCESS: OFlag = OFlag::O_RDONLY;

/// Why a file could not be opened beneath its root.
#[derive(Debug, thiserror::Error)]
pub enum OpenBeneathError {
    #[error("{path:?} is not a relative path of plain names")]
    NotPlain { path: String },
    #[error("{component:?} in {path:?} is a symlink, which is never followed")]
    Symlink { path: String, component: String },
    #[error(
        "{component:?} in {path:?} was replaced while it was opened (a symlink is never followed)"
    )]
    Changed { path: String, component: String },
    #[error("{component:?} in {path:?} is not a folder")]
    NotAFolder { path: String, component: String },
    #[error("{path:?} is not a regular file")]
    NotAFile { path: String },
    #[error("{path:?} does not exist")]
    NotFound { path: String },
    #[error("cannot open {path:?} in {}", root.display())]
    Io {
        root: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl OpenBeneathError {
    /// True when the path itself is refused (a symlink, a file where a
    /// folder should be, not a regular file), not the disk failing.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Io { .. } | Self::NotFound { .. })
    }
}

/// Opens `relative_path` (`/`-separated, plain names only) under `root` for
/// reading. The root itself must not be a symlink; nothing on the way is
/// followed; the result is a regular file.
pub fn open_beneath(root: &Path, relative_path: &str) -> Result<File, OpenBeneathError> {
    let components: Vec<&str> = relative_path.split('/').collect();
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(OpenBeneathError::NotPlain {
            path: relative_path.to_owned(),
        });
    }
    let folder_flags = FOLDER_ACCESS | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let symlink = |component: &str| OpenBeneathError::Symlink {
        path: relative_path.to_owned(),
        component: component.to_owned(),
    };
    // Linux answers a symlink opened with O_DIRECTORY | O_NOFOLLOW with
    // ENOTDIR, not ELOOP: look again (without following) to say which.
    // Only the message depends on it; the open was refused either way.
    let fail_in =
        |parent: Option<&OwnedFd>, component: &str, errno: Errno, is_folder: bool| match errno {
            Errno::ELOOP => symlink(component),
            Errno::ENOTDIR if is_folder => {
                let kind = match parent {
                    Some(parent) => fstatat(parent, component, AtFlags::AT_SYMLINK_NOFOLLOW),
                    None => lstat(root),
                }
                .map(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT);
                match kind {
                    Ok(SFlag::S_IFLNK) => symlink(component),
                    Ok(kind) if kind != SFlag::S_IFDIR => OpenBeneathError::NotAFolder {
                        path: relative_path.to_owned(),
                        component: component.to_owned(),
                    },
                    // A folder again by now, or gone: it was swapped while
                    // it was being opened.
                    _ => OpenBeneathError::Changed {
                        path: relative_path.to_owned(),
                        component: component.to_owned(),
                    },
                }
            }
            Errno::ENOENT => OpenBeneathError::NotFound {
                path: relative_path.to_owned(),
            },
            errno => OpenBeneathError::Io {
                root: root.to_owned(),
                path: relative_path.to_owned(),
                source: errno.into(),
            },
        };
    let root_name = root.display().to_string();
    let mut folder: OwnedFd = open(root, folder_flags, Mode::empty())
        .map_err(|errno| fail_in(None, &root_name, errno, true))?;
    let (file_name, folders) = components.split_last().expect("split yields one component");
    for component in folders {
        folder = openat(&folder, *component, folder_flags, Mode::empty())
            .map_err(|errno| fail_in(Some(&folder), component, errno, true))?;
    }
    // O_NONBLOCK: a FIFO swapped in must not block the open; it has no
    // effect on reading a regular file.
    let file_flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let file = File::from(
        openat(&folder, *file_name, file_flags, Mode::empty())
            .map_err(|errno| fail_in(Some(&folder), file_name, errno, false))?,
    );
    let meta = file.metadata().map_err(|source| OpenBeneathError::Io {
        root: root.to_owned(),
        path: relative_path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(OpenBeneathError::NotAFile {
            path: relative_path.to_owned(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(file: File) -> Vec<u8> {
        let mut bytes = Vec::new();
        { file }.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn files_open_and_symlinks_anywhere_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("maps/ünï")).unwrap();
        std::fs::create_dir_all(outside.join("maps")).unwrap();
        std::fs::write(root.join("maps/ünï/表.eti"), b"inside").unwrap();
        std::fs::write(outside.join("secret"), b"outside").unwrap();
        std::fs::write(outside.join("maps/secret"), b"outside").unwrap();
        assert_eq!(
            read(open_beneath(&root, "maps/ünï/表.eti").unwrap()),
            b"inside"
        );

        std::os::unix::fs::symlink(outside.join("secret"), root.join("file-link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir-link")).unwrap();
        std::os::unix::fs::symlink("ünï", root.join("maps/inner-link")).unwrap();
        std::fs::create_dir(root.join("fifo-dir")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo-dir/fifo"), Mode::S_IRWXU).unwrap();
        for (path, expect) in [
            ("file-link", "symlink"),
            ("dir-link/secret", "symlink"),
            ("dir-link/maps/secret", "symlink"),
            ("maps/inner-link/表.eti", "symlink"),
            ("maps/ünï/表.eti/x", "not a folder"),
            ("maps", "not a regular file"),
            ("fifo-dir/fifo", "not a regular file"),
            ("../outside/secret", "plain names"),
            ("maps//x", "plain names"),
            ("/etc/passwd", "plain names"),
        ] {
            let err = open_beneath(&root, path).unwrap_err();
            assert!(err.is_refusal(), "{path}: {err}");
            assert!(err.to_string().contains(expect), "{path}: {err}");
        }
        let err = open_beneath(&root, "missing").unwrap_err();
        assert!(matches!(err, OpenBeneathError::NotFound { .. }), "{err}");
        // A symlinked root is refused too.
        let linked_root = dir.path().join("linked-root");
        std::os::unix::fs::symlink(&root, &linked_root).unwrap();
        let err = open_beneath(&linked_root, "maps/ünï/表.eti").unwrap_err();
        assert!(matches!(err, OpenBeneathError::Symlink { .. }), "{err}");
    }
}
