//! Lab tests: real `lanspreadd` binaries on isolated hosts with their own
//! Avahi, finding each other over real mDNS and talking over real QUIC
//! (`docs/peer-protocol.md#discovery`, `docs/lab.md`). They need root,
//! which CI has.

mod common;
mod lab_harness;

use std::time::{Duration, Instant};

use common::{wait_for_event, write};
use lab_harness::Lab;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerEvent;

/// Generous bound for mDNS + QUIC + first library fetch on a busy machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn game(id: &'static str, version: &'static str) -> impl FnOnce(&std::path::Path) {
    move |dir| {
        write(&dir.join(id).join("version.ini"), version.as_bytes());
        write(&dir.join(id).join("data.eti"), &[7; 4096]);
    }
}

async fn wait_connected_to(client: &mut IpcClient, peer_id: &str) {
    let peer_id = peer_id.to_owned();
    wait_for_event(
        client,
        CONNECT_TIMEOUT,
        "PeerConnected",
        |e| matches!(e, PeerEvent::PeerConnected { peer } if peer.peer_id == peer_id),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn two_hosts_discover_each_other_with_no_configuration() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", game("openarena", "0.8.8"));
    let b = lab.spawn_daemon("h2", "bravo", game("quake3", "1.32c"));
    let (mut watch_a, mut watch_b) = (a.client().await, b.client().await);
    let id_a = watch_a.hello().peer_id.clone();
    let id_b = watch_b.hello().peer_id.clone();
    watch_a.subscribe().await.unwrap();
    watch_b.subscribe().await.unwrap();

    for (watch, other, other_host) in [(&mut watch_a, &id_b, "h2"), (&mut watch_b, &id_a, "h1")] {
        let discovered = wait_for_event(
            watch,
            CONNECT_TIMEOUT,
            "PeerDiscovered",
            |e| matches!(e, PeerEvent::PeerDiscovered { peer } if &peer.peer_id == other),
        )
        .await;
        let PeerEvent::PeerDiscovered { peer } = discovered.event else {
            unreachable!()
        };
        assert!(
            peer.address
                .starts_with(&format!("{}:", Lab::address(other_host))),
            "dialable lab address expected, got {}",
            peer.address
        );
        wait_connected_to(watch, other).await;
    }
    let peers = a.client().await.list_peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].name, "bravo");
    let games = a.client().await.list_games().await.unwrap();
    let quake = games
        .iter()
        .find(|g| g.id.as_str() == "quake3")
        .expect("b's game");
    assert_eq!((quake.peers, quake.downloaded), (1, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn three_hosts_see_each_others_games() {
    let lab = Lab::up(3);
    let daemons = [
        lab.spawn_daemon("h1", "one", game("openarena", "1")),
        lab.spawn_daemon("h2", "two", game("quake3", "2")),
        lab.spawn_daemon("h3", "three", game("teeworlds", "3")),
    ];
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    for daemon in &daemons {
        let mut client = daemon.client().await;
        loop {
            let games = client.list_games().await.unwrap();
            let ids: Vec<_> = games.iter().map(|g| g.id.as_str()).collect();
            if ids == ["openarena", "quake3", "teeworlds"] {
                assert_eq!(games.iter().filter(|g| g.downloaded).count(), 1);
                assert!(games.iter().all(|g| g.downloaded || g.peers == 1));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "merged library incomplete: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(client.peer_count().await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_cut_link_loses_the_peer_within_ten_seconds_and_a_restored_one_brings_it_back() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", game("openarena", "1"));
    let b = lab.spawn_daemon("h2", "bravo", game("quake3", "1"));
    let mut watch_a = a.client().await;
    watch_a.subscribe().await.unwrap();
    let id_b = b.client().await.hello().peer_id.clone();
    wait_connected_to(&mut watch_a, &id_b).await;

    lab.cut("h2");
    let cut_at = Instant::now();
    wait_for_event(
        &mut watch_a,
        Duration::from_secs(10),
        "PeerLost within 10 s",
        |e| matches!(e, PeerEvent::PeerLost { peer_id } if *peer_id == id_b),
    )
    .await;
    let lost_after = cut_at.elapsed();
    eprintln!("measured: PeerLost {lost_after:?} after the link cut");
    assert!(
        a.client()
            .await
            .list_games()
            .await
            .unwrap()
            .iter()
            .all(|g| g.id.as_str() != "quake3"),
        "the lost peer's games must leave the library"
    );

    lab.restore("h2");
    let restored_at = Instant::now();
    wait_connected_to(&mut watch_a, &id_b).await;
    eprintln!(
        "measured: PeerConnected again {:?} after the link came back",
        restored_at.elapsed()
    );
    assert_eq!(a.client().await.peer_count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn restarting_avahi_under_a_daemon_does_not_end_discovery() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", game("openarena", "1"));
    let b = lab.spawn_daemon("h2", "bravo", game("quake3", "1"));
    let mut watch_a = a.client().await;
    watch_a.subscribe().await.unwrap();
    let id_b = b.client().await.hello().peer_id.clone();
    wait_connected_to(&mut watch_a, &id_b).await;

    lab.restart_avahi("h1");
    // A newcomer after the restart: alpha must browse again to find it,
    // and must have re-registered for the newcomer to find alpha.
    let c = lab.spawn_daemon("h2", "charlie", game("teeworlds", "1"));
    let mut watch_c = c.client().await;
    watch_c.subscribe().await.unwrap();
    let id_c = watch_c.hello().peer_id.clone();
    wait_connected_to(&mut watch_a, &id_c).await;
    wait_connected_to(&mut watch_c, &watch_a.hello().peer_id.clone()).await;
    let log = a.log_text();
    assert!(
        log.contains("mdns discovery failed") && log.contains("mdns discovery running"),
        "the daemon must say in its log that it lost and regained Avahi:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_game_added_on_one_host_shows_up_on_another() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", game("quake3", "1"));
    let b = lab.spawn_daemon("h2", "bravo", |_| {});
    let mut watch_b = b.client().await;
    watch_b.subscribe().await.unwrap();
    let id_a = a.client().await.hello().peer_id.clone();
    wait_connected_to(&mut watch_b, &id_a).await;
    let games_a = a.games();
    // Added by hand on h1, version.ini last.
    write(&games_a.join("openarena/pak0.eti"), &[1; 10_000]);
    write(&games_a.join("openarena/version.ini"), b"0.8.8");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = b.ctl(&["--json", "games"]);
        let games: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if games
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == "openarena" && g["peers"] == 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new game never reached the peer: {games}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time from a change on h1's disk to the snapshot on h2, median of 10.
    let mut samples = Vec::new();
    for round in 1..=10u32 {
        let version = format!("1.{round}");
        let changed = Instant::now();
        write(&games_a.join("openarena/version.ini"), version.as_bytes());
        wait_for_event(&mut watch_b, Duration::from_secs(10), "the peer's new version", |e| {
            matches!(e, PeerEvent::LibrarySnapshot { games } if games.iter().any(|g|
                g.id.as_str() == "openarena" && g.version.as_ref().is_some_and(|v| v.as_str() == version)))
        })
        .await;
        samples.push(changed.elapsed());
    }
    samples.sort();
    eprintln!(
        "measured: change on disk -> snapshot on a peer: median {:?} (min {:?}, max {:?})",
        samples[5], samples[0], samples[9]
    );
}
