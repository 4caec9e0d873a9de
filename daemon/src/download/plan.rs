//! The download plan: every chunk's state and every peer's standing, and
//! the decision which chunk a peer fetches next.
//!
//! Pull-based: a peer gets a new chunk whenever one of its slots frees
//! up, so a fast peer takes proportionally more chunks than a slow one and
//! the download is bounded by the sum of the peers' links, not by the
//! slowest. Near the end (nothing left to hand out), an idle peer may
//! duplicate a chunk in flight on a slower peer, so the last chunks do not
//! wait on the slowest link. Failures move work away: a chunk that failed
//! on a peer is retried elsewhere where possible; a peer that keeps failing
//! or sends bad data is dropped.
//!
//! Pure state, owned by one download task; no I/O, no clock of its own
//! (callers pass durations), so it is unit-tested directly.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use lanspread_proto::wire::CHUNK_SIZE;

/// Full-size chunks one peer may have in flight at once: a peer's
/// in-flight budget is this many [`CHUNK_SIZE`] chunks' worth of bytes.
pub const SLOTS_PER_PEER: usize = 4;

/// Most chunks one peer may have in flight at once, however small. A game
/// of small files is one small chunk per file: with 4 in flight the link
/// would sit idle between round trips, so small chunks share the byte
/// budget of [`SLOTS_PER_PEER`] full ones, up to this many.
pub const MAX_CHUNKS_IN_FLIGHT: usize = 64;

/// A peer whose fetches failed this many times in a row is dropped.
pub const MAX_FAILURES_IN_ROW: u32 = 4;

/// A peer that sent this many chunks that fail verification is dropped.
pub const MAX_BAD_CHUNKS: u32 = 3;

/// A chunk is tried at most this many times before the download fails.
pub const MAX_CHUNK_ATTEMPTS: u32 = 8;

/// Most peers fetching the same chunk at once (endgame duplicates).
const MAX_HOLDERS: usize = 2;

/// Weight of the newest sample in a peer's throughput average.
const RATE_SMOOTHING: f64 = 0.3;

/// Index of a chunk in the plan.
pub type ChunkId = usize;
/// Index of a peer in the plan.
pub type PeerIdx = usize;

/// One chunk to fetch.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Index of the file in the download's file list.
    pub file: usize,
    pub offset: u64,
    pub length: u64,
    /// Expected hex BLAKE3 hash.
    pub hash: String,
    state: ChunkState,
    attempts: u32,
    /// Peers that sent bad data for this chunk (never asked again for it).
    refused_by: Vec<PeerIdx>,
}

#[derive(Clone, Debug, PartialEq)]
enum ChunkState {
    Pending,
    InFlight(Vec<PeerIdx>),
    Done,
}

/// One peer's standing in this download.
#[derive(Clone, Debug)]
pub struct PeerSlot {
    pub peer_id: String,
    /// Which files this peer can serve (it announced an identical entry).
    serves: Vec<bool>,
    in_flight: usize,
    /// Bytes of the chunks in flight.
    in_flight_bytes: u64,
    failures_in_row: u32,
    bad_chunks: u32,
    /// Smoothed bytes per second of its completed chunks (per chunk, so
    /// comparable between peers with the same slot count).
    rate: Option<f64>,
    pub bytes: u64,
    pub dropped: Option<String>,
}

/// Why a fetch did not deliver a verified chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// Connection or stream failure, refusal, or timeout.
    Transport(String),
    /// The bytes did not match the manifest's hash.
    BadData,
}

/// What the plan decided after a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// The chunk goes back in the queue.
    Retry,
    /// The peer was dropped from this download (the reason is logged).
    PeerDropped(String),
    /// The download cannot finish.
    Fatal(String),
}

