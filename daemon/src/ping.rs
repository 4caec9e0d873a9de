//! Liveness: pings every known peer over QUIC, fetches a peer's library
//! when its revision changes, and reports peers that stopped answering.
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
    pub addr: SocketAddr,
}

/// What pinging found out.
#[derive(Clone, Debug, PartialEq)]
pub enum PingEvent {
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
    let mut pingers: HashMap<String, (SocketAddr, CancellationToken)> = HashMap::new();
    loop {
        let current = targets.borrow_and_update().clone();
        pingers.retain(|peer_id, (addr, stop)| {
            let keep = current
                .iter()
                .any(|t| &t.peer_id == peer_id && t.addr == *addr);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for target in current {
            if !pingers.contains_key(&target.peer_id) {
                let stop = shutdown.child_token();
                pingers.insert(target.peer_id.clone(), (target.addr, stop.clone()));
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
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let known = state.revision.filter(|_| !state.reported_unreachable);
        match probe(&client, &target, known).await {
            Ok(Answer::Unchanged) => state.last_answer = Instant::now(),
            Ok(Answer::Library { revision, games }) => {
                state.last_answer = Instant::now();
                state.revision = Some(revision);
                state.reported_unreachable = false;
                emit(PingEvent::Library {
                    peer_id: target.peer_id.clone(),
                    revision,
                    games,
                })
                .await;
            }
            Err(reason) => {
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

/// Pings one peer and, when its library revision is not `known`, fetches
/// the library too. A failed fetch counts as no answer (retried next round).
async fn probe(
    client: &PeerClient,
    target: &PingTarget,
    known: Option<u64>,
) -> Result<Answer, String> {
    let pong = tokio::time::timeout(PING_TIMEOUT, client.request(target.addr, &Request::Ping))
        .await
        .map_err(|_| format!("no answer within {PING_TIMEOUT:?}"))?
        .map_err(|err| err.to_string())?;
    let revision = match pong {
        Response::Pong {
            peer_id,
            wire_version,
            library_revision,
        } => {
            if peer_id != target.peer_id {
                return Err(format!("{} answers as peer {peer_id}", target.addr));
            }
            if wire_version != WIRE_VERSION {
                return Err(format!("speaks wire version {wire_version}"));
            }
            library_revision
        }
        other => return Err(format!("answered a ping with {other:?}")),
    };
    if known == Some(revision) {
        return Ok(Answer::Unchanged);
    }
    match client.request(target.addr, &Request::ListGames).await {
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
                        tracing::warn!(peer = %target.peer_id, game = %g.id, "peer announced an invalid version, entry ignored");
                    }
                    ok
                })
                .collect();
            Ok(Answer::Library { revision, games })
        }
        Ok(other) => Err(format!("answered ListGames with {other:?}")),
        Err(err) => Err(format!("cannot fetch its library: {err}")),
    }
}
