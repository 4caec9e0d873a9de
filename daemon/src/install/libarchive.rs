//! A minimal, safe reader over libarchive's C API: open a (multi-volume)
//! archive by file names, walk its entries, read their data.
//!
//! This is the workspace's only `unsafe` code. It exists because the Rust
//! wrappers available (compress-tools) cannot open multi-volume sets and do
//! not expose symlink or hard-link targets, which extraction must check
//! before it writes anything. Every call below follows libarchive's
//! documented contract; pointers never leave this module.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

#[repr(C)]
struct RawArchive {
    _private: [u8; 0],
}
#[repr(C)]
struct RawEntry {
    _private: [u8; 0],
}

const ARCHIVE_EOF: c_int = 1;
const ARCHIVE_OK: c_int = 0;
const ARCHIVE_WARN: c_int = -20;

const AE_IFMT: u32 = 0o170000;
const AE_IFREG: u32 = 0o100000;
const AE_IFLNK: u32 = 0o120000;
const AE_IFDIR: u32 = 0o040000;

/// Block size for reading volumes from disk.
const BLOCK_SIZE: usize = 1 << 20;

#[link(name = "archive")]
unsafe extern "C" {
    fn archive_read_new() -> *mut RawArchive;
    fn archive_read_support_filter_all(a: *mut RawArchive) -> c_int;
    fn archive_read_support_format_all(a: *mut RawArchive) -> c_int;
    fn archive_read_open_filenames(
        a: *mut RawArchive,
        filenames: *const *const c_char,
        block_size: usize,
    ) -> c_int;
    fn archive_read_next_header(a: *mut RawArchive, entry: *mut *mut RawEntry) -> c_int;
    fn archive_read_data(a: *mut RawArchive, buf: *mut c_void, size: usize) -> isize;
    fn archive_read_free(a: *mut RawArchive) -> c_int;
    fn archive_error_string(a: *mut RawArchive) -> *const c_char;
    fn archive_entry_pathname_utf8(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_pathname(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_filetype(e: *mut RawEntry) -> u32;
    fn archive_entry_perm(e: *mut RawEntry) -> u32;
    fn archive_entry_symlink(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_hardlink(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_is_encrypted(e: *mut RawEntry) -> c_int;
}

/// Why libarchive refused.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    pub message: String,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symbolic link with its (unchecked) target.
    Symlink(String),
    /// A hard link to an earlier entry's (unchecked) path.
    Hardlink(String),
    /// Devices, FIFOs, sockets: never extracted.
    Other,
}

/// One archive entry's header.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The (unchecked) path inside the archive.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    pub encrypted: bool,
}

/// An open archive. Not `Send`-safe to share, but movable to a blocking
/// thread as a whole.
#[derive(Debug)]
pub struct ArchiveReader {
    raw: *mut RawArchive,
    /// The volume names libarchive reads from; must outlive `raw`.
    _volumes: Vec<CString>,
}

// SAFETY: the archive handle is owned exclusively by this value and only
// used through `&mut self`; libarchive handles may move between threads.
unsafe impl Send for ArchiveReader {}

impl ArchiveReader {
    /// Opens the volumes of one archive set, first volume first.
    pub fn open(volumes: &[PathBuf]) -> Result<Self, ArchiveError> {
        let names: Vec<CString> = volumes
            .iter()
            .map(|p| path_cstring(p))
            .collect::<Result<_, _>>()?;
        let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        pointers.push(std::ptr::null());
        // SAFETY: archive_read_new returns a fresh handle or null.
        let raw = unsafe { archive_read_new() };
        if raw.is_null() {
            return Err(ArchiveError {
                message: "libarchive could not allocate a reader".into(),
            });
        }
        let reader = Self {
            raw,
            _volumes: names,
        };
        // SAFETY: `raw` is a valid handle; the name array is NULL
        // terminated and its strings live as long as `reader`.
        unsafe {
            archive_read_support_filter_all(raw);
            archive_read_support_format_all(raw);
            let status = archive_read_open_filenames(raw, pointers.as_ptr(), BLOCK_SIZE);
            if status != ARCHIVE_OK {
                return Err(reader.error("cannot open the archive"));
            }
        }
        Ok(reader)
    }

    /// The next entry's header, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        let mut entry: *mut RawEntry = std::ptr::null_mut();
        // SAFETY: `self.raw` is open; `entry` receives a pointer owned by
        // the archive, valid until the next call.
        let status = unsafe { archive_read_next_header(self.raw, &mut entry) };
        match status {
            ARCHIVE_EOF => return Ok(None),
            ARCHIVE_OK | ARCHIVE_WARN => {}
            _ => return Err(self.error("cannot read the next entry")),
        }
        // SAFETY: `entry` is valid until the next header call; strings are
        // copied out before returning.
        unsafe {
            let mut path = c_string(archive_entry_pathname_utf8(entry));
            if path.is_none() {
                path = c_string(archive_entry_pathname(entry));
            }
            let path = path.ok_or_else(|| ArchiveError {
                message: "an entry has no path (or one that is not UTF-8)".into(),
            })?;
            let hardlink = c_string(archive_entry_hardlink(entry));
            let kind = match (hardlink, archive_entry_filetype(entry) & AE_IFMT) {
                (Some(target), _) => EntryKind::Hardlink(target),
                (None, AE_IFREG) => EntryKind::File,
                (None, AE_IFDIR) => EntryKind::Dir,
                (None, AE_IFLNK) => {
                    EntryKind::Symlink(c_string(archive_entry_symlink(entry)).unwrap_or_default())
                }
                _ => EntryKind::Other,
            };
            Ok(Some(Entry {
                path,
                kind,
                mode: archive_entry_perm(entry),
                encrypted: archive_entry_is_encrypted(entry) > 0,
            }))
        }
    }

    /// Reads the current entry's data into `buf`; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        let n = unsafe { archive_read_data(self.raw, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(self.error("cannot read entry data"));
        }
        Ok(n as usize)
    }

    fn error(&self, context: &str) -> ArchiveError {
        // SAFETY: the error string belongs to the handle and is copied.
        let detail = unsafe { c_string(archive_error_string(self.raw)) };
        ArchiveError {
            message: match detail {
                Some(detail) => format!("{context}: {detail}"),
                None => context.to_owned(),
            },
        }
    }
}

impl Drop for ArchiveReader {
    fn drop(&mut self) {
        // SAFETY: `raw` came from archive_read_new and is freed once.
        unsafe {
            archive_read_free(self.raw);
        }
    }
}

/// Copies a C string, if non-null and UTF-8.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string.
unsafe fn c_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .ok()
        .map(str::to_owned)
}

fn path_cstring(path: &Path) -> Result<CString, ArchiveError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ArchiveError {
        message: format!("{} contains a NUL byte", path.display()),
    })
}
