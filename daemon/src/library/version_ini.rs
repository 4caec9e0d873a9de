//! Reading a game's version from its `version.ini` sentinel.
//!
//! The version is the value of a `version=` key (in any or no INI section),
//! else the first non-empty line. The file is outside input: only its first
//! [`MAX_VERSION_INI_BYTES`] are read, and text that is not a printable
//! UTF-8 version is rejected with a reason instead of being announced.

use std::io::Read;
use std::path::Path;

use lanspread_proto::model::Version;

/// Bytes of `version.ini` read at most; a larger file is refused.
pub const MAX_VERSION_INI_BYTES: u64 = 64 * 1024;

/// Longest accepted version string, in bytes.
pub const MAX_VERSION_LEN: usize = 128;

/// Why a `version.ini` yields no version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionIniError {
    #[error("version.ini is empty")]
    Empty,
    #[error("version.ini is larger than {MAX_VERSION_INI_BYTES} bytes")]
    TooLarge,
    #[error("version.ini is not UTF-8 text")]
    NotText,
    #[error(
        "version.ini holds a version longer than {MAX_VERSION_LEN} bytes or with control characters"
    )]
    BadVersion,
    #[error("cannot read version.ini: {0}")]
    Read(String),
}

/// Reads and parses the `version.ini` at `path`.
pub fn read_version_ini(path: &Path) -> Result<Version, VersionIniError> {
    let file = std::fs::File::open(path).map_err(|e| VersionIniError::Read(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_VERSION_INI_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| VersionIniError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_VERSION_INI_BYTES {
        return Err(VersionIniError::TooLarge);
    }
    parse_version_ini(&bytes)
}

/// Parses `version.ini` content.
pub fn parse_version_ini(bytes: &[u8]) -> Result<Version, VersionIniError> {
    let text = std::str::from_utf8(bytes).map_err(|_| VersionIniError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = || text.lines().map(str::trim).filter(|l| !l.is_empty());
    let keyed = lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("version")
            .then(|| value.trim())
    });
    let candidate = match keyed {
        Some(value) => value,
        None => lines()
            .find(|l| !is_section_or_comment(l))
            .ok_or(VersionIniError::Empty)?,
    };
    let candidate = candidate.trim_matches('"');
    if candidate.is_empty() {
        return Err(VersionIniError::Empty);
    }
    if candidate.len() > MAX_VERSION_LEN || candidate.chars().any(char::is_control) {
        return Err(VersionIniError::BadVersion);
    }
    Ok(Version::new(candidate))
}

/// `[section]` headers and `;` comments never hold the version.
fn is_section_or_comment(line: &str) -> bool {
    line.starts_with(';') || (line.starts_with('[') && line.ends_with(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, VersionIniError> {
        parse_version_ini(s.as_bytes()).map(|v| v.as_str().to_owned())
    }

    #[test]
    fn version_key_in_any_section_wins() {
        assert_eq!(parse("[game]\nname=x\nversion=1.10\n").unwrap(), "1.10");
        assert_eq!(parse("Version = 20240612\r\n").unwrap(), "20240612");
        assert_eq!(parse("\u{feff}version=\"2.0\"").unwrap(), "2.0");
    }

    #[test]
    fn otherwise_the_first_non_empty_line() {
        assert_eq!(parse("\n\n  1.2.3  \nother").unwrap(), "1.2.3");
        assert_eq!(parse("[section]\n7\n").unwrap(), "7");
    }

    #[test]
    fn empty_binary_and_odd_files_are_refused() {
        assert_eq!(parse(""), Err(VersionIniError::Empty));
        assert_eq!(parse("\n \n\t\n"), Err(VersionIniError::Empty));
        assert_eq!(parse("version=\n"), Err(VersionIniError::Empty));
        assert_eq!(
            parse_version_ini(&[0xff, 0xfe, 0x00, 0x81]),
            Err(VersionIniError::NotText)
        );
        assert_eq!(parse("1\u{0}2"), Err(VersionIniError::BadVersion));
        assert_eq!(parse(&"9".repeat(500)), Err(VersionIniError::BadVersion));
    }

    #[test]
    fn a_huge_file_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version.ini");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 30).unwrap(); // sparse 1 GiB
        assert_eq!(read_version_ini(&path), Err(VersionIniError::TooLarge));
    }
}
