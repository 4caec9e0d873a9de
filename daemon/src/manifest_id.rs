//! What names a manifest and its chunks: one BLAKE3 digest over a
//! canonical encoding of its version and file list ([`ManifestId`]), so a
//! download (its resume journal), a chunk request and anything else that
//! must recognise "exactly this manifest" compare 32 bytes instead of the
//! whole list with every chunk hash; and the manifest's chunk numbering
//! ([`ChunkTable`]): its files in order, each file's chunks in offset
//! order (`docs/peer-protocol.md#chunks`).
//!
//! Pure: no I/O.

use std::fmt;

use lanspread_proto::model::{GameFileDescription, Version};
use lanspread_proto::wire::CHUNK_SIZE;

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

    /// Parses 64 hex digits (as peers send it); `None` otherwise.
    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(Self)
    }
}

/// Where each chunk of a manifest lies: chunk `i` is in the file whose
/// first chunk is the largest `first[f] <= i`. Directories and empty files
/// have no chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkTable {
    /// Per file of the manifest, the number of its first chunk.
    first: Vec<u32>,
    /// Per file, its size (to know the last chunk's length).
    sizes: Vec<u64>,
    chunks: u32,
    /// The chunks of `version.ini` (a download writes it last, so
    /// downloaders never serve them).
    sentinel: std::ops::Range<u32>,
}

/// One chunk's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlace {
    /// Index of its file in the manifest.
    pub file: usize,
    pub offset: u64,
    pub length: u64,
}

impl ChunkTable {
    pub fn new(files: &[GameFileDescription]) -> Self {
        let mut first = Vec::with_capacity(files.len());
        let mut next = 0u32;
        let mut sentinel = 0..0;
        for file in files {
            first.push(next);
            let end =
                next.saturating_add(u32::try_from(file.chunk_hashes.len()).unwrap_or(u32::MAX));
            if !file.is_dir && file.relative_path == crate::library::SENTINEL {
                sentinel = next..end;
            }
            next = end;
        }
        Self {
            first,
            sizes: files.iter().map(|f| f.size).collect(),
            chunks: next,
            sentinel,
        }
    }

    /// The chunks of `version.ini`, which downloaders never serve.
    pub fn sentinel_chunks(&self) -> std::ops::Range<u32> {
        self.sentinel.clone()
    }

    /// How many chunks the manifest has.
    pub fn len(&self) -> usize {
        self.chunks as usize
    }

    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// The number of chunk `chunk` of file `file`.
    pub fn index(&self, file: usize, chunk: usize) -> usize {
        self.first[file] as usize + chunk
    }

    /// Where chunk `index` lies, or `None` past the end.
    pub fn place(&self, index: u32) -> Option<ChunkPlace> {
        if index >= self.chunks {
            return None;
        }
        // The last file starting at or before `index` that has chunks.
        let file = self.first.partition_point(|&f| f <= index) - 1;
        let offset = u64::from(index - self.first[file]) * CHUNK_SIZE;
        Some(ChunkPlace {
            file,
            offset,
            length: (self.sizes[file] - offset).min(CHUNK_SIZE),
        })
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

    #[test]
    fn the_chunk_table_numbers_files_in_order_and_skips_empty_ones() {
        let sized = |path: &str, size: u64| GameFileDescription {
            relative_path: path.into(),
            is_dir: false,
            size,
            chunk_hashes: (0..size.div_ceil(CHUNK_SIZE))
                .map(|_| "0".repeat(64))
                .collect(),
        };
        let files = vec![
            sized("a", 2 * CHUNK_SIZE + 5),
            sized("empty", 0),
            sized("b", 7),
        ];
        let table = ChunkTable::new(&files);
        assert_eq!(table.len(), 4);
        let place = |i| table.place(i).map(|p| (p.file, p.offset, p.length));
        assert_eq!(place(0), Some((0, 0, CHUNK_SIZE)));
        assert_eq!(place(2), Some((0, 2 * CHUNK_SIZE, 5)));
        assert_eq!(place(3), Some((2, 0, 7)));
        assert_eq!(place(4), None);
        assert_eq!(table.index(2, 0), 3);
        assert_eq!(table.sentinel_chunks(), 0..0, "no version.ini");
        let with_sentinel = ChunkTable::new(&[sized("a", 5), sized("version.ini", 16)]);
        assert_eq!(with_sentinel.sentinel_chunks(), 1..2);
        let id = ManifestId::of(&Version::new("1"), &files);
        assert_eq!(ManifestId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ManifestId::from_hex("xyz"), None);
    }

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
