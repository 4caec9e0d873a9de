//! The resume journal: which chunks of a download are verified and durable,
//! kept in the state dir so a restarted daemon (even after SIGKILL) fetches
//! only the rest.
//!
//! A chunk enters the journal only after its bytes were synced. Losing the
//! journal costs a full download, nothing else. The journal names its
//! manifest by digest ([`ManifestId`]) and keeps one bit per chunk, so it
//! stays small whatever the game: 150 000 files or 38 000 chunks make a
//! file of a few dozen KiB, written at most once a second.

use std::io::Write;
use std::path::{Path, PathBuf};

use lanspread_proto::model::{GameId, Version};
use serde::{Deserialize, Serialize};

use crate::manifest_id::ManifestId;

/// Folder of journals inside the state dir.
const DIR: &str = "downloads";

/// A set of chunk indices `0..len`, one bit each. Chunks are numbered in
/// manifest order: file by file, each file's chunks in offset order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSet {
    /// How many chunks the manifest has.
    len: usize,
    /// Bit `i % 64` of word `i / 64` is chunk `i`.
    words: Vec<u64>,
}

impl ChunkSet {
    /// An empty set over `len` chunks.
    pub fn new(len: usize) -> Self {
        Self {
            len,
            words: vec![0; len.div_ceil(64)],
        }
    }

    pub fn insert(&mut self, chunk: usize) {
        assert!(chunk < self.len, "chunk {chunk} of {}", self.len);
        self.words[chunk / 64] |= 1 << (chunk % 64);
    }

    pub fn contains(&self, chunk: usize) -> bool {
        chunk < self.len && self.words[chunk / 64] & (1 << (chunk % 64)) != 0
    }

    /// How many chunks are in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// How many chunks the set is over.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is over no chunk at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A set holding all `len` chunks.
    pub fn full(len: usize) -> Self {
        let mut set = Self {
            len,
            words: vec![u64::MAX; len.div_ceil(64)],
        };
        if let (Some(last), tail @ 1..) = (set.words.last_mut(), len % 64) {
            *last = (1 << tail) - 1;
        }
        set
    }

    /// The chunks in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + bit
                })
            })
        })
    }

    /// The chunks in `self` that are not in `other` (a set over as many).
    pub fn without(&self, other: &Self) -> Self {
        Self {
            len: self.len,
            words: self
                .words
                .iter()
                .zip(other.words.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a & !b)
                .collect(),
        }
    }

    /// Adds every chunk of `other` (a set over as many).
    pub fn add_all(&mut self, other: &Self) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The wire form (`docs/peer-protocol.md#availability`): lower-case
    /// hex of the bytes, bit `i % 8` of byte `i / 8` is chunk `i`.
    pub fn to_hex(&self) -> String {
        let bytes = self.len.div_ceil(8);
        let mut hex = String::with_capacity(bytes * 2);
        for byte in self.words.iter().flat_map(|w| w.to_le_bytes()).take(bytes) {
            use std::fmt::Write;
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    /// Parses the wire form of a set over `len` chunks; `None` when it has
    /// the wrong length, a non-hex digit, or a bit past the last chunk.
    pub fn from_hex(len: usize, hex: &str) -> Option<Self> {
        if hex.len() != len.div_ceil(8) * 2 {
            return None;
        }
        let mut words = vec![0u64; len.div_ceil(64)];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
            words[i / 8] |= u64::from(byte) << ((i % 8) * 8);
        }
        let set = Self { len, words };
        set.is_well_formed().then_some(set)
    }

    /// Whether the encoding is consistent: one word per 64 chunks and no
    /// bit past the last chunk.
    fn is_well_formed(&self) -> bool {
        let tail = self.len % 64;
        self.words.len() == self.len.div_ceil(64)
            && (tail == 0 || self.words.last().is_none_or(|&w| w >> tail == 0))
    }
}

/// A download's progress on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub id: GameId,
    pub version: Version,
    /// [`ManifestId`] (hex) of the version and file list being downloaded,
    /// exactly as requested.
    pub manifest: String,
    /// The verified, durable chunks.
    pub done: ChunkSet,
}

impl Journal {
    pub fn path(state_dir: &Path, id: &GameId) -> PathBuf {
        state_dir.join(DIR).join(format!("{id}.json"))
    }

    /// The journal of `id`, if one exists for exactly this version and
    /// manifest of `chunks` chunks (anything else is stale and ignored).
    pub fn load_matching(
        state_dir: &Path,
        id: &GameId,
        version: &Version,
        manifest: &ManifestId,
        chunks: usize,
    ) -> Option<Self> {
        let bytes = std::fs::read(Self::path(state_dir, id)).ok()?;
        let journal: Self = serde_json::from_slice(&bytes).ok()?;
        let matches = &journal.id == id
            && &journal.version == version
            && journal.manifest == manifest.to_hex()
            && journal.done.len == chunks
            && journal.done.is_well_formed();
        matches.then_some(journal)
    }

