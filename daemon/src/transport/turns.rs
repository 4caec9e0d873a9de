//! Upload turns: how many chunk bytes the server sends at once, and which
//! waiting request gets the next turn (`docs/peer-protocol.md#uploads`).
//!
//! A turn covers one chunk (or range) on the wire, from the moment its
//! bytes are handed to QUIC until the peer acknowledged them. Turns come
//! out of one budget ([`UPLOAD_BUDGET_BYTES`], with a share per
//! connection). Requests to a complete game wait for a turn and are served
//! best first: the one that can be sent the chunk sent longest ago, so a
//! seeder sends each chunk once before it sends any twice, whoever asked
//! first, and a chunk on its way to one peer is not sent to another
//! until that copy could have been passed on ([`ON_ITS_WAY_GRACE`]).
//! Requests to a download in progress never wait: past
//! [`SWARM_UPLOAD_BYTES`] they are refused as busy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanspread_proto::model::GameId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::manifest_id::ManifestId;

/// How many chunk bytes the server has on the wire at once (sent and not
/// yet acknowledged), to all peers together: five full chunks (or as many
/// small ones), of which downloads in progress take at most four
/// ([`SWARM_UPLOAD_BYTES`]) so complete games always have one. Many
/// downloaders asking one seeder at once would otherwise each get a sliver
/// of its uplink for every chunk they asked for, and no chunk would arrive
/// — to be passed on to the others — until all of them did; in turns, each
/// chunk goes out at a good share of the link and the swarm can start
/// sharing it.
pub const UPLOAD_BUDGET_BYTES: u64 = 20 * 1024 * 1024;

/// The most of [`UPLOAD_BUDGET_BYTES`] one connection holds at once
/// (three full chunks): a peer that stops reading can stall only its own
/// requests, never everyone's.
pub const UPLOAD_BUDGET_PER_PEER_BYTES: u64 = 12 * 1024 * 1024;

/// The most of [`UPLOAD_BUDGET_BYTES`] that chunks of downloads in
/// progress (this daemon serving the swarm while it downloads) take at
/// once: four full chunks, and no more than complete games' uploads leave
/// (they come first: such a daemon's uplink is busy anyway). A request
/// beyond it is refused at once as busy rather than queued: in a swarm
/// every downloader wants the chunk that was verified last, from the few
/// that hold it, and a queue there would hold those requests (and the
/// requesters' fetch slots) for seconds while other holders' uplinks sit
/// idle; refused, the requester asks another holder or for another chunk.
/// A complete holder queues instead (its queue is what keeps its uplink
/// busy, and with alternatives every request can use a turn well).
///
/// Four, not two, and as many as a downloader fetches at once from the
/// others (`download::plan`'s `SWARM_IN_FLIGHT_BYTES` is this constant):
/// with as many upload turns as fetches a requester finds a holder with a
/// free turn far more often. With two, in the 1 → 4 bench (400 Mbit/s
/// links), downloaders' downlinks sat idle about half a second each in
/// the middle of the run, in 50 ms rounds of `busy`. Same-session A/B,
/// three rounds each: all done ÷ one alone 1.33–1.35 with two, 1.24–1.31
/// with four (1 → 8: 1.47 against 1.37–1.42).
pub const SWARM_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// The budget's unit, in bytes (a permit of the semaphore).
const BUDGET_UNIT: u64 = 1024;

/// A request to a complete game that others overtook this many times (for
/// chunks sent longer ago than any it can take) goes next: whatever it can
/// be sent, it waits no longer than about three rounds of the budget.
const MAX_OVERTAKEN: u64 = 16;

/// How long after a complete game's chunk was last sent (whole) it is
/// not sent again: while a copy is on its way to one peer and for this
/// long after, a request that can take only such chunks is refused as
/// busy. The peer that got the copy verifies it and tells the others
/// within about this time (the lab measures a median of 40 ms, a maximum
/// of 250 ms), and they fetch it from that peer; sent again at once, it
/// would be a second copy from the seeder's uplink of a chunk the swarm
/// already has. If the copy never arrives (the peer left, failed), the
/// chunk is sent again this long after.
pub const ON_ITS_WAY_GRACE: Duration = Duration::from_millis(500);

