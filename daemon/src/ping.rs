//! Liveness: pings every known peer over QUIC, fetches a peer's library
//! when its revision changes, and reports peers that stopped answering.
//! A peer may be reachable at several addresses (mDNS gives them all):
//! until one answers, every ping goes to all of them at once and the
//! first valid answer picks the address in use.
//!
//! mDNS never reports a cut link, so this task is the only judge of
//! whether a peer is alive. Lost peers keep being pinged so that a
//! restored link brings them back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::wire::{AnnouncedGame, Request, Response, WIRE_VERSION};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::event_sender::EventSender;
use crate::library::version_ini::MAX_VERSION_LEN;
use crate::transport::PeerClient;

/// Time between two pings of the same peer. Also the bound on how long a
/// library change takes to reach the other peers.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long one ping may take.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// A peer that has not answered for this long is lost. With the interval
/// and timeout above, a dead peer is reported within about 7.5 s.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Keeps one pinger task per target, started as soon as a target appears
/// and stopped when it goes (or moves), until `shutdown`. Pingers are
/// independent, so a dead peer's timeouts never delay a live one.
pub async fn run(
    client: Arc<PeerClient>,
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
                tokio::spawn(ping_peer(Arc::clone(&client), target, core.clone(), stop));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = targets.changed() => if changed.is_err() { break },
        }
    }
}

/// Pings one peer every [`PING_INTERVAL`] until `stop`.
async fn ping_peer(
    client: Arc<PeerClient>,
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
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The address that answered last; `None`: try them all.
    let mut in_use: Option<SocketAddr> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let known = state.revision.filter(|_| !state.reported_unreachable);
        let candidates = in_use.map_or_else(|| target.addrs.clone(), |addr| vec![addr]);
        match probe(&client, &target.peer_id, &candidates, known).await {
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
                if !state.reported_unreachable && state.last_answer.elapsed() >= PEER_TIMEOUT {
                    state.reported_unreachable = true;
                    emit(PingEvent::Unreachable {
                        peer_id: target.peer_id.clone(),
                        reason,
                    })
                    .await;
                }
            }
        }
    }
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
    client: &PeerClient,
    peer_id: &str,
    addrs: &[SocketAddr],
    known: Option<u64>,
) -> Result<(SocketAddr, Duration, Answer), String> {
    if addrs.is_empty() {
        return Err("no address to dial".into());
    }
    let pings = addrs.iter().map(|&addr| {
        Box::pin(async move {
            let sent = Instant::now();
            ping(client, peer_id, addr)
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
async fn ping(client: &PeerClient, peer_id: &str, addr: SocketAddr) -> Result<u64, String> {
    let pong = tokio::time::timeout(PING_TIMEOUT, client.request(addr, &Request::Ping))
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
