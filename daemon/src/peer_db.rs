//! `PeerGameDB`: the peers this daemon knows, their liveness, and the games
//! each announces; and the merged library (local + peers) that clients see.
//!
//! Pure state, owned by the core; no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use lanspread_proto::model::PeerState;
use lanspread_proto::model::{GameId, GameSummary, KnownPeer, PeerInfo, Version};
use lanspread_proto::wire::AnnouncedGame;

use crate::catalog::Catalog;
use crate::library::LocalLibrary;

/// One known peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerEntry {
    /// Its id, name, and the address events name (the one in use, else
    /// the best one mDNS gave).
    pub info: PeerInfo,
    /// Every address mDNS gave for it, best first (never empty).
    pub addrs: Vec<SocketAddr>,
    /// The address its pings were last answered at.
    pub in_use: Option<SocketAddr>,
    /// Round-trip time of the last answered ping.
    pub rtt: Option<Duration>,
    /// When it last answered a ping.
    pub last_seen: Option<Instant>,
    pub state: PeerState,
    /// Its announced games (empty unless connected).
    pub games: Vec<AnnouncedGame>,
    /// The library revision `games` belongs to.
    pub revision: Option<u64>,
    /// Its mDNS record went away; once it is also lost, it is forgotten.
    pub left_mdns: bool,
}

impl PeerEntry {
    /// Where to send requests: the address in use, else the best one.
    pub fn dial_addr(&self) -> SocketAddr {
        self.in_use.unwrap_or(self.addrs[0])
    }

    /// The `ListPeers` view of this entry at `now`.
    fn known(&self, now: Instant) -> KnownPeer {
        KnownPeer {
            peer_id: self.info.peer_id.clone(),
            name: self.info.name.clone(),
            state: self.state,
            address: self.in_use.map(|a| a.to_string()),
            addresses: self.addrs.iter().map(ToString::to_string).collect(),
            rtt_us: self
                .rtt
                .map(|rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
            last_seen_secs: self
                .last_seen
                .map(|seen| now.saturating_duration_since(seen).as_secs()),
            games: u32::try_from(self.games.len()).unwrap_or(u32::MAX),
        }
    }
}

/// Every known peer by peer id.
#[derive(Clone, Debug, Default)]
pub struct PeerGameDb {
    peers: BTreeMap<String, PeerEntry>,
}

/// What a discovery did to the database.
#[derive(Debug, PartialEq, Eq)]
pub enum Discovered {
    /// A peer not known before.
    New,
    /// A known peer at a new address.
    Moved,
    /// Nothing new.
    Unchanged,
}

impl PeerGameDb {
    /// Records a peer seen in mDNS at `addrs` (best first, not empty).
    pub fn discovered(&mut self, peer_id: &str, name: &str, addrs: &[SocketAddr]) -> Discovered {
        let Some(&best) = addrs.first() else {
            return Discovered::Unchanged;
        };
        match self.peers.get_mut(peer_id) {
            None => {
                self.peers.insert(
                    peer_id.to_owned(),
                    PeerEntry {
                        info: PeerInfo {
                            peer_id: peer_id.to_owned(),
                            name: name.to_owned(),
                            address: best.to_string(),
                        },
                        addrs: addrs.to_vec(),
                        in_use: None,
                        rtt: None,
                        last_seen: None,
                        state: PeerState::Discovered,
                        games: Vec::new(),
                        revision: None,
                        left_mdns: false,
                    },
                );
                Discovered::New
            }
            Some(entry) if entry.addrs != addrs || entry.info.name != name => {
                entry.addrs = addrs.to_vec();
                entry.info.name = name.to_owned();
                if entry.in_use.is_some_and(|a| !addrs.contains(&a)) {
                    entry.in_use = None;
                }
                entry.info.address = entry.in_use.unwrap_or(best).to_string();
                entry.left_mdns = false;
                Discovered::Moved
            }
            Some(entry) => {
                entry.left_mdns = false;
                Discovered::Unchanged
            }
        }
    }

    /// Records an answered ping at `addr` after `rtt`.
    pub fn answered(&mut self, peer_id: &str, addr: SocketAddr, rtt: Duration, now: Instant) {
        if let Some(entry) = self.peers.get_mut(peer_id) {
            entry.in_use = Some(addr);
            entry.info.address = addr.to_string();
            entry.rtt = Some(rtt);
            entry.last_seen = Some(now);
        }
    }

    /// Every known peer as `ListPeers` reports it.
    pub fn known(&self, now: Instant) -> Vec<KnownPeer> {
        self.peers.values().map(|p| p.known(now)).collect()
    }

