//! The peer runtime in-process: daemons on loopback that find each other
//! through an in-memory discovery, connect over real QUIC, merge their
//! libraries, follow each other's changes, and notice when one dies.
//! (Real mDNS across hosts is covered by the lab tests.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use lanspread_proto::ipc::PeerEvent;
use lanspreadd::ping::{PEER_TIMEOUT, PING_INTERVAL};

fn library_with(id: &'static str, version: &'static str) -> impl FnOnce(&std::path::Path) {
    move |dir| {
        write(&dir.join(id).join("version.ini"), version.as_bytes());
        write(&dir.join(id).join("data.eti"), &[1; 100]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_find_each_other_and_see_each_others_games() {
    let lan = MemoryLan::default();
    let a = TestDaemon::start_on(&lan, library_with("openarena", "0.8.8")).await;
    let mut watch_a = a.client().await;
    watch_a.subscribe().await.unwrap();
    let b = TestDaemon::start_on(&lan, library_with("quake3", "1.32c")).await;
    let b_id = b.client().await.status().await.unwrap().peer_id;

    let discovered = wait_for_event(
        &mut watch_a,
        Duration::from_secs(10),
        "PeerDiscovered",
        |e| matches!(e, PeerEvent::PeerDiscovered { .. }),
    )
    .await;
    let connected = wait_for_event(
        &mut watch_a,
        Duration::from_secs(10),
        "PeerConnected",
        |e| matches!(e, PeerEvent::PeerConnected { .. }),
    )
    .await;
    assert!(connected.seq > discovered.seq);
    let PeerEvent::PeerConnected { peer } = connected.event else {
        unreachable!()
    };
    assert_eq!(peer.peer_id, b_id);

    let mut client = a.client().await;
    assert_eq!(client.peer_count().await.unwrap(), 1);
    let peers = client.list_peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].peer_id, b_id);
    let games = client.list_games().await.unwrap();
    let summary: Vec<_> = games
        .iter()
        .map(|g| {
            (
                g.id.as_str(),
                g.version.as_ref().unwrap().as_str(),
                g.downloaded,
                g.peers,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("openarena", "0.8.8", true, 0),
            ("quake3", "1.32c", false, 1)
        ]
    );
    let status = client.status().await.unwrap();
    assert!(status.listen.unwrap().starts_with("127.0.0.1:"));
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);
    b.stop().await.0.unwrap();
    a.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_merge_libraries_and_count_holders_of_the_latest_version() {
    let lan = MemoryLan::default();
    let a = TestDaemon::start_on(&lan, library_with("openarena", "0.8.8")).await;
    let b = TestDaemon::start_on(&lan, library_with("openarena", "0.9.0")).await;
    let c = TestDaemon::start_on(&lan, library_with("openarena", "0.9.0")).await;
    let mut client = a.client().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let games = loop {
        let games = client.list_games().await.unwrap();
        if games.first().is_some_and(|g| g.peers == 2) || Instant::now() > deadline {
            break games;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(games.len(), 1);
    assert_eq!(games[0].version.as_ref().unwrap().as_str(), "0.9.0");
    assert_eq!(games[0].peers, 2);
    assert!(
        games[0].downloaded,
        "the local (older) copy is still downloaded"
    );
    for daemon in [c, b, a] {
        daemon.stop().await.0.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_change_is_pushed_to_peers_well_within_a_ping_interval() {
    let lan = MemoryLan::default();
    let a = TestDaemon::start_on(&lan, library_with("openarena", "1")).await;
    let b = TestDaemon::start_on(&lan, |_| {}).await;
    let mut watch_b = b.client().await;
    watch_b.subscribe().await.unwrap();
    wait_for_event(
        &mut watch_b,
        Duration::from_secs(10),
        "PeerConnected",
        |e| matches!(e, PeerEvent::PeerConnected { .. }),
    )
    .await;

    let newer = tempfile::tempdir().unwrap();
    library_with("openarena", "2")(newer.path());
    library_with("teeworlds", "0.7")(newer.path());
    let started = Instant::now();
    a.client().await.set_game_dir(newer.path()).await.unwrap();
    wait_for_event(
        &mut watch_b,
        Duration::from_secs(10),
        "the new library",
        |e| {
            matches!(e, PeerEvent::LibrarySnapshot { games } if games.len() == 2
            && games[0].version.as_ref().is_some_and(|v| v.as_str() == "2"))
        },
    )
    .await;
    let took = started.elapsed();
    eprintln!("measured: the new library reached the other peer after {took:?}");
    // Pushed (a's pinger pings b at once with its new revision), not found
    // by b's next ping, which may be a whole interval away.
    assert!(took < PING_INTERVAL / 2, "took {took:?}");
    b.stop().await.0.unwrap();
    a.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dies_is_lost_within_ten_seconds_and_its_games_leave() {
    let lan = MemoryLan::default();
    let a = TestDaemon::start_on(&lan, |_| {}).await;
    let b = TestDaemon::start_on(&lan, library_with("quake3", "1")).await;
    let mut watch_a = a.client().await;
    watch_a.subscribe().await.unwrap();
    wait_for_event(
        &mut watch_a,
        Duration::from_secs(10),
        "PeerConnected",
        |e| matches!(e, PeerEvent::PeerConnected { .. }),
    )
    .await;
    assert_eq!(watch_a.list_games().await.unwrap().len(), 1);

    let died = Instant::now();
    b.stop().await.0.unwrap();
    wait_for_event(&mut watch_a, Duration::from_secs(10), "PeerLost", |e| {
        matches!(e, PeerEvent::PeerLost { .. })
    })
    .await;
    let took = died.elapsed();
    eprintln!("measured: a stopped peer was lost after {took:?}");
    assert!(
        took >= PEER_TIMEOUT / 2 && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert!(watch_a.list_games().await.unwrap().is_empty());
    assert_eq!(watch_a.peer_count().await.unwrap(), 0);
    a.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announced_at_a_dead_address_first_is_reached_at_the_next() {
    let lan = MemoryLan::default();
    // Nothing answers there: a peer's address on another network.
    let dead: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    lan.add_decoy(dead);
    let a = TestDaemon::start_on(&lan, library_with("openarena", "1")).await;
    let b = TestDaemon::start_on(&lan, library_with("quake3", "1")).await;
    let mut client = a.client().await;
    wait_peer_count(&mut client, 1, Duration::from_secs(10)).await;
    let b_listen = b.client().await.status().await.unwrap().listen.unwrap();
    let port = b_listen.rsplit_once(':').unwrap().1;
    let peers = client.list_peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    let peer = &peers[0];
    assert_eq!(
        peer.address.as_deref(),
        Some(&*format!("127.0.0.1:{port}")),
        "{peer:?}"
    );
    assert_eq!(peer.addresses[0], dead.to_string(), "{peer:?}");
    assert_eq!(peer.games, 1);
    assert!(peer.rtt_us.is_some(), "{peer:?}");
    b.stop().await.0.unwrap();
    a.stop().await.0.unwrap();
}
