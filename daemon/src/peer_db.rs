//! `PeerGameDB`: the peers this daemon knows, their liveness, and the games
//! each announces; and the merged library (local + peers) that clients see.
//!
//! Pure state, owned by the core; no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lanspread_proto::model::{GameId, GameSummary, PeerInfo, Version};
use lanspread_proto::wire::AnnouncedGame;

use crate::catalog::Catalog;
use crate::library::LocalLibrary;

/// Where a known peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Seen in mDNS, not yet answered.
    Discovered,
    /// Answers pings and its library is known.
    Connected,
    /// Stopped answering; kept (and still pinged) so it can come back.
    Lost,
}

/// One known peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerEntry {
    pub info: PeerInfo,
    pub addr: SocketAddr,
    pub state: PeerState,
    /// Its announced games (empty unless connected).
    pub games: Vec<AnnouncedGame>,
    /// The library revision `games` belongs to.
    pub revision: Option<u64>,
    /// Its mDNS record went away; once it is also lost, it is forgotten.
    pub left_mdns: bool,
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
    /// Records a peer seen in mDNS.
    pub fn discovered(&mut self, peer_id: &str, name: &str, addr: SocketAddr) -> Discovered {
        let info = PeerInfo {
            peer_id: peer_id.to_owned(),
            name: name.to_owned(),
            address: addr.to_string(),
        };
        match self.peers.get_mut(peer_id) {
            None => {
                self.peers.insert(
                    peer_id.to_owned(),
                    PeerEntry {
                        info,
                        addr,
                        state: PeerState::Discovered,
                        games: Vec::new(),
                        revision: None,
                        left_mdns: false,
                    },
                );
                Discovered::New
            }
            Some(entry) if entry.addr != addr || entry.info.name != name => {
                entry.addr = addr;
                entry.info = info;
                entry.left_mdns = false;
                Discovered::Moved
            }
            Some(entry) => {
                entry.left_mdns = false;
                Discovered::Unchanged
            }
        }
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
    /// connected peer, with the latest version anyone holds and how many
    /// peers hold that version. Titles outside the local catalog are left
    /// out (there is no name for them).
    pub fn merged(&self, local: &LocalLibrary, catalog: &Catalog) -> Vec<GameSummary> {
        let mut latest: BTreeMap<GameId, (Option<Version>, u32)> = BTreeMap::new();
        for game in local.games.values() {
            latest.insert(game.id.clone(), (game.version.clone(), 0));
        }
        for game in self.connected().flat_map(|p| &p.games) {
            if catalog.get(&game.id).is_none() {
                continue;
            }
            let entry = latest.entry(game.id.clone()).or_insert((None, 0));
            match &entry.0 {
                Some(current) if *current > game.version => {}
                Some(current) if *current == game.version => entry.1 += 1,
                _ => *entry = (Some(game.version.clone()), 1),
            }
        }
        latest
            .into_iter()
            .map(|(id, (version, peers))| {
                let local = local.games.get(&id);
                GameSummary {
                    name: catalog.get(&id).map(|e| e.name.clone()).unwrap_or_default(),
                    version,
                    downloaded: local.is_some_and(|g| g.downloaded),
                    installed: local.is_some_and(|g| g.installed),
                    size: local.map_or(0, |g| g.size),
                    peers,
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
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn membership_moves_through_discovered_connected_lost_and_back() {
        let mut db = PeerGameDb::default();
        assert_eq!(db.discovered("p1", "one", addr(1)), Discovered::New);
        assert_eq!(db.discovered("p1", "one", addr(1)), Discovered::Unchanged);
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
        assert_eq!(db.discovered("p1", "one", addr(2)), Discovered::Moved);
        assert!(!db.library("unknown", 1, vec![]));
    }

    #[test]
    fn a_peer_is_forgotten_only_when_it_left_mdns_and_stopped_answering() {
        let mut db = PeerGameDb::default();
        db.discovered("p1", "one", addr(1));
        db.library("p1", 1, vec![]);
        assert!(!db.left_mdns("p1"), "still answering: kept");
        assert!(db.get("p1").is_some());
        assert!(db.lost("p1"));
        assert!(db.get("p1").is_none(), "gone from mDNS and lost: forgotten");

        db.discovered("p2", "two", addr(2));
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
            db.discovered(peer, peer, addr(1));
            db.library(peer, 1, games);
        }
        db.discovered("p4", "p4", addr(4)); // not connected: ignored
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
