//! Storing one fetched chunk while it arrives
//! (`docs/download.md#storing-a-chunk`): on the fetch thread that
//! decrypted them, the pieces of the stream are copied, still in that
//! core's cache, into a 128 KiB slice; each whole slice is hashed (BLAKE3
//! gets aligned input, sixteen 1 KiB chunks at a time) and written with
//! one `pwrite`, and no byte crosses to another thread.
//! The chunk counts only when the hash of the whole matched; no chunk is
//! ever gathered in memory.
//!
//! Writing before the verdict is safe because of [`Claims`]: one fetch at
//! a time may write a chunk's region (the endgame and a complete holder's
//! choice among alternatives can deliver one chunk twice), and a region
//! that verified is never written again (it is being served to the swarm).
//! Bytes that failed leave the region unverified; the chunk is fetched
//! again and overwrites them.

use std::fs::OpenOptions;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::transport::ChunkSink;

use super::plan::ChunkId;
use super::sentinel::SentinelError;

/// Bytes gathered, hashed and written in one go: a slice stays in the
/// fetch thread's L2 cache (256 KiB or more on any x86-64 core of the
/// last decade) from the copy through the hash to the write.
const SLICE_BYTES: usize = 128 * 1024;

/// The buffer a slice needs when `rest` bytes of the chunk are to come
/// (the one chunk of a small file needs less than a slice).
fn slice_capacity(rest: u64) -> usize {
    usize::try_from(rest).map_or(SLICE_BYTES, |rest| rest.min(SLICE_BYTES))
}

/// Where each chunk's region stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Nothing verified in it; a fetch may claim it.
    Open,
    /// The fetch holding claim `token` writes it (not verified yet);
    /// `now` while a write is under way (it cannot be taken over then).
    Writing { token: u64, now: bool },
    /// It holds the verified chunk; never written again.
    Verified,
}

/// Which chunk regions are being written or hold verified bytes; shared by
/// every fetch of one download.
#[derive(Debug)]
pub struct Claims {
    state: Mutex<ClaimState>,
    changed: Condvar,
}

#[derive(Debug)]
struct ClaimState {
    regions: Vec<Region>,
    next_token: u64,
}

/// What [`Claims::try_claim`] found.
enum Claimed {
    /// The region is ours to write.
    Ours(Claim),
    /// Another fetch writes it.
    Taken,
    /// It holds the verified chunk.
    Verified,
}

