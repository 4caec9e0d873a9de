//! Upload turns: how many chunk bytes the server sends at once, and which
//! waiting request gets the next turn (`docs/peer-protocol.md#uploads`).
//!
//! A turn covers one chunk (or range) on the wire, from the moment its
//! bytes are handed to QUIC until the peer acknowledged them. Turns come
//! out of one budget ([`UPLOAD_BUDGET_BYTES`], with a share per
//! connection). Requests to a complete game wait for a turn and are served
//! best first: the one that can be sent the chunk sent longest ago, so a
//! seeder sends each chunk once before it sends any twice, whoever asked
//! first. Requests to a download in progress never wait: past
//! [`SWARM_UPLOAD_BYTES`] they are refused as busy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use lanspread_proto::model::GameId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::manifest_id::ManifestId;

/// How many chunk bytes the server has on the wire at once (sent and not
/// yet acknowledged), to all peers together: four full chunks (or as many
/// small ones). Many downloaders asking one seeder at once would otherwise
/// each get a sliver of its uplink for every chunk they asked for, and no
/// chunk would arrive — to be passed on to the others — until all of them
/// did; in turns, each chunk goes out at a good share of the link and the
/// swarm can start sharing it.
pub const UPLOAD_BUDGET_BYTES: u64 = 16 * 1024 * 1024;

/// The most of [`UPLOAD_BUDGET_BYTES`] one connection holds at once
/// (three full chunks): a peer that stops reading can stall only its own
/// requests, never everyone's.
pub const UPLOAD_BUDGET_PER_PEER_BYTES: u64 = 12 * 1024 * 1024;

/// The most of [`UPLOAD_BUDGET_BYTES`] that chunks of downloads in
/// progress (this daemon serving the swarm while it downloads) take at
/// once: two full chunks, and no more than complete games' uploads leave
/// (they come first: such a daemon's uplink is busy anyway). A request beyond it is refused at once as busy
/// rather than queued: in a swarm every downloader wants the chunk that
/// was verified last, from the few that hold it, and a queue there would
/// hold those requests (and the requesters' fetch slots) for seconds while
/// other holders' uplinks sit idle; refused, the requester asks another
/// holder or for another chunk. A complete holder queues instead (its
/// queue is what keeps its uplink busy, and with alternatives every
/// request can use a turn well).
pub const SWARM_UPLOAD_BYTES: u64 = 8 * 1024 * 1024;

/// The budget's unit, in bytes (a permit of the semaphore).
const BUDGET_UNIT: u64 = 1024;

/// A request to a complete game that others overtook this many times (for
/// chunks sent longer ago than any it can take) goes next: whatever it can
/// be sent, it waits no longer than about four rounds of the budget.
const MAX_OVERTAKEN: u64 = 16;

/// The server's upload turns.
#[derive(Debug)]
pub struct Turns {
    all: Arc<Semaphore>,
    per_peer: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
    /// Requests to complete games waiting for a turn, and when each
    /// chunk of each complete game was last sent.
    seeding: Mutex<Seeding>,
    /// Woken whenever a turn ends, is given, or a waiter leaves.
    changed: Arc<Notify>,
}

impl Default for Turns {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new((UPLOAD_BUDGET_BYTES / BUDGET_UNIT) as usize)),
            per_peer: Mutex::default(),
            seeding: Mutex::default(),
            changed: Arc::new(Notify::new()),
        }
    }
}

/// A turn to send: released when dropped, and the waiters told.
#[derive(Debug)]
pub struct Turn {
    permits: Option<(Option<OwnedSemaphorePermit>, OwnedSemaphorePermit)>,
    changed: Arc<Notify>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Release first, then wake: a waiter woken before the permits are
        // back would find the budget still taken and sleep on.
        self.permits.take();
        self.changed.notify_waiters();
    }
}