    /// Records that a peer's mDNS record went away. mDNS is only a hint:
    /// a peer that still answers pings stays. Returns true when the peer
    /// was already lost and has now been forgotten.
    pub fn left_mdns(&mut self, peer_id: &str) -> bool {
        match self.peers.get_mut(peer_id) {
            Some(entry) if entry.state == PeerState::Lost => {
                self.peers.remove(peer_id);
                true
            }
            Some(entry) => {
                entry.left_mdns = true;
                false
            }
            None => false,
        }
    }

    /// Records a peer's library; returns true when it just became
    /// connected.
    pub fn library(&mut self, peer_id: &str, revision: u64, games: Vec<AnnouncedGame>) -> bool {
        let Some(entry) = self.peers.get_mut(peer_id) else {
            return false;
        };
        let newly = entry.state != PeerState::Connected;
        entry.state = PeerState::Connected;
        entry.games = games;
        entry.revision = Some(revision);
        newly
    }

    /// Marks a peer lost and forgets its games (and the peer itself, if
    /// its mDNS record is gone too). Returns true if it was connected, so
    /// a `PeerLost` is due.
    pub fn lost(&mut self, peer_id: &str) -> bool {
        let Some(entry) = self.peers.get_mut(peer_id) else {
            return false;
        };
        let was_connected = entry.state == PeerState::Connected;
        if entry.left_mdns {
            self.peers.remove(peer_id);
        } else {
            entry.state = PeerState::Lost;
            entry.in_use = None;
            entry.games.clear();
            entry.revision = None;
        }
        was_connected
    }

    /// Forgets a peer entirely.
    pub fn remove(&mut self, peer_id: &str) -> Option<PeerEntry> {
        self.peers.remove(peer_id)
    }

