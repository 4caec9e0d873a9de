//! Liveness: pings every known peer over QUIC, fetches a peer's library
//! when its revision changes, and reports peers that stopped answering
//! (`docs/peer-protocol.md#liveness`).
//! A peer may be reachable at several addresses (mDNS gives them all):
//! until one answers, every ping goes to all of them at once and the
//! first valid answer picks the address in use.
//!
//! Changes are pushed, not polled: every ping carries our own library
//! revision, and when it changes every peer is pinged at once; a peer's
//! ping that names a revision we have not fetched wakes our pinger for it
//! ([`Heard`]). So pings only have to prove liveness and can be rare
//! ([`PING_INTERVAL`]); a peer that pinged us lately needs no ping from us
//! ([`MAX_SKIPPED_PINGS`]); after a missed answer they come every
//! [`RETRY_INTERVAL`] until the peer answers or is lost.
//!
//! mDNS never reports a cut link, so this task is the only judge of
//! whether a peer is alive. Lost peers keep being pinged so that a
//! restored link brings them back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::wire::{AnnouncedGame, Request, Response, WIRE_VERSION};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event_sender::EventSender;
use crate::library::version_ini::MAX_VERSION_LEN;
use crate::transport::{PeerClient, RevisionFeed};

/// Time between two pings of a peer that answers. Library changes do not
/// wait for it (they are pushed); it bounds how long a dead peer goes
/// unnoticed. Pings are most of an idle daemon's work: with 19 peers
/// (`just bench mesh20`, one session) 0.30 % CPU at 3 s, 0.19 % at 4.5 s.
pub const PING_INTERVAL: Duration = Duration::from_millis(4500);

/// Time between pings of a peer that missed an answer.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long a change of our own revision waits before every peer is
/// pinged with it: a burst of changes (a scan, manifests made ready one
/// after another, twenty daemons starting together) is announced once.
pub const PUSH_DELAY: Duration = Duration::from_millis(100);

/// A peer that pinged us within the last [`PING_INTERVAL`] is alive: our
/// own ping to it is skipped, at most this many times in a row (so its
/// round-trip time is still measured every 31.5 s). Between two peers
/// that ping each other, about one ping per interval then does for both
/// (in `just bench mesh20`: 0.35 → 0.30 % idle CPU with 19 peers going
/// from 3 to 6).
pub const MAX_SKIPPED_PINGS: u32 = 6;

/// After a skipped ping, the next is due this long after the peer's next
/// ping should have come ([`PING_INTERVAL`] after its last): counted from
/// the peer's ping, not from the skip, so skipping never delays noticing
/// a dead peer by more than this.
pub const SKIP_SLACK: Duration = Duration::from_millis(500);

/// How long one ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// A peer that has not answered (or pinged us) for this long is lost:
/// after two missed answers, never one. With the intervals and timeout
/// above, a dead peer is reported within 9 s of its last sign of life:
/// at most 5 s to the next ping (4.5 s, plus the slack after a skip), 1.5
/// s to its timeout, 1 s to the retry, 1.5 s to its timeout (the product's
/// bound is 10 s).
pub const PEER_TIMEOUT: Duration = Duration::from_millis(7500);

/// Most games one peer may announce.
pub const MAX_ANNOUNCED_GAMES: usize = 10_000;

/// A peer to keep pinging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingTarget {
    pub peer_id: String,
    /// Every address it may answer at, best first.
    pub addrs: Vec<SocketAddr>,
}

/// What pinging found out.
#[derive(Clone, Debug, PartialEq)]
pub enum PingEvent {
    /// The peer answered a ping at `addr` after `rtt` (sent for every
    /// answered ping, before any `Library`).
    Answered {
        peer_id: String,
        addr: SocketAddr,
        rtt: Duration,
    },
    /// The peer answers; this is its library at `revision` (sent when the
    /// revision changed, or when a peer that was unreachable answers again).
    Library {
        peer_id: String,
        revision: u64,
        games: Vec<AnnouncedGame>,
    },
    /// The peer has not answered for [`PEER_TIMEOUT`] (sent once per outage).
    Unreachable { peer_id: String, reason: String },
}

/// What a peer's pinger remembers.
#[derive(Debug)]
struct Liveness {
    last_answer: Instant,
    revision: Option<u64>,
    reported_unreachable: bool,
}

/// What pinging peers said of their own library: wakes our pinger for a
/// peer whose revision is not the one we fetched. Shared with the server,
/// which answers their pings.
#[derive(Debug, Default)]
pub struct Heard {
    pingers: std::sync::Mutex<HashMap<String, Pinger>>,
}

/// One running pinger, as [`Heard`] knows it.
#[derive(Debug)]
struct Pinger {
    /// The revision of the peer's library we hold.
    known: Option<u64>,
    /// When the peer last pinged us.
    pinged_us: Option<Instant>,
    wake: Arc<Notify>,
}