#[derive(Debug, Default)]
struct Seeding {
    waiting: Vec<Waiter>,
    next_arrival: u64,
    /// Turns given to complete games' requests so far.
    given: u64,
    /// The arrival of the waiter that goes next, kept by
    /// [`Seeding::refresh`] whenever what decides it changes (so each
    /// waiter woken checks in O(1), not by ranking every other).
    front: Option<u64>,
    /// Per complete game, when each chunk was last sent.
    sent: HashMap<GameId, SendOrder>,
}

#[derive(Debug)]
struct Waiter {
    arrival: u64,
    /// [`Seeding::given`] when it arrived.
    given_before: u64,
    id: GameId,
    manifest: ManifestId,
    candidates: Vec<u32>,
}

/// When each chunk of one manifest was last sent (a sequence number), so
/// a request with alternatives gets the one sent longest ago. (Counts of
/// sends would not do: after one group of downloaders, the chunks sent
/// least often overall are not the ones the next group lacks, and the
/// seeder would send some twice early.)
#[derive(Debug)]
struct SendOrder {
    manifest: ManifestId,
    /// Per chunk, the sequence number of its last send (0: never).
    last: Vec<u64>,
    next: u64,
}

impl Seeding {
    /// The send order of `id` for `manifest` of `chunks` chunks (a new
    /// one when the game's manifest changed).
    fn order(&mut self, id: &GameId, manifest: ManifestId, chunks: usize) -> &mut SendOrder {
        let order = self.sent.entry(id.clone()).or_insert_with(|| SendOrder {
            manifest,
            last: Vec::new(),
            next: 1,
        });
        if order.manifest != manifest || order.last.len() != chunks {
            *order = SendOrder {
                manifest,
                last: vec![0; chunks],
                next: 1,
            };
        }
        order
    }

    /// How long ago the best of `candidates` was sent, as its last send's
    /// sequence number (lower is longer ago; 0 never), and which it is.
    fn best(&self, waiter: &Waiter) -> (u64, u32) {
        let Some(order) = self
            .sent
            .get(&waiter.id)
            .filter(|o| o.manifest == waiter.manifest)
        else {
            return (0, waiter.candidates[0]);
        };
        waiter
            .candidates
            .iter()
            .map(|&c| (order.last.get(c as usize).copied().unwrap_or(u64::MAX), c))
            .min_by_key(|&(last, _)| last)
            .unwrap_or((0, waiter.candidates[0]))
    }

    /// Finds the waiter that goes next: none other can be sent a chunk
    /// sent longer ago (the earlier arrival among equals), unless a waiter
    /// was overtaken [`MAX_OVERTAKEN`] times (then the earliest of those
    /// goes). Called after every change of the queue or of the send order.
    fn refresh(&mut self) {
        let rank = |w: &Waiter| {
            if self.given - w.given_before >= MAX_OVERTAKEN {
                (0, 0, w.arrival)
            } else {
                (1, self.best(w).0, w.arrival)
            }
        };
        self.front = self
            .waiting
            .iter()
            .min_by_key(|w| rank(w))
            .map(|w| w.arrival);
    }
}

/// Takes a waiter out of the queue however its request ends (given a
/// turn, refused, or dropped because the peer went away).
struct Leave<'a> {
    turns: &'a Turns,
    arrival: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut seeding = self.turns.seeding();
        seeding.waiting.retain(|w| w.arrival != self.arrival);
        seeding.refresh();
        drop(seeding);
        self.turns.changed.notify_waiters();
    }
}

impl Turns {
    fn seeding(&self) -> std::sync::MutexGuard<'_, Seeding> {
        self.seeding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The semaphore of the connection from `addr`.
    fn connection_semaphore(&self, addr: SocketAddr) -> Arc<Semaphore> {
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        if per_peer.len() > 256 {
            // Forget connections with no turn running.
            per_peer.retain(|_, s| Arc::strong_count(s) > 1);
        }
        Arc::clone(per_peer.entry(addr).or_insert_with(|| {
            Arc::new(Semaphore::new(
                (UPLOAD_BUDGET_PER_PEER_BYTES / BUDGET_UNIT) as usize,
            ))
        }))
    }

