//! A minimal, safe reader over libarchive's C API: open a (multi-volume)
//! archive by file names, walk its entries, read their data.
//!
//! This is the workspace's only `unsafe` code. It exists because the Rust
//! wrappers available (compress-tools) cannot open multi-volume sets and do
//! not expose symlink or hard-link targets, which extraction must check
//! before it writes anything. Every call below follows libarchive's
//! documented contract; pointers never leave this module.
//!
//! Entry names come out as UTF-8 whatever locale the process runs in.
//! libarchive converts every name it reads into the charset of the calling
//! thread's `LC_CTYPE` locale, and a Rust program never calls `setlocale`,
//! so its threads stay in the ASCII "C" locale and every non-ASCII name
//! fails to convert (and the `_utf8` getters convert *from* that lost
//! form, too late to help). Every call into libarchive therefore runs with
//! the calling thread switched to a UTF-8 `LC_CTYPE` (`uselocale`, which
//! touches only that thread and is undone when the call returns). Zip
//! names stored without the UTF-8 flag reach us as raw bytes: valid UTF-8
//! is taken as such, anything else is decoded as CP437 (the zip format's
//! charset) by [`decode_cp437`]. A name that cannot be decoded ends the
//! extraction with an error naming the entry.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::library::escape_bytes;

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

/// `archive_format()` of a zip entry, under `ARCHIVE_FORMAT_BASE_MASK`.
const ARCHIVE_FORMAT_ZIP: c_int = 0x50000;
const ARCHIVE_FORMAT_BASE_MASK: c_int = 0xff0000;