impl Heard {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pinger>> {
        self.pingers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Peer `peer_id` pinged us, saying its library is at `revision`.
    pub fn heard(&self, peer_id: &str, revision: u64) {
        if let Some(pinger) = self.lock().get_mut(peer_id) {
            pinger.pinged_us = Some(Instant::now());
            if pinger.known != Some(revision) {
                pinger.wake.notify_one();
            }
        }
    }

    /// When `peer_id` last pinged us.
    fn pinged_us(&self, peer_id: &str) -> Option<Instant> {
        self.lock().get(peer_id).and_then(|p| p.pinged_us)
    }

    /// A pinger for `peer_id` starts: it is woken through the result.
    fn register(&self, peer_id: &str) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        self.lock().insert(
            peer_id.to_owned(),
            Pinger {
                known: None,
                pinged_us: None,
                wake: Arc::clone(&wake),
            },
        );
        wake
    }

    /// The pinger for `peer_id` now holds its library at `revision`.
    fn fetched(&self, peer_id: &str, revision: Option<u64>) {
        if let Some(pinger) = self.lock().get_mut(peer_id) {
            pinger.known = revision;
        }
    }

    /// The pinger `wake` belongs to stopped.
    fn unregister(&self, peer_id: &str, wake: &Arc<Notify>) {
        let mut pingers = self.lock();
        if pingers
            .get(peer_id)
            .is_some_and(|p| Arc::ptr_eq(&p.wake, wake))
        {
            pingers.remove(peer_id);
        }
    }
}

/// What every pinger shares.
#[derive(Clone, Debug)]
pub struct Pinging {
    pub client: Arc<PeerClient>,
    /// Our peer id, named in our pings.
    pub peer_id: String,
    /// Our own revision, sent with each ping; a change pings every peer.
    pub own: RevisionFeed,
    pub heard: Arc<Heard>,
}