    /// `bytes` in permits.
    fn units(bytes: u64) -> u32 {
        bytes
            .div_ceil(BUDGET_UNIT)
            .clamp(1, UPLOAD_BUDGET_PER_PEER_BYTES / BUDGET_UNIT) as u32
    }

    fn turn(&self, peer: Option<OwnedSemaphorePermit>, all: OwnedSemaphorePermit) -> Turn {
        Turn {
            permits: Some((peer, all)),
            changed: Arc::clone(&self.changed),
        }
    }

    /// A turn for `bytes` of a download in progress, if one is free now
    /// (within [`SWARM_UPLOAD_BYTES`] of the budget and the connection's
    /// share); `None` means busy.
    pub fn try_swarm(&self, to: Option<SocketAddr>, bytes: u64) -> Option<Turn> {
        let units = Self::units(bytes);
        let reserved = ((UPLOAD_BUDGET_BYTES - SWARM_UPLOAD_BYTES) / BUDGET_UNIT) as usize;
        if self.all.available_permits() < reserved + units as usize {
            return None;
        }
        let peer = match to {
            Some(addr) => Some(
                self.connection_semaphore(addr)
                    .try_acquire_many_owned(units)
                    .ok()?,
            ),
            None => None,
        };
        let all = Arc::clone(&self.all).try_acquire_many_owned(units).ok()?;
        Some(self.turn(peer, all))
    }