/// The server's upload turns.
#[derive(Debug)]
pub struct Turns {
    all: Arc<Semaphore>,
    per_peer: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
    /// Requests to complete games waiting for a turn, and when each
    /// chunk of each complete game was last sent (shared with the turns
    /// given, which record when their send ends).
    seeding: Arc<Mutex<Seeding>>,
    /// Woken whenever a turn ends, is given, or a waiter leaves.
    changed: Arc<Notify>,
}

impl Default for Turns {
    fn default() -> Self {
        Self::with_grace(ON_ITS_WAY_GRACE)
    }
}

impl Turns {
    /// Turns where a chunk counts as on its way for `grace` after its send.
    fn with_grace(grace: Duration) -> Self {
        Self {
            all: Arc::new(Semaphore::new((UPLOAD_BUDGET_BYTES / BUDGET_UNIT) as usize)),
            per_peer: Mutex::default(),
            seeding: Arc::new(Mutex::new(Seeding {
                grace_ms: grace.as_millis() as u64,
                ..Seeding::default()
            })),
            changed: Arc::new(Notify::new()),
        }
    }
}

/// A turn to send: released when dropped, and the waiters told.
#[derive(Debug)]
pub struct Turn {
    permits: Option<(Option<OwnedSemaphorePermit>, OwnedSemaphorePermit)>,
    /// The whole chunk of a complete game this turn sends: its send ends
    /// with the turn.
    sending: Option<Sending>,
    changed: Arc<Notify>,
}

#[derive(Debug)]
struct Sending {
    seeding: Arc<Mutex<Seeding>>,
    id: GameId,
    manifest: ManifestId,
    chunk: u32,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Release first, then wake: a waiter woken before the permits are
        // back (or the send recorded as ended) would find the budget
        // still taken and sleep on.
        self.permits.take();
        if let Some(sending) = self.sending.take() {
            let mut seeding = sending.seeding.lock().unwrap_or_else(|p| p.into_inner());
            seeding.ended(&sending.id, sending.manifest, sending.chunk);
        }
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
    /// waiter woken checks only its own candidates, not by ranking every
    /// other).
    front: Option<u64>,
    /// Per complete game, when each chunk was last sent.
    sent: HashMap<GameId, SendOrder>,
    /// What the sends' end times count from.
    epoch: Option<Instant>,
    /// [`ON_ITS_WAY_GRACE`] in milliseconds (shorter in tests).
    grace_ms: u64,
}

#[derive(Debug)]
struct Waiter {
    arrival: u64,
    /// [`Seeding::given`] when it arrived.
    given_before: u64,
    id: GameId,
    manifest: ManifestId,
    candidates: Vec<u32>,
    /// A whole chunk (it counts as sent, and one on its way elsewhere is
    /// not sent); `false` for a range.
    whole: bool,
}

/// What the send order of a complete game needs of its manifest.
#[derive(Debug, Clone)]
pub struct SeedGame {
    pub manifest: ManifestId,
    /// How many chunks it has.
    pub chunks: usize,
    /// Chunks downloaders never pass on (`version.ini`'s: a download
    /// writes it last): never held back as on their way, since every
    /// downloader gets them from a complete holder.
    pub not_passed_on: std::ops::Range<u32>,
}

/// When each chunk of one manifest was last sent (a sequence number), so
/// a request with alternatives gets the one sent longest ago. (Counts of
/// sends would not do: after one group of downloaders, the chunks sent
/// least often overall are not the ones the next group lacks, and the
/// seeder would send some twice early.)
#[derive(Debug)]
struct SendOrder {
    manifest: ManifestId,
    not_passed_on: std::ops::Range<u32>,
    /// Per chunk, the sequence number of its last send (0: never).
    last: Vec<u64>,
    /// Per chunk, sends running now.
    sending: Vec<u16>,
    /// Per chunk, when its last send ended (milliseconds since
    /// [`Seeding::epoch`]; 0: none ended).
    ended_ms: Vec<u64>,
    next: u64,
}

impl SendOrder {
    fn new(game: &SeedGame) -> Self {
        let chunks = game.chunks;
        Self {
            manifest: game.manifest,
            not_passed_on: game.not_passed_on.clone(),
            last: vec![0; chunks],
            sending: vec![0; chunks],
            ended_ms: vec![0; chunks],
            next: 1,
        }
    }

    /// Whether chunk `c` is on its way to a peer, or arrived less than
    /// `grace_ms` ago (`now_ms` since the epoch).
    fn on_its_way(&self, c: usize, now_ms: u64, grace_ms: u64) -> bool {
        if self.not_passed_on.contains(&(c as u32)) {
            return false;
        }
        self.sending.get(c).is_some_and(|&n| n > 0)
            || self
                .ended_ms
                .get(c)
                .is_some_and(|&ended| ended > 0 && now_ms < ended + grace_ms)
    }
}