impl Claims {
    /// `count` chunks; `verified(id)` says which a resumed download
    /// already holds.
    pub fn new(count: usize, verified: impl Fn(ChunkId) -> bool) -> Self {
        let regions = (0..count)
            .map(|id| {
                if verified(id) {
                    Region::Verified
                } else {
                    Region::Open
                }
            })
            .collect();
        Self {
            state: Mutex::new(ClaimState {
                regions,
                next_token: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClaimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, ClaimState>) -> MutexGuard<'a, ClaimState> {
        self.changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new claim on `id`, in `state` (locked); `now` if its write starts
    /// at once.
    fn grant(self: &Arc<Self>, state: &mut ClaimState, id: ChunkId, now: bool) -> Claim {
        state.next_token += 1;
        let token = state.next_token;
        state.regions[id] = Region::Writing { token, now };
        Claim {
            claims: Arc::clone(self),
            id,
            token,
            verified: false,
        }
    }

    /// The right to write chunk `id`'s region, if nobody writes it and it
    /// is not verified; never waits.
    fn try_claim(self: &Arc<Self>, id: ChunkId) -> Claimed {
        let mut state = self.state();
        match state.regions[id] {
            Region::Open => Claimed::Ours(self.grant(&mut state, id, false)),
            Region::Writing { .. } => Claimed::Taken,
            Region::Verified => Claimed::Verified,
        }
    }

    /// The right to write chunk `id`'s region at once, taken from the fetch
    /// that writes it (which stops writing: it learns so at its next
    /// slice), once its write under way ended (a page-cache write of one
    /// slice). For a fetch whose copy is whole and verified in memory;
    /// `None` once the region holds the verified chunk.
    fn take_over(self: &Arc<Self>, id: ChunkId) -> Option<Claim> {
        let mut state = self.state();
        loop {
            match state.regions[id] {
                Region::Verified => return None,
                Region::Writing { now: true, .. } => state = self.wait(state),
                Region::Open | Region::Writing { now: false, .. } => {
                    return Some(self.grant(&mut state, id, true));
                }
            }
        }
    }

    /// Whether claim `token` still holds chunk `id`'s region; if so, a
    /// write of it is under way until [`Claims::end_write`].
    fn begin_write(&self, id: ChunkId, token: u64) -> bool {
        let mut state = self.state();
        if let Region::Writing { token: holder, now } = &mut state.regions[id]
            && *holder == token
        {
            *now = true;
            return true;
        }
        false
    }

    fn end_write(&self, id: ChunkId, token: u64) {
        let mut state = self.state();
        if let Region::Writing { token: holder, now } = &mut state.regions[id]
            && *holder == token
        {
            *now = false;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until nobody writes chunk `id`'s region; whether it verified.
    fn settled(&self, id: ChunkId) -> bool {
        let mut state = self.state();
        while matches!(state.regions[id], Region::Writing { .. }) {
            state = self.wait(state);
        }
        state.regions[id] == Region::Verified
    }
}

/// A fetch's right to write one region; dropped, it leaves the region
/// verified or open again (also when the write failed or panicked), unless
/// another fetch took it over.
#[derive(Debug)]
struct Claim {
    claims: Arc<Claims>,
    id: ChunkId,
    token: u64,
    verified: bool,
}

impl Claim {
    /// Leaves the region verified; whether it was still ours to leave so.
    fn verify(mut self) -> bool {
        let mut state = self.claims.state();
        let ours =
            matches!(state.regions[self.id], Region::Writing { token, .. } if token == self.token);
        if ours {
            state.regions[self.id] = Region::Verified;
            self.verified = true;
        }
        ours
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut state = self.claims.state();
        if !self.verified
            && matches!(state.regions[self.id], Region::Writing { token, .. } if token == self.token)
        {
            state.regions[self.id] = Region::Open;
        }
        drop(state);
        self.claims.changed.notify_all();
    }
}

/// The chunk a fetch stores, and where.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: ChunkId,
    /// The file that holds it, and where in it.
    pub path: PathBuf,
    pub offset: u64,
    pub length: u64,
    /// The chunk's BLAKE3 hash (hex, as the manifest has it).
    pub hash: Arc<str>,
}

/// What became of a fetched chunk.
#[derive(Debug)]
pub enum Stored {
    /// The chunk's region holds the verified bytes (written by this fetch,
    /// or by another one of the same chunk).
    InPlace,
    /// The bytes do not match the chunk's hash.
    BadData,
    /// The bytes matched, but another fetch of the chunk took the region
    /// over and did not verify it (its disk failed): fetch it again.
    Lost,
    /// Our own disk failed.
    Disk(SentinelError),
    /// The blocking work panicked.
    Panicked,
}

/// What a fetch does with the bytes it hashes.
#[derive(Debug)]
enum Mode {
    /// Writes them: it holds the region's claim (the file is opened at the
    /// first write).
    Writing {
        claim: Claim,
        file: Option<std::fs::File>,
    },
    /// Another fetch writes the region: keeps the slices, to take the
    /// region over if this copy verifies first.
    Holding(Vec<Vec<u8>>),
    /// Only hashes them: the region verified already, or another fetch
    /// took it over from us.
    Checking,
}

/// Storing one chunk: the hash so far, the slice not yet written, where
/// it goes, and the claim. Its work blocks (disk writes; the verdict may
/// wait for another fetch of the chunk): it runs on the fetch thread or a
/// blocking one, never on the main runtime.
#[derive(Debug)]
pub struct ChunkWriter {
    target: Target,
    claims: Arc<Claims>,
    mode: Mode,
    hasher: blake3::Hasher,
    /// The slice being gathered: not hashed nor written yet.
    slice: Vec<u8>,
    /// Bytes of the chunk before `slice`.
    flushed: u64,
    error: Option<SentinelError>,
}

impl ChunkWriter {
    /// A writer of `target`'s region: it claims the region if nobody
    /// writes it (never waits).
    pub fn open(claims: &Arc<Claims>, target: Target) -> Self {
        let mode = match claims.try_claim(target.id) {
            Claimed::Ours(claim) => Mode::Writing { claim, file: None },
            Claimed::Taken => Mode::Holding(Vec::new()),
            Claimed::Verified => Mode::Checking,
        };
        Self {
            slice: Vec::with_capacity(slice_capacity(target.length)),
            target,
            claims: Arc::clone(claims),
            mode,
            hasher: blake3::Hasher::new(),
            flushed: 0,
            error: None,
        }
    }

    /// Whether our disk failed (the fetch should stop).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// The next piece of the chunk, in order: copied into the slice being
    /// gathered (it was just decrypted: still in this core's cache); each
    /// whole slice is hashed and written at once.
    pub fn take(&mut self, piece: Bytes) {
        let mut rest = &piece[..];
        while !rest.is_empty() {
            let n = rest.len().min(SLICE_BYTES - self.slice.len());
            self.slice.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.slice.len() == SLICE_BYTES {
                self.flush();
            }
        }
    }

    /// Hashes the gathered slice, then writes it while the region is
    /// ours, or keeps it to take the region over later.
    fn flush(&mut self) {
        if self.slice.is_empty() {
            return;
        }
        self.hasher.update(&self.slice);
        let len = self.slice.len() as u64;
        match &mut self.mode {
            Mode::Writing { .. } if self.error.is_some() => {}
            Mode::Writing { claim, file } => {
                if self.claims.begin_write(claim.id, claim.token) {
                    let at = self.target.offset + self.flushed;
                    let written = write_slice(file, &self.target, &self.slice, at);
                    self.claims.end_write(claim.id, claim.token);
                    if let Err(err) = written {
                        self.error = Some(err);
                    }
                } else {
                    // Taken over by a fetch whose copy verified: it writes
                    // the whole region; we only check ours.
                    self.mode = Mode::Checking;
                }
            }
            Mode::Holding(kept) => {
                let rest = self.target.length.saturating_sub(self.flushed + len);
                let slice =
                    std::mem::replace(&mut self.slice, Vec::with_capacity(slice_capacity(rest)));
                kept.push(slice);
            }
            Mode::Checking => {}
        }
        self.slice.clear();
        self.flushed += len;
    }

    /// The verdict, once every byte was taken: the rest is written and
    /// the hash of the whole compared with the chunk's.
    pub fn finish(mut self) -> Stored {
        self.flush();
        if let Some(err) = self.error.take() {
            return Stored::Disk(err);
        }
        if self.hasher.finalize().to_hex().as_str() != &*self.target.hash {
            // A claim we hold is dropped: the region is open again.
            return Stored::BadData;
        }
        let id = self.target.id;
        match std::mem::replace(&mut self.mode, Mode::Checking) {
            Mode::Writing { claim, .. } => {
                if claim.verify() {
                    Stored::InPlace
                } else {
                    self.settled()
                }
            }
            Mode::Checking => self.settled(),
            Mode::Holding(kept) => match self.claims.take_over(id) {
                None => Stored::InPlace,
                Some(claim) => {
                    let mut file = None;
                    let mut at = self.target.offset;
                    let written = kept.iter().try_for_each(|slice| {
                        write_slice(&mut file, &self.target, slice, at)?;
                        at += slice.len() as u64;
                        Ok(())
                    });
                    match written {
                        Ok(()) => {
                            claim.verify();
                            Stored::InPlace
                        }
                        Err(err) => Stored::Disk(err),
                    }
                }
            },
        }
    }

    /// A good copy that another fetch writes: in place once that one
    /// verified (it writes from a copy verified in memory, so only its
    /// disk can fail it).
    fn settled(&self) -> Stored {
        if self.claims.settled(self.target.id) {
            Stored::InPlace
        } else {
            Stored::Lost
        }
    }
}

/// `target`'s file, opened for writing on first use.
fn file_of<'a>(
    file: &'a mut Option<std::fs::File>,
    target: &Target,
) -> Result<&'a std::fs::File, SentinelError> {
    if file.is_none() {
        *file = Some(
            OpenOptions::new()
                .write(true)
                .open(&target.path)
                .map_err(|source| disk_error("open", target, source))?,
        );
    }
    Ok(file.as_ref().expect("opened above"))
}

fn disk_error(action: &'static str, target: &Target, source: std::io::Error) -> SentinelError {
    SentinelError::Io {
        action,
        path: target.path.clone(),
        source,
    }
}

/// Writes one gathered slice at `offset` of `target`'s file.
fn write_slice(
    file: &mut Option<std::fs::File>,
    target: &Target,
    slice: &[u8],
    offset: u64,
) -> Result<(), SentinelError> {
    file_of(file, target)?
        .write_all_at(slice, offset)
        .map_err(|source| disk_error("write", target, source))
}

/// The async side of storing one chunk, the sink its fetch reads into:
/// each piece goes to the [`ChunkWriter`] where it is read, on the fetch
/// thread (the client reads chunk data on its own runtime: blocking there
/// on a slow disk is the back-pressure QUIC carries to the seeder); the
/// verdict, which may wait for another fetch of the chunk, is given on a
/// blocking thread.
#[derive(Debug)]
pub struct Intake {
    /// Boxed: the hasher's state is two kilobytes, moved for the verdict.
    writer: Box<ChunkWriter>,
}

impl Intake {
    pub fn new(claims: &Arc<Claims>, target: Target) -> Self {
        Self {
            writer: Box::new(ChunkWriter::open(claims, target)),
        }
    }

    /// Stores the rest and gives the verdict (after the fetch read every
    /// byte, or stopped because our disk failed).
    pub async fn finish(self) -> Stored {
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap_or(Stored::Panicked)
    }
}

impl ChunkSink for Intake {
    async fn piece(&mut self, piece: Bytes) -> ControlFlow<()> {
        self.writer.take(piece);
        if self.writer.failed() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(bytes: &[u8], size: usize) -> Vec<Bytes> {
        bytes.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    fn setup(len: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        (dir, path)
    }

    fn target(id: ChunkId, path: &std::path::Path, offset: u64, good: &[u8]) -> Target {
        Target {
            id,
            path: path.to_owned(),
            offset,
            length: good.len() as u64,
            hash: blake3::hash(good).to_hex().as_str().into(),
        }
    }

    /// One whole fetch of `bytes` in pieces of `size`, for a chunk whose
    /// good bytes are `good`.
    fn store(claims: &Arc<Claims>, target: Target, bytes: &[u8], size: usize) -> Stored {
        let mut writer = ChunkWriter::open(claims, target);
        for piece in pieces(bytes, size) {
            writer.take(piece);
        }
        writer.finish()
    }

    /// Gives `writer` the bytes in pieces of 1000 (QUIC-sized).
    fn feed(writer: &mut ChunkWriter, bytes: &[u8]) {
        for piece in pieces(bytes, 1000) {
            writer.take(piece);
        }
    }

    fn region(claims: &Claims, id: ChunkId) -> Region {
        claims.state().regions[id]
    }

    #[test]
    fn a_chunk_of_many_pieces_is_written_whole_and_verified() {
        // Pieces that straddle slice boundaries, as QUIC hands them out.
        let bytes: Vec<u8> = (0..SLICE_BYTES * 3 + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let (_dir, path) = setup(bytes.len() + 10);
        let claims = Arc::new(Claims::new(1, |_| false));
        let stored = store(&claims, target(0, &path, 10, &bytes), &bytes, 1350);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[10..], &bytes[..]);
        assert_eq!(&on_disk[..10], &[0u8; 10], "nothing before the offset");
        assert_eq!(region(&claims, 0), Region::Verified);
        // Tiny pieces, and one piece
        // bigger than a slice.
        for size in [7, SLICE_BYTES * 2 + 1] {
            let (_dir, path) = setup(bytes.len());
            let claims = Arc::new(Claims::new(1, |_| false));
            let stored = store(&claims, target(0, &path, 0, &bytes), &bytes, size);
            assert!(matches!(stored, Stored::InPlace), "{stored:?}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn a_verified_region_is_never_written_again_and_bad_bytes_leave_it_open() {
        let good = vec![7u8; 100_000];
        let bad = vec![9u8; 100_000];
        let (_dir, path) = setup(good.len());
        let claims = Arc::new(Claims::new(2, |_| false));
        let chunk = target(0, &path, 0, &good);
        // Bad bytes first: written, not verified, the region stays open.
        let stored = store(&claims, chunk.clone(), &bad, 4096);
        assert!(matches!(stored, Stored::BadData), "{stored:?}");
        assert_eq!(region(&claims, 0), Region::Open);
        // Good bytes overwrite them.
        let stored = store(&claims, chunk.clone(), &good, 4096);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        // A late duplicate with bad bytes is blamed and writes nothing.
        let stored = store(&claims, chunk.clone(), &bad, 4096);
        assert!(matches!(stored, Stored::BadData), "{stored:?}");
        assert_eq!(std::fs::read(&path).unwrap(), good);
        // A late good duplicate: in place, nothing written.
        let stored = store(&claims, chunk, &good, 4096);
        assert!(matches!(stored, Stored::InPlace), "{stored:?}");
        // A resumed download's chunk counts as verified from the start.
        let resumed = Claims::new(2, |id| id == 1);
        assert_eq!(region(&resumed, 0), Region::Open);
        assert_eq!(region(&resumed, 1), Region::Verified);
    }

    #[test]
    fn a_copy_verified_in_memory_takes_the_region_over_from_a_slower_writer() {
        // The endgame: a slow fetch claimed the region and wrote its first
        // (bad) slice; a second copy arrives whole and good meanwhile.
        let good: Vec<u8> = (0..SLICE_BYTES * 3).map(|i| (i % 199) as u8).collect();
        let bad = vec![0xeeu8; good.len()];
        let (_dir, path) = setup(good.len());
        let claims = Arc::new(Claims::new(1, |_| false));
        let chunk = target(0, &path, 0, &good);
        let mut slow = ChunkWriter::open(&claims, chunk.clone());
        feed(&mut slow, &bad[..SLICE_BYTES]);
        let mut fast = ChunkWriter::open(&claims, chunk.clone());
        assert!(matches!(fast.mode, Mode::Holding(_)), "the region is taken");
        feed(&mut fast, &good);
        assert!(matches!(fast.finish(), Stored::InPlace));
        assert_eq!(region(&claims, 0), Region::Verified);
        // The slow writer learns it lost the region and writes nothing more.
        feed(&mut slow, &bad[SLICE_BYTES..]);
        assert!(matches!(slow.finish(), Stored::BadData));
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_eq!(region(&claims, 0), Region::Verified);

        // A good slow copy taken over by a copy whose disk write fails: the
        // slow one's bytes were not written, so it is lost, not in place.
        let (_dir, path) = setup(good.len());
        let claims = Arc::new(Claims::new(1, |_| false));
        let mut slow = ChunkWriter::open(&claims, target(0, &path, 0, &good));
        feed(&mut slow, &good[..SLICE_BYTES]);
        let unwritable = target(0, &path.with_file_name("gone"), 0, &good);
        let mut fast = ChunkWriter::open(&claims, unwritable);
        feed(&mut fast, &good);
        assert!(matches!(fast.finish(), Stored::Disk(_)));
        feed(&mut slow, &good[SLICE_BYTES..]);
        assert!(matches!(slow.finish(), Stored::Lost));
        assert_eq!(region(&claims, 0), Region::Open);
    }

    #[test]
    fn two_fetches_of_one_chunk_never_write_it_at_once() {
        // Many rounds of a good and a bad copy racing, slice by slice:
        // whatever the order, the region ends verified with the good bytes.
        let good: Vec<u8> = (0..SLICE_BYTES * 4).map(|i| (i % 13) as u8).collect();
        let bad = vec![0xeeu8; good.len()];
        for _ in 0..20 {
            let (_dir, path) = setup(good.len());
            let claims = Arc::new(Claims::new(1, |_| false));
            let chunk = target(0, &path, 0, &good);
            std::thread::scope(|scope| {
                let a = scope.spawn(|| store(&claims, chunk.clone(), &bad, 1200));
                let b = scope.spawn(|| store(&claims, chunk.clone(), &good, 1200));
                assert!(matches!(a.join().unwrap(), Stored::BadData));
                assert!(matches!(b.join().unwrap(), Stored::InPlace));
            });
            assert_eq!(std::fs::read(&path).unwrap(), good);
            assert_eq!(region(&claims, 0), Region::Verified);
        }
    }

    #[test]
    fn a_missing_file_is_a_disk_error_and_releases_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Arc::new(Claims::new(1, |_| false));
        let stored = store(
            &claims,
            target(0, &dir.path().join("gone"), 0, b"abc"),
            b"abc",
            2,
        );
        assert!(matches!(stored, Stored::Disk(_)), "{stored:?}");
        assert_eq!(region(&claims, 0), Region::Open);
    }

    #[tokio::test]
    async fn the_intake_writes_each_slice_as_it_arrives_and_verifies_at_the_end() {
        let bytes: Vec<u8> = (0..SLICE_BYTES * 5 / 2).map(|i| (i % 241) as u8).collect();
        let (_dir, path) = setup(bytes.len());
        let claims = Arc::new(Claims::new(1, |_| false));
        let mut intake = Intake::new(&claims, target(0, &path, 0, &bytes));
        for piece in pieces(&bytes, 40_000) {
            assert!(intake.piece(piece).await.is_continue());
        }
        let early = std::fs::read(&path).unwrap();
        assert_eq!(
            &early[..SLICE_BYTES * 2],
            &bytes[..SLICE_BYTES * 2],
            "whole slices are written before the verdict"
        );
        assert_eq!(
            region(&claims, 0),
            Region::Writing {
                token: 1,
                now: false
            }
        );
        assert!(matches!(intake.finish().await, Stored::InPlace));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(region(&claims, 0), Region::Verified);
        // A disk that fails stops the fetch at the first slice.
        let claims = Arc::new(Claims::new(1, |_| false));
        let gone = path.with_file_name("gone");
        let mut intake = Intake::new(&claims, target(0, &gone, 0, &bytes));
        let mut taken = 0;
        let mut flow = ControlFlow::Continue(());
        for piece in pieces(&bytes, 40_000) {
            taken += piece.len();
            flow = intake.piece(piece).await;
            if flow.is_break() {
                break;
            }
        }
        assert!(flow.is_break(), "the fetch is stopped");
        assert!(
            taken < SLICE_BYTES * 2,
            "stopped at the first slice: {taken}"
        );
        assert!(matches!(intake.finish().await, Stored::Disk(_)));
        assert_eq!(region(&claims, 0), Region::Open);
    }
}