/// The whole plan.
///
/// Every operation costs O(1) amortized in the number of chunks (times the
/// number of peers where a chunk concerns each of them), so a plan of
/// 38 000 chunks or 150 000 one-chunk files stays linear: each peer has its
/// own queue of the chunks it can serve, in plan order, and entries that
/// are no longer pending are skipped when they reach the front (lazy
/// deletion) instead of being searched for; the endgame looks only at the
/// chunks in flight (at most [`MAX_CHUNKS_IN_FLIGHT`] per peer).
#[derive(Debug)]
pub struct Plan {
    chunks: Vec<Chunk>,
    /// Per peer, the chunks it can serve that were pending when queued; an
    /// entry whose chunk is no longer pending (or that the peer sent
    /// corrupt) is dropped when it reaches the front.
    queues: Vec<VecDeque<ChunkId>>,
    /// Chunks in state `Pending`.
    pending: usize,
    /// Chunks in state `InFlight`, for the endgame.
    in_flight: BTreeSet<ChunkId>,
    peers: Vec<PeerSlot>,
    done: usize,
    done_bytes: u64,
    total_bytes: u64,
    /// Queue entries, in-flight chunks and chunks looked at so far: the
    /// tests' measure that the plan stays linear.
    #[cfg(test)]
    examined: std::sync::atomic::AtomicUsize,
}

impl Plan {
    /// A plan over `chunks` (already-verified ones marked done) for peers
    /// that each serve the files flagged in `serves`.
    pub fn new(
        chunks: Vec<(usize, u64, u64, String, bool)>,
        peers: Vec<(String, Vec<bool>)>,
    ) -> Self {
        let mut plan = Self {
            chunks: Vec::with_capacity(chunks.len()),
            queues: vec![VecDeque::new(); peers.len()],
            pending: 0,
            in_flight: BTreeSet::new(),
            peers: peers
                .into_iter()
                .map(|(peer_id, serves)| PeerSlot {
                    peer_id,
                    serves,
                    in_flight: 0,
                    in_flight_bytes: 0,
                    failures_in_row: 0,
                    bad_chunks: 0,
                    rate: None,
                    bytes: 0,
                    dropped: None,
                })
                .collect(),
            done: 0,
            done_bytes: 0,
            total_bytes: 0,
            #[cfg(test)]
            examined: Default::default(),
        };
        for (file, offset, length, hash, done) in chunks {
            let id = plan.chunks.len();
            plan.total_bytes += length;
            if done {
                plan.done += 1;
                plan.done_bytes += length;
            } else {
                plan.pending += 1;
                for (queue, peer) in plan.queues.iter_mut().zip(&plan.peers) {
                    if peer.serves[file] {
                        queue.push_back(id);
                    }
                }
            }
            plan.chunks.push(Chunk {
                file,
                offset,
                length,
                hash,
                state: if done {
                    ChunkState::Done
                } else {
                    ChunkState::Pending
                },
                attempts: 0,
                refused_by: Vec::new(),
            });
        }
        plan
    }

    pub fn chunk(&self, id: ChunkId) -> &Chunk {
        &self.chunks[id]
    }

    pub fn peers(&self) -> &[PeerSlot] {
        &self.peers
    }

    pub fn is_finished(&self) -> bool {
        self.done == self.chunks.len()
    }

