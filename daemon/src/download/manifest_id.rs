//! A manifest's identity: one BLAKE3 digest over a canonical encoding of
//! its version and file list, so a download (its resume journal) and
//! anything else that must recognise "exactly this manifest" compare 32
//! bytes instead of the whole list with every chunk hash.
//!
//! Pure: no I/O.

use std::fmt;

use lanspread_proto::model::{GameFileDescription, Version};

/// The digest of one manifest (version and files, in order).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestId(blake3::Hash);

impl ManifestId {
    /// The digest of `version` and `files`: BLAKE3 over their JSON encoding
    /// (`serde_json`, fields in declaration order: the same input always
    /// gives the same bytes), streamed into the hasher so a 150 000-file
    /// list is never held twice.
    pub fn of(version: &Version, files: &[GameFileDescription]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"lanspread manifest v1\0");
        // serde_json writes a few bytes at a time: buffer them, or the
        // hasher's per-call cost dominates.
        let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, &mut hasher);
        serde_json::to_writer(&mut buffered, &(version, files))
            .expect("a manifest always encodes as JSON");
        buffered
            .into_inner()
            .map_err(|_| ())
            .expect("hashing never fails");
        Self(hasher.finalize())
    }

    /// Lower-case hex, 64 digits.
    pub fn to_hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

impl fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestId({})", self.0.to_hex())
    }
}

impl fmt::Display for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, hashes: &[&str]) -> GameFileDescription {
        GameFileDescription {
            relative_path: path.into(),
            is_dir: false,
            size: 1,
            chunk_hashes: hashes.iter().map(|h| (*h).into()).collect(),
        }
    }

    #[test]
    fn any_change_to_version_paths_order_sizes_or_hashes_changes_the_id() {
        let v = Version::new("1");
        let files = vec![file("a", &["h0"]), file("b", &["h1"])];
        let id = ManifestId::of(&v, &files);
        assert_eq!(id, ManifestId::of(&v, &files.clone()), "stable");
        assert_ne!(id, ManifestId::of(&Version::new("2"), &files));
        let mut reordered = files.clone();
        reordered.swap(0, 1);
        assert_ne!(id, ManifestId::of(&v, &reordered));
        let mut resized = files.clone();
        resized[1].size = 2;
        assert_ne!(id, ManifestId::of(&v, &resized));
        let mut rehashed = files.clone();
        rehashed[0].chunk_hashes[0] = "h2".into();
        assert_ne!(id, ManifestId::of(&v, &rehashed));
        let mut renamed = files;
        renamed[0].relative_path = "c".into();
        assert_ne!(id, ManifestId::of(&v, &renamed));
        assert_eq!(id.to_hex().len(), 64);
    }
}