/// Keeps one pinger task per target, started as soon as a target appears
/// and stopped when it goes (or moves), until `shutdown`. Pingers are
/// independent, so a dead peer's timeouts never delay a live one.
pub async fn run(
    pinging: Pinging,
    mut targets: watch::Receiver<Vec<PingTarget>>,
    core: EventSender<PingEvent>,
    shutdown: CancellationToken,
) {
    let mut pingers: HashMap<String, (Vec<SocketAddr>, CancellationToken)> = HashMap::new();
    loop {
        let current = targets.borrow_and_update().clone();
        pingers.retain(|peer_id, (addrs, stop)| {
            let keep = current
                .iter()
                .any(|t| &t.peer_id == peer_id && t.addrs == *addrs);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for target in current {
            if !pingers.contains_key(&target.peer_id) {
                let stop = shutdown.child_token();
                pingers.insert(target.peer_id.clone(), (target.addrs.clone(), stop.clone()));
                tokio::spawn(ping_peer(pinging.clone(), target, core.clone(), stop));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = targets.changed() => if changed.is_err() { break },
        }
    }
}

/// Pings one peer every [`PING_INTERVAL`] (every [`RETRY_INTERVAL`] after
/// a missed answer), and at once when our revision changes or the peer
/// says its library changed, until `stop`.
async fn ping_peer(
    mut pinging: Pinging,
    target: PingTarget,
    core: EventSender<PingEvent>,
    stop: CancellationToken,
) {
    let emit = |event| async {
        // The core is gone only at shutdown.
        let _ = core.send(event).await;
    };
    let mut state = Liveness {
        last_answer: Instant::now(),
        revision: None,
        reported_unreachable: false,
    };
    let wake = pinging.heard.register(&target.peer_id);
    // The address that answered last; `None`: try them all.
    let mut in_use: Option<SocketAddr> = None;
    let mut next = Instant::now();
    let mut skipped = 0;
    // Our revision changed and the peer has not been told yet.
    let mut pushing = false;
    loop {
        let due = tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => true,
            () = wake.notified() => false,
            () = pinging.own.changed() => {
                pushing = true;
                next = next.min(Instant::now() + PUSH_DELAY);
                continue;
            }
        };
        // A routine ping to a healthy peer that just pinged us proves
        // nothing new: skip it (a few times in a row at most).
        let pinged_us = pinging.heard.pinged_us(&target.peer_id);
        if due
            && !pushing
            && in_use.is_some()
            && skipped < MAX_SKIPPED_PINGS
            && let Some(at) = pinged_us.filter(|at| at.elapsed() < PING_INTERVAL)
        {
            skipped += 1;
            next = at + PING_INTERVAL + SKIP_SLACK;
            continue;
        }
        skipped = 0;
        pushing = false;
        let known = state.revision.filter(|_| !state.reported_unreachable);
        let candidates = in_use.map_or_else(|| target.addrs.clone(), |addr| vec![addr]);
        let ours = pinging.own.current();
        let probed = probe(&pinging, &target.peer_id, &candidates, known, ours).await;
        next = Instant::now() + PING_INTERVAL;
        match probed {
            Ok((addr, rtt, answer)) => {
                if in_use != Some(addr) {
                    tracing::debug!(peer = %target.peer_id, %addr, "peer answers at this address");
                }
                in_use = Some(addr);
                state.last_answer = Instant::now();
                emit(PingEvent::Answered {
                    peer_id: target.peer_id.clone(),
                    addr,
                    rtt,
                })
                .await;
                if let Answer::Library { revision, games } = answer {
                    state.revision = Some(revision);
                    state.reported_unreachable = false;
                    pinging.heard.fetched(&target.peer_id, Some(revision));
                    emit(PingEvent::Library {
                        peer_id: target.peer_id.clone(),
                        revision,
                        games,
                    })
                    .await;
                }
            }
            Err(reason) => {
                in_use = None;
                next = Instant::now() + RETRY_INTERVAL;
                // Alive as long as it answers us or pings us.
                let alive_at = pinging
                    .heard
                    .pinged_us(&target.peer_id)
                    .map_or(state.last_answer, |at| at.max(state.last_answer));
                if !state.reported_unreachable && alive_at.elapsed() >= PEER_TIMEOUT {
                    state.reported_unreachable = true;
                    pinging.heard.fetched(&target.peer_id, None);
                    emit(PingEvent::Unreachable {
                        peer_id: target.peer_id.clone(),
                        reason,
                    })
                    .await;
                }
            }
        }
    }
    pinging.heard.unregister(&target.peer_id, &wake);
}

/// A peer's answer to one probe.
enum Answer {
    /// Alive, library revision as known.
    Unchanged,
    /// Alive, with a library we did not have.
    Library {
        revision: u64,
        games: Vec<AnnouncedGame>,
    },
}

/// Pings one peer at every address in `addrs` at once; the first valid
/// answer wins. Then, when its library revision is not `known`, fetches
/// the library from there too. A failed fetch counts as no answer
/// (retried next round).
async fn probe(
    pinging: &Pinging,
    peer_id: &str,
    addrs: &[SocketAddr],
    known: Option<u64>,
    ours: u64,
) -> Result<(SocketAddr, Duration, Answer), String> {
    let client = &*pinging.client;
    let request = Request::Ping {
        peer_id: pinging.peer_id.clone(),
        library_revision: ours,
    };
    if addrs.is_empty() {
        return Err("no address to dial".into());
    }
    let request = &request;
    let pings = addrs.iter().map(|&addr| {
        Box::pin(async move {
            let sent = Instant::now();
            ping(client, request, peer_id, addr)
                .await
                .map(|revision| (addr, sent.elapsed(), revision))
                .map_err(|reason| format!("{addr}: {reason}"))
        })
    });
    let ((addr, rtt, revision), _) = futures::future::select_ok(pings).await?;
    if known == Some(revision) {
        return Ok((addr, rtt, Answer::Unchanged));
    }
    let games = fetch_library(client, peer_id, addr).await?;
    Ok((addr, rtt, Answer::Library { revision, games }))
}

/// One ping; the peer's library revision.
async fn ping(
    client: &PeerClient,
    request: &Request,
    peer_id: &str,
    addr: SocketAddr,
) -> Result<u64, String> {
    let pong = tokio::time::timeout(PING_TIMEOUT, client.request(addr, request))
        .await
        .map_err(|_| format!("no answer within {PING_TIMEOUT:?}"))?
        .map_err(|err| err.to_string())?;
    match pong {
        Response::Pong {
            peer_id: answered,
            wire_version,
            library_revision,
        } => {
            if answered != peer_id {
                return Err(format!("{addr} answers as peer {answered}"));
            }
            if wire_version != WIRE_VERSION {
                return Err(format!("speaks wire version {wire_version}"));
            }
            Ok(library_revision)
        }
        other => Err(format!("answered a ping with {other:?}")),
    }
}

/// A peer's announced games (odd entries dropped).
async fn fetch_library(
    client: &PeerClient,
    peer_id: &str,
    addr: SocketAddr,
) -> Result<Vec<AnnouncedGame>, String> {
    match client.request(addr, &Request::ListGames).await {
        Ok(Response::Games { games }) => {
            if games.len() > MAX_ANNOUNCED_GAMES {
                return Err(format!(
                    "announced {} games (at most {MAX_ANNOUNCED_GAMES})",
                    games.len()
                ));
            }
            // A lying peer's odd entries are dropped, not the peer.
            let games = games
                .into_iter()
                .filter(|g| {
                    let ok = g.version.as_str().len() <= MAX_VERSION_LEN
                        && !g.version.as_str().chars().any(char::is_control)
                        && !g.version.as_str().is_empty();
                    if !ok {
                        tracing::warn!(peer = %peer_id, game = %g.id, "peer announced an invalid version, entry ignored");
                    }
                    ok
                })
                .collect();
            Ok(games)
        }
        Ok(other) => Err(format!("answered ListGames with {other:?}")),
        Err(err) => Err(format!("cannot fetch its library: {err}")),
    }
}