    /// Writes the journal atomically (a temporary file, synced, renamed
    /// over the old one).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(Self::path(state_dir, &self.id))
            .map_err(|err| err.error)?;
        Ok(())
    }

    /// Removes the journal of `id` (the download finished).
    pub fn remove(state_dir: &Path, id: &GameId) {
        let _ = std::fs::remove_file(Self::path(state_dir, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sets_round_trip_through_their_wire_form() {
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 200] {
            let mut set = ChunkSet::new(len);
            for i in (0..len).step_by(3) {
                set.insert(i);
            }
            let hex = set.to_hex();
            assert_eq!(hex.len(), len.div_ceil(8) * 2);
            assert_eq!(ChunkSet::from_hex(len, &hex), Some(set.clone()));
            assert_eq!(
                set.iter().collect::<Vec<_>>(),
                (0..len).step_by(3).collect::<Vec<_>>()
            );
            let full = ChunkSet::full(len);
            assert_eq!(full.count(), len);
            assert_eq!(full.without(&set).count(), len - set.count());
        }
        // Bit 0 of byte 0 is chunk 0.
        let mut one = ChunkSet::new(12);
        one.insert(0);
        one.insert(9);
        assert_eq!(one.to_hex(), "0102");
        // Wrong length, bad digits, a bit past the end.
        assert_eq!(ChunkSet::from_hex(12, "01"), None);
        assert_eq!(ChunkSet::from_hex(12, "zz02"), None);
        assert_eq!(ChunkSet::from_hex(12, "0110"), None);
    }
    use lanspread_proto::model::GameFileDescription;

    fn files(n: usize) -> Vec<GameFileDescription> {
        (0..n)
            .map(|i| GameFileDescription {
                relative_path: format!("data/{:03}/{i}.bin", i % 997),
                is_dir: false,
                size: 1 + (i as u64 * 7919) % 65_536,
                chunk_hashes: vec![blake3::hash(&i.to_le_bytes()).to_hex().to_string()],
            })
            .collect()
    }

    #[test]
    fn a_journal_is_reused_only_for_the_same_version_and_files() {
        let state = tempfile::tempdir().unwrap();
        let id = GameId::new("g").unwrap();
        let v1 = Version::new("1");
        let files = files(2);
        let manifest = ManifestId::of(&v1, &files);
        let mut done = ChunkSet::new(2);
        done.insert(1);
        let journal = Journal {
            id: id.clone(),
            version: v1.clone(),
            manifest: manifest.to_hex(),
            done,
        };
        journal.save(state.path()).unwrap();
        assert_eq!(
            Journal::load_matching(state.path(), &id, &v1, &manifest, 2),
            Some(journal)
        );
        let v2 = Version::new("2");
        assert_eq!(
            Journal::load_matching(state.path(), &id, &v2, &ManifestId::of(&v2, &files), 2),
            None
        );
        let mut other = files.clone();
        other[0].chunk_hashes[0] = "changed".into();
        let changed = ManifestId::of(&v1, &other);
        assert_eq!(
            Journal::load_matching(state.path(), &id, &v1, &changed, 2),
            None
        );
        Journal::remove(state.path(), &id);
        assert_eq!(
            Journal::load_matching(state.path(), &id, &v1, &manifest, 2),
            None
        );
    }

    /// 150 000 files: the journal is a bitmap and a digest, a few dozen KiB,
    /// however many chunks are done; it round-trips and matches only its
    /// own manifest.
    #[test]
    fn a_journal_of_150_000_files_is_small_and_matches_by_digest() {
        const FILES: usize = 150_000;
        let state = tempfile::tempdir().unwrap();
        let id = GameId::new("many").unwrap();
        let version = Version::new("1.0");
        let files = files(FILES);
        let started = std::time::Instant::now();
        let manifest = ManifestId::of(&version, &files);
        let digest_time = started.elapsed();
        let mut done = ChunkSet::new(FILES);
        for chunk in (0..FILES).filter(|c| c % 3 != 1) {
            done.insert(chunk);
        }
        let journal = Journal {
            id: id.clone(),
            version: version.clone(),
            manifest: manifest.to_hex(),
            done,
        };
        let started = std::time::Instant::now();
        journal.save(state.path()).unwrap();
        let save_time = started.elapsed();
        let size = std::fs::metadata(Journal::path(state.path(), &id))
            .unwrap()
            .len();
        assert!(size < 64 * 1024, "journal of {size} bytes");
        let started = std::time::Instant::now();
        let loaded = Journal::load_matching(state.path(), &id, &version, &manifest, FILES)
            .expect("the journal matches its own manifest");
        let load_time = started.elapsed();
        assert_eq!(loaded, journal);
        assert_eq!(loaded.done.count(), FILES - FILES / 3);
        assert!(loaded.done.contains(0) && !loaded.done.contains(1));
        eprintln!(
            "150 000 files: digest {digest_time:?}, journal {size} bytes, save {save_time:?}, load {load_time:?}"
        );

        // One changed byte anywhere in the list is another manifest.
        let mut changed = files;
        changed[FILES - 1].size += 1;
        let other = ManifestId::of(&version, &changed);
        assert_eq!(
            Journal::load_matching(state.path(), &id, &version, &other, FILES),
            None
        );
        // A chunk count that disagrees is refused as well.
        assert_eq!(
            Journal::load_matching(state.path(), &id, &version, &manifest, FILES + 1),
            None
        );
    }

    #[test]
    fn a_chunk_set_with_bits_past_its_end_is_not_well_formed() {
        let mut set = ChunkSet::new(65);
        set.insert(64);
        assert!(set.is_well_formed() && set.contains(64) && !set.contains(65));
        set.words[1] |= 1 << 1;
        assert!(!set.is_well_formed());
        assert!(
            !ChunkSet {
                len: 64,
                words: vec![0, 0]
            }
            .is_well_formed()
        );
    }
}