/// UTF-8 locales tried, in order, for the threads that call libarchive.
/// `C.UTF-8` ships with glibc's `libc-bin` on Debian and is built into
/// musl; the others cover systems that only have a language's locale.
const UTF8_LOCALES: [&str; 3] = ["C.UTF-8", "C.utf8", "en_US.UTF-8"];

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
    fn archive_format(a: *mut RawArchive) -> c_int;
    fn archive_read_data(a: *mut RawArchive, buf: *mut c_void, size: usize) -> isize;
    fn archive_read_free(a: *mut RawArchive) -> c_int;
    fn archive_error_string(a: *mut RawArchive) -> *const c_char;
    fn archive_entry_pathname_utf8(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_pathname(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_filetype(e: *mut RawEntry) -> u32;
    fn archive_entry_perm(e: *mut RawEntry) -> u32;
    fn archive_entry_symlink(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_symlink_utf8(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_hardlink(e: *mut RawEntry) -> *const c_char;
    fn archive_entry_hardlink_utf8(e: *mut RawEntry) -> *const c_char;
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
    /// How many entries were read, and the last one's path: names the
    /// entry whose name cannot be decoded at all.
    entries_read: u64,
    last_path: Option<String>,
}

// SAFETY: the archive handle is owned exclusively by this value and only
// used through `&mut self`; libarchive handles may move between threads.
unsafe impl Send for ArchiveReader {}

impl ArchiveReader {
    /// Opens the volumes of one archive set, first volume first.
    pub fn open(volumes: &[PathBuf]) -> Result<Self, ArchiveError> {
        let _locale = Utf8Locale::enter();
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
            entries_read: 0,
            last_path: None,
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
        let locale = Utf8Locale::enter();
        let mut entry: *mut RawEntry = std::ptr::null_mut();
        // SAFETY: `self.raw` is open; `entry` receives a pointer owned by
        // the archive, valid until the next call.
        let status = unsafe { archive_read_next_header(self.raw, &mut entry) };
        match status {
            ARCHIVE_EOF => return Ok(None),
            ARCHIVE_OK | ARCHIVE_WARN => {}
            _ => return Err(self.error("cannot read the next entry")),
        }
        self.entries_read += 1;
        // SAFETY: `self.raw` is open and positioned on an entry.
        let zip =
            unsafe { archive_format(self.raw) } & ARCHIVE_FORMAT_BASE_MASK == ARCHIVE_FORMAT_ZIP;
        // SAFETY: `entry` is valid until the next header call; strings are
        // copied out before returning.
        let (path, symlink, hardlink) = unsafe {
            (
                entry_text(
                    archive_entry_pathname_utf8(entry),
                    archive_entry_pathname(entry),
                    zip,
                ),
                entry_text(
                    archive_entry_symlink_utf8(entry),
                    archive_entry_symlink(entry),
                    zip,
                ),
                entry_text(
                    archive_entry_hardlink_utf8(entry),
                    archive_entry_hardlink(entry),
                    zip,
                ),
            )
        };
        // A name or link target libarchive could not convert comes with a
        // warning and no text at all: name the entry as well as we can.
        let entry_name = match (&path, &self.last_path) {
            (Ok(Some(path)), _) => format!("entry {path:?}"),
            (Err(raw), _) => format!("entry \"{}\"", escape_bytes(raw)),
            (Ok(None), Some(last)) => {
                format!("entry {} (the one after {last:?})", self.entries_read)
            }
            (Ok(None), None) => format!("entry {}", self.entries_read),
        };
        let undecodable = |what: &str, detail: Option<&str>| {
            let detail = detail
                .map(|d| format!(" (libarchive: {})", d.trim_end_matches('.')))
                .unwrap_or_default();
            let hint = if locale.is_some() {
                ""
            } else {
                "; no UTF-8 locale (such as C.UTF-8) is installed on this system"
            };
            ArchiveError {
                message: format!("{entry_name}: {what}{detail}{hint}"),
            }
        };
        if status == ARCHIVE_WARN {
            let warning = self.error_string().unwrap_or_default();
            // "Pathname/Linkname/Symlink cannot be converted …"; owner and
            // group names ("Uname", "Gname") are never used, so their
            // warnings cost nothing.
            let lower = warning.to_lowercase();
            if lower.contains("convert") && (lower.contains("path") || lower.contains("link")) {
                return Err(undecodable(
                    "its name or link target cannot be decoded",
                    Some(&warning),
                ));
            }
            tracing::debug!(warning = %warning, "libarchive warning on an entry header");
        }
        let path = match path {
            Ok(Some(path)) => path,
            Ok(None) => return Err(undecodable("its name cannot be decoded", None)),
            Err(_) => {
                return Err(undecodable(
                    "its name is not UTF-8 and the format names no charset",
                    None,
                ));
            }
        };
        let link_error = |raw: Vec<u8>| {
            undecodable(
                &format!(
                    "its link target \"{}\" is not UTF-8 and the format names no charset",
                    escape_bytes(&raw)
                ),
                None,
            )
        };
        let symlink = symlink.map_err(link_error)?;
        let hardlink = hardlink.map_err(link_error)?;
        self.last_path = Some(path.clone());
        // SAFETY: as above.
        let (filetype, mode, encrypted) = unsafe {
            (
                archive_entry_filetype(entry),
                archive_entry_perm(entry),
                archive_entry_is_encrypted(entry) > 0,
            )
        };
        let kind = match (hardlink, filetype & AE_IFMT) {
            (Some(target), _) => EntryKind::Hardlink(target),
            (None, AE_IFREG) => EntryKind::File,
            (None, AE_IFDIR) => EntryKind::Dir,
            (None, AE_IFLNK) => EntryKind::Symlink(symlink.unwrap_or_default()),
            _ => EntryKind::Other,
        };
        Ok(Some(Entry {
            path,
            kind,
            mode,
            encrypted,
        }))
    }

    /// Reads the current entry's data into `buf`; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        let _locale = Utf8Locale::enter();
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes.
        let n = unsafe { archive_read_data(self.raw, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(self.error("cannot read entry data"));
        }
        Ok(n as usize)
    }

    fn error(&self, context: &str) -> ArchiveError {
        ArchiveError {
            message: match self.error_string() {
                Some(detail) => format!("{context}: {detail}"),
                None => context.to_owned(),
            },
        }
    }

    /// libarchive's last error or warning on this handle.
    fn error_string(&self) -> Option<String> {
        // SAFETY: the error string belongs to the handle and is copied.
        unsafe { c_string(archive_error_string(self.raw)) }
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
    // SAFETY: per the caller.
    unsafe { c_bytes(ptr) }.and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Copies a C string's bytes, if non-null.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string.
unsafe fn c_bytes(ptr: *const c_char) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    Some(unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec())
}

/// An entry's name or link target as text: libarchive's UTF-8 form when it
/// has one, else the raw bytes (a zip's are decoded as CP437); `Ok(None)`
/// when there is none at all, `Err(raw)` when the bytes are not text.
///
/// # Safety
/// Both pointers are null or point to NUL-terminated strings.
unsafe fn entry_text(
    utf8: *const c_char,
    raw: *const c_char,
    zip: bool,
) -> Result<Option<String>, Vec<u8>> {
    // SAFETY: per the caller.
    if let Some(text) = unsafe { c_string(utf8) } {
        return Ok(Some(text));
    }
    // SAFETY: per the caller.
    match unsafe { c_bytes(raw) } {
        None => Ok(None),
        Some(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text)),
            Err(err) if zip => Ok(Some(decode_cp437(err.as_bytes()))),
            Err(err) => Err(err.into_bytes()),
        },
    }
}

/// Code page 437 above ASCII (bytes 0x80 to 0xFF), the charset the zip
/// format specifies for names without the UTF-8 flag.
const CP437_HIGH: &str = concat!(
    "ÇüéâäàåçêëèïîìÄÅ",
    "ÉæÆôöòûùÿÖÜ¢£¥₧ƒ",
    "áíóúñÑªº¿⌐¬½¼¡«»",
    "░▒▓│┤╡╢╖╕╣║╗╝╜╛┐",
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧",
    "╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀",
    "αßΓπΣσµτΦΘΩδ∞φε∩",
    "≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}",
);

/// Decodes CP437 bytes; every byte has a character, and no byte above
/// ASCII becomes `/`, `\` or `.`, so decoding cannot change how a path
/// splits.
fn decode_cp437(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                char::from(b)
            } else {
                CP437_HIGH
                    .chars()
                    .nth(usize::from(b - 0x80))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            }
        })
        .collect()
}