    pub fn done_bytes(&self) -> u64 {
        self.done_bytes
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Peers still taking part.
    pub fn active_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.dropped.is_none()).count()
    }

    /// The next chunk for `peer`, if it has a free slot and there is work
    /// it can do: a pending chunk first; otherwise (endgame) a chunk in
    /// flight only on slower peers. Marks the chunk in flight on `peer`.
    pub fn next_for(&mut self, peer: PeerIdx) -> Option<ChunkId> {
        let slot = &self.peers[peer];
        if slot.dropped.is_some() || !self.has_room(peer) {
            return None;
        }
        let chosen = match self.next_pending(peer) {
            Some(id) => {
                self.pending -= 1;
                id
            }
            None => self.endgame_candidate(peer)?,
        };
        match &mut self.chunks[chosen].state {
            ChunkState::InFlight(holders) => holders.push(peer),
            state => *state = ChunkState::InFlight(vec![peer]),
        }
        self.in_flight.insert(chosen);
        self.peers[peer].in_flight += 1;
        self.peers[peer].in_flight_bytes += self.chunks[chosen].length;
        Some(chosen)
    }

    /// Takes the first chunk of `peer`'s queue that is still pending and
    /// that it may serve; entries passed over are stale and dropped (each
    /// entry is looked at once, so this is O(1) amortized).
    fn next_pending(&mut self, peer: PeerIdx) -> Option<ChunkId> {
        while let Some(id) = self.queues[peer].pop_front() {
            #[cfg(test)]
            self.count_examined();
            let chunk = &self.chunks[id];
            if chunk.state == ChunkState::Pending && !chunk.refused_by.contains(&peer) {
                return Some(id);
            }
        }
        None
    }

    /// Puts a chunk that became pending again at the front of the queue of
    /// every peer that can serve it, so it is retried first.
    fn requeue(&mut self, id: ChunkId) {
        let chunk = &self.chunks[id];
        for (peer, (queue, slot)) in self.queues.iter_mut().zip(&self.peers).enumerate() {
            if slot.serves[chunk.file] && !chunk.refused_by.contains(&peer) {
                queue.push_front(id);
            }
        }
    }

    /// How long a fetch of `length` bytes from `peer` may take: four times
    /// what its measured rate predicts (with all its slots busy), within
    /// bounds.
    pub fn timeout_for(&self, peer: PeerIdx, length: u64) -> Duration {
        let expected = self.peers[peer]
            .rate
            .map(|rate| Duration::from_secs_f64(length as f64 / rate.max(1.0)));
        match expected {
            Some(expected) => {
                (expected * 4).clamp(super::MIN_CHUNK_TIMEOUT, super::MAX_CHUNK_TIMEOUT)
            }
            None => super::MAX_CHUNK_TIMEOUT / 2,
        }
    }

    /// Whether `peer` may start another fetch: within its byte budget
    /// ([`SLOTS_PER_PEER`] full chunks) and [`MAX_CHUNKS_IN_FLIGHT`]; a
    /// peer on probation after failures gets one fetch until it delivers.
    fn has_room(&self, peer: PeerIdx) -> bool {
        let slot = &self.peers[peer];
        if slot.failures_in_row > 0 {
            slot.in_flight == 0
        } else {
            slot.in_flight < MAX_CHUNKS_IN_FLIGHT
                && slot.in_flight_bytes < SLOTS_PER_PEER as u64 * CHUNK_SIZE
        }
    }

    /// Frees the fetch slot `peer` used for a chunk of `length` bytes.
    fn free_slot(&mut self, peer: PeerIdx, length: u64) {
        let slot = &mut self.peers[peer];
        slot.in_flight = slot.in_flight.saturating_sub(1);
        slot.in_flight_bytes = slot.in_flight_bytes.saturating_sub(length);
    }

    /// In the endgame: a chunk in flight whose holders are all slower than
    /// `peer` (or unmeasured), with room for another holder.
    fn endgame_candidate(&self, peer: PeerIdx) -> Option<ChunkId> {
        if self.pending > 0 {
            return None; // pending work exists, just not for this peer
        }
        let my_rate = self.peers[peer].rate?;
        let slot = &self.peers[peer];
        self.in_flight.iter().copied().find(|&id| {
            #[cfg(test)]
            self.count_examined();
            let c = &self.chunks[id];
            slot.serves[c.file]
                && !c.refused_by.contains(&peer)
                && matches!(&c.state, ChunkState::InFlight(holders)
                    if holders.len() < MAX_HOLDERS
                        && !holders.contains(&peer)
                        && holders
                            .iter()
                            .all(|&h| self.peers[h].rate.is_none_or(|r| r < my_rate)))
        })
    }

    /// Records a verified chunk from `peer` that took `elapsed`. Returns
    /// the other peers still fetching it (their fetches can be aborted),
    /// or `None` if it was already done (a late duplicate).
    pub fn completed(
        &mut self,
        id: ChunkId,
        peer: PeerIdx,
        elapsed: Duration,
    ) -> Option<Vec<PeerIdx>> {
        let length = self.chunks[id].length;
        self.release(id, peer);
        let slot = &mut self.peers[peer];
        slot.failures_in_row = 0;
        slot.bytes += length;
        let sample = length as f64 / elapsed.as_secs_f64().max(1e-6);
        slot.rate = Some(match slot.rate {
            Some(rate) => rate * (1.0 - RATE_SMOOTHING) + sample * RATE_SMOOTHING,
            None => sample,
        });
        let chunk = &mut self.chunks[id];
        let others = match std::mem::replace(&mut chunk.state, ChunkState::Done) {
            ChunkState::Done => return None,
            ChunkState::InFlight(holders) => {
                self.in_flight.remove(&id);
                holders
            }
            ChunkState::Pending => {
                // Re-queued after a timeout, then delivered after all; its
                // queue entries are skipped from now on.
                self.pending -= 1;
                Vec::new()
            }
        };
        self.done += 1;
        self.done_bytes += length;
        for &other in &others {
            self.free_slot(other, length);
        }
        Some(others)
    }

    /// Records a failed fetch of chunk `id` from `peer`.
    pub fn failed(&mut self, id: ChunkId, peer: PeerIdx, failure: &FetchFailure) -> AfterFailure {
        self.release(id, peer);
        let chunk = &mut self.chunks[id];
        if chunk.state == ChunkState::Done {
            return AfterFailure::Retry; // a duplicate lost the race; nothing to do
        }
        chunk.attempts += 1;
        let slot = &mut self.peers[peer];
        let mut after = AfterFailure::Retry;
        // Which chunks may have lost their last possible source: all of
        // them when a peer is dropped, this one when its peer refused it,
        // none after a transport failure that dropped nobody.
        let mut check = None;
        match failure {
            FetchFailure::BadData => {
                chunk.refused_by.push(peer);
                check = Some(Some(id));
                slot.bad_chunks += 1;
                if slot.bad_chunks >= MAX_BAD_CHUNKS && slot.dropped.is_none() {
                    let reason =
                        format!("sent {} chunks that failed verification", slot.bad_chunks);
                    slot.dropped = Some(reason.clone());
                    after = AfterFailure::PeerDropped(reason);
                    check = Some(None);
                }
            }
            FetchFailure::Transport(cause) => {
                slot.failures_in_row += 1;
                if slot.failures_in_row >= MAX_FAILURES_IN_ROW && slot.dropped.is_none() {
                    let reason =
                        format!("{} failures in a row, last: {cause}", slot.failures_in_row);
                    slot.dropped = Some(reason.clone());
                    after = AfterFailure::PeerDropped(reason);
                    check = Some(None);
                }
            }
        }
        if chunk.attempts >= MAX_CHUNK_ATTEMPTS {
            return AfterFailure::Fatal(format!(
                "a chunk of file #{} at offset {} failed {} times",
                chunk.file, chunk.offset, chunk.attempts
            ));
        }
        if let ChunkState::InFlight(holders) = &chunk.state
            && holders.is_empty()
        {
            chunk.state = ChunkState::Pending;
            self.in_flight.remove(&id);
            self.pending += 1;
            self.requeue(id);
        }
        let missing = match check {
            None => None,
            Some(Some(id)) => self.unservable(std::iter::once(id)),
            Some(None) => self.unservable(0..self.chunks.len()),
        };
        match missing {
            Some(missing) => AfterFailure::Fatal(missing),
            None => after,
        }
    }

    /// Takes `peer` off chunk `id`'s holders and frees its slot.
    fn release(&mut self, id: ChunkId, peer: PeerIdx) {
        if let ChunkState::InFlight(holders) = &mut self.chunks[id].state
            && let Some(position) = holders.iter().position(|&h| h == peer)
        {
            holders.remove(position);
            let length = self.chunks[id].length;
            self.free_slot(peer, length);
        }
    }

    #[cfg(test)]
    fn count_examined(&self) {
        self.examined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Says why the download cannot finish, if one of the unfinished chunks
    /// among `ids` has no active peer left that could serve it. Only a
    /// dropped peer (all chunks) or a refused chunk (that one) can make a
    /// chunk unservable, so the full scan runs at most once per peer.
    fn unservable(&self, ids: impl Iterator<Item = ChunkId>) -> Option<String> {
        ids.map(|id| {
            #[cfg(test)]
            self.count_examined();
            &self.chunks[id]
        })
        .filter(|c| c.state != ChunkState::Done)
            .find(|c| {
                !self.peers.iter().enumerate().any(|(i, p)| {
                    p.dropped.is_none() && p.serves[c.file] && !c.refused_by.contains(&i)
                })
            })
            .map(|c| {
                let dropped: Vec<String> = self
                    .peers
                    .iter()
                    .filter_map(|p| p.dropped.as_ref().map(|why| format!("{}: {why}", p.peer_id)))
                    .collect();
                let refused: Vec<&str> = c
                    .refused_by
                    .iter()
                    .map(|&i| self.peers[i].peer_id.as_str())
                    .collect();
                format!(
                    "no peer left that can serve file #{} (offset {}); dropped peers: [{}]; peers that sent it corrupt: [{}]",
                    c.file,
                    c.offset,
                    dropped.join("; "),
                    refused.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of `chunks` full-size chunks of one file.
    fn plan(chunks: usize, peers: usize) -> Plan {
        Plan::new(
            (0..chunks)
                .map(|i| (0, i as u64 * CHUNK_SIZE, CHUNK_SIZE, format!("h{i}"), false))
                .collect(),
            (0..peers).map(|p| (format!("p{p}"), vec![true])).collect(),
        )
    }

    /// Simulates pull-based fetching where peer p needs `cost[p]` ticks
    /// per chunk; returns chunks served per peer.
    fn simulate(plan: &mut Plan, cost: &[u32]) -> Vec<u64> {
        simulate_failing(plan, cost, |_, _| false)
    }

    /// [`simulate`], where a fetch by peer p that ends at tick t fails
    /// (transport) when `fails(p, t)`.
    fn simulate_failing(
        plan: &mut Plan,
        cost: &[u32],
        mut fails: impl FnMut(PeerIdx, u32) -> bool,
    ) -> Vec<u64> {
        let mut in_flight: Vec<(ChunkId, PeerIdx, u32)> = Vec::new();
        let mut served = vec![0; cost.len()];
        let mut tick = 0;
        let limit = 10_000 + 100 * plan.chunks.len() as u32;
        while !plan.is_finished() {
            for (peer, &peer_cost) in cost.iter().enumerate() {
                while let Some(id) = plan.next_for(peer) {
                    in_flight.push((id, peer, tick + peer_cost));
                }
            }
            tick += 1;
            let (ready, rest): (Vec<_>, Vec<_>) =
                in_flight.into_iter().partition(|&(_, _, at)| at <= tick);
            in_flight = rest;
            for (id, peer, _) in ready {
                if fails(peer, tick) {
                    let failure = FetchFailure::Transport("timeout".into());
                    let after = plan.failed(id, peer, &failure);
                    assert!(!matches!(after, AfterFailure::Fatal(_)), "{after:?}");
                    continue;
                }
                let elapsed = Duration::from_millis(cost[peer] as u64 * 100);
                if let Some(others) = plan.completed(id, peer, elapsed) {
                    served[peer] += 1;
                    in_flight.retain(|&(c, p, _)| !(c == id && others.contains(&p)));
                }
            }
            assert!(tick < limit, "simulation did not finish");
        }
        served
    }

    fn examined(plan: &Plan) -> usize {
        plan.examined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A 150 GiB game is 38 000 chunks of 4 MiB: four peers of different
    /// speeds, one of which fails every third fetch (never dropped) and one
    /// that fails everything after a while (dropped), finish it while the
    /// plan looks at each chunk a bounded number of times (a scan of all
    /// chunks per failure would be ~10^9 steps here).
    #[test]
    fn a_plan_of_38_000_chunks_runs_to_completion_in_linear_steps() {
        const CHUNKS: usize = 38_000;
        let mut plan = plan(CHUNKS, 4);
        let started = std::time::Instant::now();
        let mut fetches_by_3 = 0;
        let served = simulate_failing(&mut plan, &[1, 2, 3, 5], |peer, tick| {
            fetches_by_3 += u32::from(peer == 3);
            (peer == 3 && fetches_by_3 % 3 == 0) || (peer == 2 && tick > 500)
        });
        assert!(plan.is_finished());
        assert_eq!(plan.done_bytes(), plan.total_bytes());
        assert_eq!(served.iter().sum::<u64>(), CHUNKS as u64, "{served:?}");
        assert!(plan.peers()[2].dropped.is_some());
        assert!(plan.peers()[3].dropped.is_none());
        let examined = examined(&plan);
        eprintln!(
            "38 000 chunks, 4 peers: {examined} steps, {:?}",
            started.elapsed()
        );
        assert!(
            examined <= 8 * CHUNKS * plan.peers().len(),
            "{examined} steps for {CHUNKS} chunks"
        );
    }

    /// A game of 150 000 one-chunk files, one peer serving only the second
    /// half of them (it lists the first half differently): every chunk is
    /// fetched from a peer that serves it, in linear steps (searching one
    /// shared queue for a chunk that peer can serve would be quadratic).
    #[test]
    fn a_plan_of_150_000_one_chunk_files_runs_to_completion_in_linear_steps() {
        const FILES: usize = 150_000;
        let chunks = (0..FILES)
            .map(|f| (f, 0, 10, format!("h{f}"), false))
            .collect();
        let half = (0..FILES).map(|f| f >= FILES / 2).collect();
        let mut plan = Plan::new(
            chunks,
            vec![("half".into(), half), ("all".into(), vec![true; FILES])],
        );
        let started = std::time::Instant::now();
        let served = simulate(&mut plan, &[1, 1]);
        assert!(plan.is_finished());
        assert_eq!(plan.done_bytes(), plan.total_bytes());
        assert!(plan.chunks.iter().all(|c| c.state == ChunkState::Done));
        assert!(
            served[0] <= FILES as u64 / 2,
            "the half peer fetched {served:?}"
        );
        let examined = examined(&plan);
        eprintln!(
            "150 000 one-chunk files, 2 peers: {examined} steps, {:?}",
            started.elapsed()
        );
        assert!(
            examined <= 8 * FILES * plan.peers().len(),
            "{examined} steps for {FILES} files"
        );
    }

    #[test]
    fn small_chunks_share_the_byte_budget_of_four_full_ones() {
        // 100 chunks of 64 KiB: up to MAX_CHUNKS_IN_FLIGHT at once.
        let small = 64 * 1024;
        let mut small_plan = Plan::new(
            (0..100)
                .map(|i| (i, 0, small, format!("h{i}"), false))
                .collect(),
            vec![("p".into(), vec![true; 100])],
        );
        let mut taken = 0;
        while small_plan.next_for(0).is_some() {
            taken += 1;
        }
        assert_eq!(taken, MAX_CHUNKS_IN_FLIGHT);
        // Full-size chunks: four at once, as before.
        let mut full_plan = plan(10, 1);
        let mut taken = 0;
        while full_plan.next_for(0).is_some() {
            taken += 1;
        }
        assert_eq!(taken, SLOTS_PER_PEER);
    }

    #[test]
    fn a_fast_peer_takes_proportionally_more_chunks() {
        let mut plan = plan(400, 2);
        let served = simulate(&mut plan, &[1, 4]);
        // Peer 0 is 4x faster: about 80 % of the chunks.
        let share = served[0] as f64 / 400.0;
        assert!(
            (0.72..=0.9).contains(&share),
            "fast peer share {share}, served {served:?}"
        );
    }

    #[test]
    fn the_last_chunks_do_not_wait_on_the_slowest_peer() {
        let mut plan = plan(40, 2);
        // Peer 1 is 50x slower; without endgame duplication the download
        // would end waiting for its last chunks.
        let served = simulate(&mut plan, &[1, 50]);
        assert!(plan.is_finished());
        assert!(served[1] <= 4, "slow peer served {served:?}");
    }

    #[test]
    fn a_failed_chunk_moves_to_another_peer_and_a_failing_peer_is_dropped() {
        let mut plan = plan(10, 2);
        let failure = FetchFailure::Transport("timeout".into());
        let first = plan.next_for(0).unwrap();
        assert_eq!(plan.failed(first, 0, &failure), AfterFailure::Retry);
        // Peer 1 picks up the failed chunk first.
        assert_eq!(plan.next_for(1), Some(first));
        // Peer 0 is on probation: one slot at a time.
        let mut dropped = None;
        for _ in 1..MAX_FAILURES_IN_ROW {
            let id = plan.next_for(0).unwrap();
            assert_eq!(plan.next_for(0), None, "one slot while on probation");
            if let AfterFailure::PeerDropped(reason) = plan.failed(id, 0, &failure) {
                dropped = Some(reason);
            }
        }
        assert!(dropped.is_some_and(|r| r.contains("failures in a row")));
        assert_eq!(plan.active_peers(), 1);
        assert_eq!(plan.next_for(0), None);
        // The other peer delivers the first chunk and finishes everything.
        plan.completed(first, 1, Duration::from_millis(100));
        let served = simulate(&mut plan, &[1, 1]);
        assert!(plan.is_finished());
        assert_eq!(served, [0, 9], "the first chunk and the nine others");
    }

    #[test]
    fn bad_data_is_never_asked_again_from_that_peer_and_three_strikes_drop_it() {
        let mut plan = plan(10, 2);
        for strike in 1..=MAX_BAD_CHUNKS {
            let id = plan.next_for(0).unwrap();
            let after = plan.failed(id, 0, &FetchFailure::BadData);
            if strike < MAX_BAD_CHUNKS {
                assert_eq!(after, AfterFailure::Retry);
                // The chunk goes to the other peer, never back to peer 0.
                assert!(plan.chunks[id].refused_by.contains(&0));
            } else {
                assert!(matches!(after, AfterFailure::PeerDropped(_)));
            }
        }
        let served = simulate(&mut plan, &[1, 1]);
        assert!(plan.is_finished());
        assert_eq!(served[1] + served[0], 10);
    }

    #[test]
    fn a_chunk_nobody_can_serve_fails_the_download() {
        let mut plan = plan(2, 1);
        let id = plan.next_for(0).unwrap();
        let after = plan.failed(id, 0, &FetchFailure::BadData);
        assert!(matches!(after, AfterFailure::Fatal(_)), "{after:?}");
    }

    #[test]
    fn verified_chunks_from_a_journal_are_not_fetched_again() {
        let mut plan = Plan::new(
            vec![(0, 0, 10, "a".into(), true), (0, 10, 10, "b".into(), false)],
            vec![("p".into(), vec![true])],
        );
        assert_eq!(plan.done_bytes(), 10);
        assert_eq!(plan.next_for(0), Some(1));
        assert_eq!(plan.next_for(0), None);
        plan.completed(1, 0, Duration::from_millis(5));
        assert!(plan.is_finished());
    }
}