impl Seeding {
    /// The send order of `id` for `game` (a new one when the game's
    /// manifest changed).
    fn order(&mut self, id: &GameId, game: &SeedGame) -> &mut SendOrder {
        let order = self
            .sent
            .entry(id.clone())
            .or_insert_with(|| SendOrder::new(game));
        if order.manifest != game.manifest || order.last.len() != game.chunks {
            *order = SendOrder::new(game);
        }
        order
    }

    /// Milliseconds since the epoch (at least 1).
    fn now_ms(&mut self) -> u64 {
        let epoch = *self.epoch.get_or_insert_with(Instant::now);
        epoch.elapsed().as_millis() as u64 + 1
    }

    /// A send of chunk `chunk` of `id` ended (arrived, or failed).
    fn ended(&mut self, id: &GameId, manifest: ManifestId, chunk: u32) {
        let now_ms = self.now_ms();
        if let Some(order) = self.sent.get_mut(id).filter(|o| o.manifest == manifest)
            && let Some(sending) = order.sending.get_mut(chunk as usize)
        {
            *sending = sending.saturating_sub(1);
            order.ended_ms[chunk as usize] = now_ms;
        }
    }

    /// Of the waiter's candidates that are not on their way to another
    /// peer (for a whole chunk), the one sent longest ago: its last
    /// send's sequence number (lower is longer ago; 0 never) and which it
    /// is. `None`: all are on their way.
    fn best(&self, waiter: &Waiter, now_ms: u64) -> Option<(u64, u32)> {
        let Some(order) = self
            .sent
            .get(&waiter.id)
            .filter(|o| o.manifest == waiter.manifest)
        else {
            return Some((0, waiter.candidates[0]));
        };
        waiter
            .candidates
            .iter()
            .filter(|&&c| !waiter.whole || !order.on_its_way(c as usize, now_ms, self.grace_ms))
            .map(|&c| (order.last.get(c as usize).copied().unwrap_or(u64::MAX), c))
            .min_by_key(|&(last, _)| last)
    }