/// A UTF-8 `LC_CTYPE` locale object, created once and shared by every
/// thread (glibc allows one locale object in many threads).
#[derive(Debug)]
struct SharedLocale(libc::locale_t);

// SAFETY: the locale object is never modified or freed after creation, and
// `uselocale` may install one object in several threads at once.
unsafe impl Send for SharedLocale {}
// SAFETY: as above.
unsafe impl Sync for SharedLocale {}

/// The calling thread switched to a UTF-8 `LC_CTYPE` until this is dropped
/// (on the same thread: the guard is not `Send`).
#[derive(Debug)]
struct Utf8Locale {
    previous: libc::locale_t,
}

impl Utf8Locale {
    /// Switches the calling thread; `None` (and one warning per process)
    /// when no UTF-8 locale is installed, and names stay ASCII-only.
    fn enter() -> Option<Self> {
        static LOCALE: OnceLock<Option<SharedLocale>> = OnceLock::new();
        let shared = LOCALE.get_or_init(|| {
            let found = UTF8_LOCALES.iter().find_map(|name| {
                let name = CString::new(*name).ok()?;
                // SAFETY: a valid mask and name; a null base locale asks
                // for a new object. Returns null on failure.
                let locale = unsafe {
                    libc::newlocale(libc::LC_CTYPE_MASK, name.as_ptr(), std::ptr::null_mut())
                };
                (!locale.is_null()).then_some(SharedLocale(locale))
            });
            if found.is_none() {
                tracing::warn!(
                    tried = ?UTF8_LOCALES,
                    "no UTF-8 locale is installed: archive entries with non-ASCII names cannot be extracted"
                );
            }
            found
        });
        let locale = shared.as_ref()?;
        // SAFETY: `locale.0` is a valid locale object that lives forever.
        let previous = unsafe { libc::uselocale(locale.0) };
        Some(Self { previous })
    }
}

impl Drop for Utf8Locale {
    fn drop(&mut self) {
        // SAFETY: `previous` is what `uselocale` returned on this thread
        // (a locale object or LC_GLOBAL_LOCALE), still valid.
        unsafe {
            libc::uselocale(self.previous);
        }
    }
}

fn path_cstring(path: &Path) -> Result<CString, ArchiveError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ArchiveError {
        message: format!("{} contains a NUL byte", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp437_gives_every_byte_its_own_character_and_never_a_separator() {
        let high: Vec<u8> = (0x80..=0xff).collect();
        let decoded: Vec<char> = decode_cp437(&high).chars().collect();
        assert_eq!(decoded.len(), 128);
        let distinct: std::collections::HashSet<char> = decoded.iter().copied().collect();
        assert_eq!(distinct.len(), 128);
        assert!(decoded.iter().all(|c| !c.is_ascii()));
        assert_eq!(
            decode_cp437(b"\x9aberspiel/stra\xe1e.cfg"),
            "Überspiel/straße.cfg"
        );
        assert_eq!(decode_cp437(b"\xa5and\xa3 \xab\xff"), "Ñandú ½\u{a0}");
        assert_eq!(decode_cp437(b"plain/ascii.txt"), "plain/ascii.txt");
    }
}