    /// Waits for a turn to send `bytes` of complete game `id` (its
    /// manifest and number of chunks) to `to`, and picks what to send: of
    /// `candidates` (the asked chunk first,
    /// then its alternatives), the one sent longest ago, recorded as sent
    /// now if `count` (a part of a chunk does not count). Waiting requests
    /// are served best first (see the module comment).
    pub async fn seed(
        &self,
        to: Option<SocketAddr>,
        bytes: u64,
        id: &GameId,
        (manifest, chunks): (ManifestId, usize),
        candidates: Vec<u32>,
        count: bool,
    ) -> (Turn, u32) {
        let units = Self::units(bytes);
        // The connection's share first: a peer that stopped reading waits
        // here, outside the queue, and holds up no one else.
        let peer = match to {
            Some(addr) => Some(
                self.connection_semaphore(addr)
                    .acquire_many_owned(units)
                    .await
                    .expect("the budget is never closed"),
            ),
            None => None,
        };
        let arrival = {
            let mut seeding = self.seeding();
            seeding.order(id, manifest, chunks);
            let arrival = seeding.next_arrival;
            seeding.next_arrival += 1;
            let given_before = seeding.given;
            seeding.waiting.push(Waiter {
                arrival,
                given_before,
                id: id.clone(),
                manifest,
                candidates,
            });
            seeding.refresh();
            arrival
        };
        let _leave = Leave {
            turns: self,
            arrival,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut seeding = self.seeding();
                if seeding.front == Some(arrival)
                    && let Ok(all) = Arc::clone(&self.all).try_acquire_many_owned(units)
                {
                    let waiter = seeding
                        .waiting
                        .iter()
                        .find(|w| w.arrival == arrival)
                        .expect("a waiter stays queued until it leaves");
                    let (_, chosen) = seeding.best(waiter);
                    seeding.given += 1;
                    if count {
                        let order = seeding.order(id, manifest, chunks);
                        if let Some(last) = order.last.get_mut(chosen as usize) {
                            *last = order.next;
                            order.next += 1;
                        }
                    }
                    // Leaving (below) takes it out of the queue and finds
                    // the next front, now that the send order changed.
                    return (self.turn(peer, all), chosen);
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CHUNK: u64 = 4 * 1024 * 1024;

    fn game() -> (GameId, (ManifestId, usize)) {
        let manifest = ManifestId::from_hex(&"ab".repeat(32)).unwrap();
        (GameId::new("openarena").unwrap(), (manifest, 32))
    }

    /// A waiting `seed` request, run on its own task.
    fn wait(turns: &Arc<Turns>, candidates: Vec<u32>) -> tokio::task::JoinHandle<(Turn, u32)> {
        let turns = Arc::clone(turns);
        tokio::spawn(async move {
            let (id, manifest) = game();
            turns
                .seed(None, CHUNK, &id, manifest, candidates, true)
                .await
        })
    }

    /// Lets spawned tasks run until they wait.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn the_chunk_sent_longest_ago_goes_first_whoever_asked_first() {
        let turns = Arc::new(Turns::default());
        // Chunks 0..4 sent, in that order: the budget is taken.
        let mut held = Vec::new();
        for chunk in 0..4 {
            let (turn, sent) = wait(&turns, vec![chunk]).await.unwrap();
            assert_eq!(sent, chunk);
            held.push(turn);
        }
        // A asks first and can only take chunk 0 (sent before); B asks
        // next and can take chunk 7 (never sent) or 1.
        let a = wait(&turns, vec![0]);
        settle().await;
        let b = wait(&turns, vec![1, 7]);
        settle().await;
        assert!(!a.is_finished() && !b.is_finished(), "the budget is taken");
        held.pop();
        let (b_turn, b_sent) = tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("B goes first")
            .unwrap();
        assert_eq!(b_sent, 7, "of B's candidates, the one never sent");
        settle().await;
        assert!(!a.is_finished(), "A waits for the next turn");
        drop(b_turn);
        let (_, a_sent) = tokio::time::timeout(Duration::from_secs(5), a)
            .await
            .expect("A goes next")
            .unwrap();
        assert_eq!(a_sent, 0);
    }

    #[tokio::test]
    async fn a_request_overtaken_often_enough_goes_next() {
        let turns = Arc::new(Turns::default());
        let (turn, _) = wait(&turns, vec![0]).await.unwrap();
        let mut held = vec![turn];
        for chunk in 1..4 {
            held.push(wait(&turns, vec![chunk]).await.unwrap().0);
        }
        // A can take only chunk 0; newcomers always offer a chunk never
        // sent, so they would overtake A forever without the bound.
        let a = wait(&turns, vec![0]);
        settle().await;
        let mut overtook = 0;
        for chunk in 4..32 {
            let newcomer = wait(&turns, vec![chunk]);
            settle().await;
            held.remove(0);
            settle().await;
            if a.is_finished() {
                break;
            }
            held.push(newcomer.await.unwrap().0);
            overtook += 1;
        }
        assert!(
            a.is_finished(),
            "A was overtaken {overtook} times and still waits"
        );
        assert_eq!(overtook as u64, MAX_OVERTAKEN);
    }

    #[tokio::test]
    async fn a_part_of_a_chunk_does_not_count_as_the_chunk_sent() {
        let turns = Arc::new(Turns::default());
        let (id, manifest) = game();
        let (turn, sent) = turns.seed(None, 1024, &id, manifest, vec![3], false).await;
        assert_eq!(sent, 3);
        drop(turn);
        // 3 still counts as never sent: it is preferred to 2 sent whole.
        drop(wait(&turns, vec![2]).await.unwrap());
        let (_, sent) = wait(&turns, vec![2, 3]).await.unwrap();
        assert_eq!(sent, 3);
    }

    #[tokio::test]
    async fn downloads_in_progress_send_two_chunks_at_once_and_are_busy_beyond() {
        let turns = Turns::default();
        let first = turns.try_swarm(None, CHUNK).expect("a free turn");
        let second = turns.try_swarm(None, CHUNK).expect("a second free turn");
        assert!(turns.try_swarm(None, CHUNK).is_none(), "busy at two chunks");
        drop(first);
        let third = turns.try_swarm(None, CHUNK).expect("a turn freed");
        drop((second, third));
        // The swarm's share is what complete games' uploads leave beyond
        // two chunks: with three of them running, busy; with one, not.
        let (id, manifest) = game();
        let mut seeding = Vec::new();
        for chunk in 0..3 {
            seeding.push(
                turns
                    .seed(None, CHUNK, &id, manifest, vec![chunk], true)
                    .await,
            );
        }
        assert!(turns.try_swarm(None, CHUNK).is_none());
        seeding.truncate(1);
        assert!(turns.try_swarm(None, CHUNK).is_some());
    }
}