    /// Finds the waiter that goes next: none other can be sent a chunk
    /// sent longer ago (the earlier arrival among equals), unless a waiter
    /// was overtaken [`MAX_OVERTAKEN`] times (then the earliest of those
    /// goes); one that can take only chunks on their way elsewhere goes
    /// last (it is refused when it wakes). Called after every change of
    /// the queue or of the send order.
    fn refresh(&mut self) {
        let now_ms = self.now_ms();
        let rank = |w: &Waiter| match self.best(w, now_ms) {
            None => (2, 0, w.arrival),
            Some(_) if self.given - w.given_before >= MAX_OVERTAKEN => (0, 0, w.arrival),
            Some((last, _)) => (1, last, w.arrival),
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

    fn turn(
        &self,
        peer: Option<OwnedSemaphorePermit>,
        all: OwnedSemaphorePermit,
        sending: Option<Sending>,
    ) -> Turn {
        Turn {
            permits: Some((peer, all)),
            sending,
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
        Some(self.turn(peer, all, None))
    }

    /// Waits for a turn to send `bytes` of complete game `id` (`game`
    /// says what of its manifest matters) to `to`, and picks what to send: of
    /// `candidates` (the asked chunk first, then its alternatives), the
    /// one sent longest ago, recorded as sent now if `whole` (a part of a
    /// chunk does not count). Waiting requests are served best first (see
    /// the module comment). A whole chunk on its way to another peer is
    /// not sent: if every candidate is, the request is refused (busy).
    pub async fn seed(
        &self,
        to: Option<SocketAddr>,
        bytes: u64,
        id: &GameId,
        game: &SeedGame,
        candidates: Vec<u32>,
        whole: bool,
    ) -> Result<(Turn, u32), OnItsWay> {
        let manifest = game.manifest;
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
            seeding.order(id, game);
            let arrival = seeding.next_arrival;
            seeding.next_arrival += 1;
            let given_before = seeding.given;
            seeding.waiting.push(Waiter {
                arrival,
                given_before,
                id: id.clone(),
                manifest,
                candidates,
                whole,
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
                let now_ms = seeding.now_ms();
                let waiter = seeding
                    .waiting
                    .iter()
                    .find(|w| w.arrival == arrival)
                    .expect("a waiter stays queued until it leaves");
                let Some((_, chosen)) = seeding.best(waiter, now_ms) else {
                    return Err(OnItsWay);
                };
                if seeding.front == Some(arrival)
                    && let Ok(all) = Arc::clone(&self.all).try_acquire_many_owned(units)
                {
                    seeding.given += 1;
                    let sending = whole.then(|| {
                        let order = seeding.order(id, game);
                        // (A chunk past the manifest is refused when it
                        // is opened; it is recorded nowhere.)
                        let c = chosen as usize;
                        if c < order.last.len() {
                            order.last[c] = order.next;
                            order.next += 1;
                            order.sending[c] = order.sending[c].saturating_add(1);
                        }
                        Sending {
                            seeding: Arc::clone(&self.seeding),
                            id: id.clone(),
                            manifest,
                            chunk: chosen,
                        }
                    });
                    // Leaving (below) takes it out of the queue and finds
                    // the next front, now that the send order changed.
                    return Ok((self.turn(peer, all, sending), chosen));
                }
            }
            changed.await;
        }
    }
}

/// Every chunk a request to a complete game can take is on its way to
/// another peer ([`ON_ITS_WAY_GRACE`]): it is refused as busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnItsWay;

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 4 * 1024 * 1024;

    /// A game of 32 chunks, the last one `version.ini`'s.
    fn game() -> (GameId, SeedGame) {
        let manifest = ManifestId::from_hex(&"ab".repeat(32)).unwrap();
        let game = SeedGame {
            manifest,
            chunks: 32,
            not_passed_on: 31..32,
        };
        (GameId::new("openarena").unwrap(), game)
    }

    /// A waiting `seed` request, run on its own task.
    fn wait(turns: &Arc<Turns>, candidates: Vec<u32>) -> tokio::task::JoinHandle<(Turn, u32)> {
        let turns = Arc::clone(turns);
        tokio::spawn(async move {
            let (id, manifest) = game();
            turns
                .seed(None, CHUNK, &id, &manifest, candidates, true)
                .await
                .expect("not on its way elsewhere")
        })
    }

    /// Lets spawned tasks run until they wait.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Turns where a chunk is on its way only while it is sent.
    fn no_grace() -> Arc<Turns> {
        Arc::new(Turns::with_grace(Duration::ZERO))
    }

    /// Sends `chunks` one after another (each send over before the next).
    async fn sent_before(turns: &Arc<Turns>, chunks: std::ops::Range<u32>) {
        for chunk in chunks {
            let (_, sent) = wait(turns, vec![chunk]).await.unwrap();
            assert_eq!(sent, chunk);
        }
    }

    /// Takes the whole budget: as many chunk sends running as it holds
    /// (five), of chunks `first..`.
    async fn take_budget(turns: &Arc<Turns>, first: u32) -> Vec<Turn> {
        let mut held = Vec::new();
        for chunk in first..first + (UPLOAD_BUDGET_BYTES / CHUNK) as u32 {
            held.push(wait(turns, vec![chunk]).await.unwrap().0);
        }
        held
    }

    #[tokio::test]
    async fn the_chunk_sent_longest_ago_goes_first_whoever_asked_first() {
        let turns = no_grace();
        sent_before(&turns, 0..2).await;
        let mut held = take_budget(&turns, 20).await;
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
        let turns = no_grace();
        sent_before(&turns, 0..1).await;
        let mut held = take_budget(&turns, 1).await;
        // A can take only chunk 0; newcomers always offer a chunk never
        // sent, so they would overtake A forever without the bound.
        let a = wait(&turns, vec![0]);
        settle().await;
        let mut overtook = 0;
        for chunk in 10..40 {
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
    async fn a_chunk_on_its_way_to_one_peer_is_not_sent_to_another_until_the_grace_passed() {
        let grace = Duration::from_millis(300);
        let turns = Arc::new(Turns::with_grace(grace));
        let (id, manifest) = game();
        let seed = |candidates: Vec<u32>, whole: bool| {
            let (turns, id, manifest) = (Arc::clone(&turns), id.clone(), manifest.clone());
            async move {
                turns
                    .seed(None, CHUNK, &id, &manifest, candidates, whole)
                    .await
            }
        };
        let (to_a, sent) = seed(vec![5], true).await.unwrap();
        assert_eq!(sent, 5);
        // While 5 is sent to A: B, who can take only 5, is refused; C,
        // who can also take 6, is sent 6; a range of 5 is sent.
        assert_eq!(seed(vec![5], true).await.unwrap_err(), OnItsWay);
        let (_, sent) = seed(vec![5, 6], true).await.unwrap();
        assert_eq!(sent, 6);
        let (_, sent) = seed(vec![5], false).await.unwrap();
        assert_eq!(sent, 5, "a part of a chunk is always sent");
        // version.ini's chunk is never passed on: sent to all at once.
        let (_to_a, sent) = seed(vec![31], true).await.unwrap();
        let (_to_b, sent_b) = seed(vec![31], true).await.unwrap();
        assert_eq!((sent, sent_b), (31, 31));
        // A has it: still refused for the grace (A passes it on), then
        // sent again (A may have left).
        drop(to_a);
        assert_eq!(seed(vec![5], true).await.unwrap_err(), OnItsWay);
        tokio::time::sleep(grace + Duration::from_millis(50)).await;
        let (_, sent) = seed(vec![5], true).await.unwrap();
        assert_eq!(sent, 5);
    }

    #[tokio::test]
    async fn a_waiting_request_whose_chunks_all_went_to_others_meanwhile_is_refused() {
        let turns = no_grace();
        let mut held = take_budget(&turns, 20).await;
        // A (3 or 4) and B (only 4) wait; A is served first and takes 3
        // (asked first among equals), then C takes 4; B is refused.
        let a = wait(&turns, vec![3, 4]);
        settle().await;
        let (id, manifest) = game();
        let b = {
            let (turns, id, manifest) = (Arc::clone(&turns), id.clone(), manifest.clone());
            tokio::spawn(
                async move { turns.seed(None, CHUNK, &id, &manifest, vec![4], true).await },
            )
        };
        settle().await;
        held.pop();
        let (_a_turn, a_sent) = a.await.unwrap();
        assert_eq!(a_sent, 3);
        let (turns_c, id_c) = (Arc::clone(&turns), id.clone());
        // B goes next (it arrived before C), so C waits behind it; free a
        // turn: B takes 4 and C, who can take only 4, is refused.
        let c = tokio::spawn(async move {
            turns_c
                .seed(None, CHUNK, &id_c, &manifest, vec![4], true)
                .await
        });
        settle().await;
        held.pop();
        let (_b_turn, b_sent) = tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .expect("B is served")
            .unwrap()
            .unwrap();
        assert_eq!(b_sent, 4);
        let refused = tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("C is answered at once")
            .unwrap();
        assert_eq!(refused.unwrap_err(), OnItsWay);
    }

    #[tokio::test]
    async fn a_part_of_a_chunk_does_not_count_as_the_chunk_sent() {
        let turns = no_grace();
        let (id, manifest) = game();
        let (turn, sent) = turns
            .seed(None, 1024, &id, &manifest, vec![3], false)
            .await
            .unwrap();
        assert_eq!(sent, 3);
        drop(turn);
        // 3 still counts as never sent: it is preferred to 2 sent whole.
        drop(wait(&turns, vec![2]).await.unwrap());
        let (_, sent) = wait(&turns, vec![2, 3]).await.unwrap();
        assert_eq!(sent, 3);
    }

    #[tokio::test]
    async fn downloads_in_progress_send_four_chunks_at_once_and_are_busy_beyond() {
        let turns = Turns::default();
        let mut running: Vec<Turn> = (0..4)
            .map(|_| turns.try_swarm(None, CHUNK).expect("a free turn"))
            .collect();
        assert!(
            turns.try_swarm(None, CHUNK).is_none(),
            "busy at four chunks"
        );
        running.pop();
        running.push(turns.try_swarm(None, CHUNK).expect("a turn freed"));
        drop(running);
        // The swarm's share is what complete games' uploads leave beyond
        // four chunks (the budget holds five): with four of them running,
        // busy; with three, not.
        let (id, manifest) = game();
        let mut seeding = Vec::new();
        for chunk in 0..4 {
            seeding.push(
                turns
                    .seed(None, CHUNK, &id, &manifest, vec![chunk], true)
                    .await
                    .unwrap(),
            );
        }
        assert!(turns.try_swarm(None, CHUNK).is_none());
        seeding.truncate(3);
        assert!(turns.try_swarm(None, CHUNK).is_some());
    }
}