    pub fn get(&self, peer_id: &str) -> Option<&PeerEntry> {
        self.peers.get(peer_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers.values()
    }

    pub fn connected(&self) -> impl Iterator<Item = &PeerEntry> {
        self.peers
            .values()
            .filter(|p| p.state == PeerState::Connected)
    }

    pub fn connected_count(&self) -> u32 {
        self.connected().count() as u32
    }

    /// The library clients see: every cataloged title held locally or by a
    /// connected peer, with the latest version anyone holds (complete or
    /// downloading it), how many peers hold that version complete and how
    /// many are downloading it. Titles outside the local catalog are left
    /// out (there is no name for them).
    pub fn merged(&self, local: &LocalLibrary, catalog: &Catalog) -> Vec<GameSummary> {
        // Per game: the latest version, its complete holders, its downloaders.
        let mut latest: BTreeMap<GameId, (Option<Version>, u32, u32)> = BTreeMap::new();
        for game in local.games.values() {
            latest.insert(game.id.clone(), (game.version.clone(), 0, 0));
        }
        for game in self.connected().flat_map(|p| &p.games) {
            if catalog.get(&game.id).is_none() {
                continue;
            }
            let entry = latest.entry(game.id.clone()).or_insert((None, 0, 0));
            match &entry.0 {
                Some(current) if *current > game.version => continue,
                Some(current) if *current == game.version => {}
                _ => *entry = (Some(game.version.clone()), 0, 0),
            }
            if game.complete {
                entry.1 += 1;
            } else {
                entry.2 += 1;
            }
        }
        latest
            .into_iter()
            .map(|(id, (version, peers, downloading))| {
                let local = local.games.get(&id);
                GameSummary {
                    name: catalog.get(&id).map(|e| e.name.clone()).unwrap_or_default(),
                    version,
                    downloaded: local.is_some_and(|g| g.downloaded),
                    installed: local.is_some_and(|g| g.installed),
                    size: local.map_or(0, |g| g.size),
                    peers,
                    downloading,
                    preparing: None,
                    id,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::LocalGame;

    fn catalog() -> Catalog {
        Catalog::parse(
            r#"[{"id":"a","name":"A"},{"id":"b","name":"B"},{"id":"c","name":"C"}]"#,
            "t",
        )
        .unwrap()
    }

    fn announced(id: &str, version: &str) -> AnnouncedGame {
        AnnouncedGame {
            id: GameId::new(id).unwrap(),
            version: Version::new(version),
            size: 10,
            manifest: None,
            complete: true,
        }
    }

    fn addr(port: u16) -> [SocketAddr; 1] {
        [SocketAddr::from(([10, 0, 0, 1], port))]
    }

    #[test]
    fn membership_moves_through_discovered_connected_lost_and_back() {
        let mut db = PeerGameDb::default();
        assert_eq!(db.discovered("p1", "one", &addr(1)), Discovered::New);
        assert_eq!(db.discovered("p1", "one", &addr(1)), Discovered::Unchanged);
        assert_eq!(db.connected_count(), 0);
        assert!(db.library("p1", 1, vec![announced("a", "1")]));
        assert!(!db.library("p1", 2, vec![announced("a", "2")]));
        assert_eq!(db.connected_count(), 1);
        assert!(db.lost("p1"));
        assert!(!db.lost("p1"));
        assert_eq!(db.get("p1").unwrap().state, PeerState::Lost);
        assert!(db.get("p1").unwrap().games.is_empty());
        assert!(
            db.library("p1", 3, vec![]),
            "a lost peer that answers again reconnects"
        );
        assert_eq!(db.discovered("p1", "one", &addr(2)), Discovered::Moved);
        assert!(!db.library("unknown", 1, vec![]));
    }

    #[test]
    fn list_peers_shows_every_known_peer_with_its_addresses_rtt_and_last_answer() {
        let mut db = PeerGameDb::default();
        let a: SocketAddr = "10.0.0.1:9".parse().unwrap();
        let b: SocketAddr = "192.168.1.1:9".parse().unwrap();
        db.discovered("p1", "one", &[a, b]);
        db.discovered("p2", "two", &addr(2));
        let start = Instant::now();
        db.answered("p1", b, Duration::from_micros(420), start);
        db.library("p1", 1, vec![announced("a", "1"), announced("b", "1")]);
        db.discovered("p3", "three", &addr(3));
        db.library("p3", 1, vec![]);
        db.lost("p3");
        let known = db.known(start + Duration::from_secs(3));
        assert_eq!(
            known,
            [
                KnownPeer {
                    peer_id: "p1".into(),
                    name: "one".into(),
                    state: PeerState::Connected,
                    address: Some(b.to_string()),
                    addresses: vec![a.to_string(), b.to_string()],
                    rtt_us: Some(420),
                    last_seen_secs: Some(3),
                    games: 2,
                },
                KnownPeer {
                    peer_id: "p2".into(),
                    name: "two".into(),
                    state: PeerState::Discovered,
                    address: None,
                    addresses: vec!["10.0.0.1:2".into()],
                    rtt_us: None,
                    last_seen_secs: None,
                    games: 0,
                },
                KnownPeer {
                    peer_id: "p3".into(),
                    name: "three".into(),
                    state: PeerState::Lost,
                    address: None,
                    addresses: vec!["10.0.0.1:3".into()],
                    rtt_us: None,
                    last_seen_secs: None,
                    games: 0,
                },
            ]
        );
        // Events name the address in use; new addresses keep it while it
        // is still among them.
        assert_eq!(db.get("p1").unwrap().info.address, b.to_string());
        assert_eq!(db.discovered("p1", "one", &[b]), Discovered::Moved);
        assert_eq!(db.get("p1").unwrap().in_use, Some(b));
        assert_eq!(db.discovered("p1", "one", &[a]), Discovered::Moved);
        assert_eq!(db.get("p1").unwrap().in_use, None);
        assert_eq!(db.get("p1").unwrap().info.address, a.to_string());
    }

    #[test]
    fn a_peer_is_forgotten_only_when_it_left_mdns_and_stopped_answering() {
        let mut db = PeerGameDb::default();
        db.discovered("p1", "one", &addr(1));
        db.library("p1", 1, vec![]);
        assert!(!db.left_mdns("p1"), "still answering: kept");
        assert!(db.get("p1").is_some());
        assert!(db.lost("p1"));
        assert!(db.get("p1").is_none(), "gone from mDNS and lost: forgotten");

        db.discovered("p2", "two", &addr(2));
        db.library("p2", 1, vec![]);
        db.lost("p2");
        assert!(db.left_mdns("p2"));
        assert!(db.get("p2").is_none());
    }

    #[test]
    fn the_merged_library_takes_the_latest_version_and_counts_its_holders() {
        let mut local = LocalLibrary::default();
        let a = GameId::new("a").unwrap();
        local.games.insert(
            a.clone(),
            LocalGame {
                id: a,
                name: "A".into(),
                version: Some(Version::new("1.9")),
                downloaded: true,
                installed: true,
                size: 99,
                files: vec![],
                unnamed_files: vec![],
            },
        );
        let mut db = PeerGameDb::default();
        for (peer, games) in [
            ("p1", vec![announced("a", "1.10"), announced("b", "1")]),
            ("p2", vec![announced("a", "1.10"), announced("zzz", "1")]),
            ("p3", vec![announced("a", "1.2")]),
        ] {
            db.discovered(peer, peer, &addr(1));
            db.library(peer, 1, games);
        }
        db.discovered("p4", "p4", &addr(4)); // not connected: ignored
        let merged = db.merged(&local, &catalog());
        let summary: Vec<_> = merged
            .iter()
            .map(|g| {
                (
                    g.id.as_str(),
                    g.version.as_ref().map(|v| v.as_str()),
                    g.peers,
                    g.downloaded,
                    g.size,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", Some("1.10"), 2, true, 99),
                ("b", Some("1"), 1, false, 0)
            ]
        );
        // A lost peer's games leave the merged library.
        db.lost("p1");
        let merged = db.merged(&local, &catalog());
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].peers, 1);
    }
}
