//! Lab tests of discovery (issue 15): real `lanspreadd` binaries on lab
//! hosts with their own Avahi. A peer is found whatever address family
//! Avahi resolves it to, a record that cannot be resolved concerns only
//! that peer, daemons sharing a host find each other and the rest, and
//! back-to-back restarts on a loaded lab are all discovered within 3 s.
//! `LANSPREAD_LAB_RESTARTS=N` runs N restart cycles instead of 20.

mod common;
mod lab_harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::wait_for_event;
use lab_harness::game::{self, GAME};
use lab_harness::{Lab, LabDaemon};
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::model::{KnownPeer, PeerState};

/// Generous bound for mDNS + QUIC + first library fetch on a busy machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The bound: a restarted daemon is seen both ways within this.
const RESTART_BOUND: Duration = Duration::from_secs(3);

const RESTART_CYCLES: usize = 20;

/// The game h4 downloads from h3 over and over while h2 restarts.
const LOAD_GAME_SIZE: u64 = 96 << 20;

/// Polls `ListPeers` until `peer_id` is connected; its entry.
async fn wait_connected(client: &mut IpcClient, peer_id: &str, within: Duration) -> KnownPeer {
    let deadline = Instant::now() + within;
    loop {
        let peers = client.list_peers().await.unwrap();
        if let Some(peer) = peers
            .iter()
            .find(|p| p.peer_id == peer_id && p.state == PeerState::Connected)
        {
            return peer.clone();
        }
        assert!(
            Instant::now() < deadline,
            "peer {peer_id} not connected within {within:?}; known: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn peer_id(daemon: &LabDaemon) -> String {
    daemon.client().await.hello().peer_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_peer_whose_mdns_runs_over_ipv6_only_is_found_both_ways() {
    // h2's Avahi speaks mDNS over IPv6 only: every resolution either way is
    // an IPv6 link-local address without a scope id, which cannot be
    // dialled. Before the TXT record carried the daemons' addresses, the
    // two never found each other.
    let lab = Lab::up_with(2, &["h2:server.use-ipv4=no"]);
    let a = lab.spawn_daemon("h1", "alpha", |_| {});
    let b = lab.spawn_daemon("h2", "bravo", |_| {});
    let (id_a, id_b) = (peer_id(&a).await, peer_id(&b).await);
    let seen_by_a = wait_connected(&mut a.client().await, &id_b, CONNECT_TIMEOUT).await;
    let seen_by_b = wait_connected(&mut b.client().await, &id_a, CONNECT_TIMEOUT).await;
    eprintln!(
        "measured: both connected {:?} after the second daemon started",
        b.started.elapsed()
    );
    for (seen, host) in [(&seen_by_a, "h2"), (&seen_by_b, "h1")] {
        let address = seen.address.as_deref().expect("an address in use");
        assert!(
            address.starts_with(&format!("{}:", Lab::address(host))),
            "the lab IPv4 address expected, got {seen:?}"
        );
        assert!(seen.addresses.iter().any(|a| a == address), "{seen:?}");
        assert!(
            seen.rtt_us.is_some() && seen.last_seen_secs.is_some(),
            "{seen:?}"
        );
    }
    // `lanspreadctl peers` shows the same, as a table and as JSON.
    let out = a.ctl(&["peers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("bravo") && text.contains("connected"),
        "{text}"
    );
    let out = a.ctl(&["--json", "peers"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["state"], "connected", "{json}");
    assert_eq!(json[0]["peer_id"], id_b.as_str(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn two_daemons_on_one_host_and_one_on_another_all_see_each_other() {
    let lab = Lab::up(2);
    let daemons = [
        lab.spawn_daemon("h1", "same-host", |_| {}),
        lab.spawn_daemon("h1", "same-host", |_| {}),
        lab.spawn_daemon("h2", "elsewhere", |_| {}),
    ];
    let mut ids = Vec::new();
    for daemon in &daemons {
        ids.push(peer_id(daemon).await);
    }
    for (i, daemon) in daemons.iter().enumerate() {
        let mut client = daemon.client().await;
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                wait_connected(&mut client, other, CONNECT_TIMEOUT).await;
            }
        }
        let peers = client.list_peers().await.unwrap();
        assert_eq!(peers.len(), 2, "daemon {i} knows {peers:?}");
        assert_eq!(client.peer_count().await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_new_host_address_is_announced_and_the_peer_stays_connected() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", |_| {});
    let b = lab.spawn_daemon("h2", "bravo", |_| {});
    let id_b = peer_id(&b).await;
    let mut client = a.client().await;
    let before = wait_connected(&mut client, &id_b, CONNECT_TIMEOUT).await;
    let port = before
        .address
        .as_deref()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    // h2 gets a second address (DHCP on another interface, say).
    lab.run(
        "h2",
        &["ip", "addr", "add", "10.77.0.202/24", "dev", "eth0"],
    );
    let wanted = format!("10.77.0.202:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers = client.list_peers().await.unwrap();
        let peer = peers.iter().find(|p| p.peer_id == id_b);
        if peer.is_some_and(|p| p.addresses.contains(&wanted)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new address never arrived: {peer:?}\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(b.log_text().contains("host addresses changed"));
    wait_connected(&mut client, &id_b, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_daemon_restarted_with_its_identity_is_found_again_at_its_new_port() {
    let lab = Lab::up(2);
    let a = lab.spawn_daemon("h1", "alpha", |_| {});
    let mut b = lab.spawn_daemon("h2", "bravo", |_| {});
    let id_b = peer_id(&b).await;
    let mut client = a.client().await;
    let mut seen = wait_connected(&mut client, &id_b, CONNECT_TIMEOUT).await;
    for round in 1..=3 {
        // The same state dir (peer id) and name, so the same mDNS instance
        // name, at once; a new QUIC port.
        let (status, work) = b.terminate();
        assert!(status.success());
        b = lab.spawn_in("h2", "bravo", work, &[]);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = wait_connected(&mut client, &id_b, CONNECT_TIMEOUT).await;
            if now.address != seen.address {
                eprintln!(
                    "measured: round {round}: found again at {:?} {:?} after the restart",
                    now.address,
                    b.started.elapsed()
                );
                seen = now;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: never found at its new port; still {seen:?}\n{}",
                a.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_peer_that_vanishes_right_after_being_browsed_concerns_only_itself() {
    let lab = Lab::up(2);
    let observer = lab.spawn_daemon("h1", "observer", |_| {});
    let stable = lab.spawn_daemon("h2", "stable", |_| {});
    let id_stable = peer_id(&stable).await;
    let mut watch = observer.client().await;
    watch.subscribe().await.unwrap();
    wait_connected(&mut observer.client().await, &id_stable, CONNECT_TIMEOUT).await;

    // A peer whose record points at a host name without addresses: every
    // browse of it ends in Avahi's resolver timeout (5 s), exactly as for
    // a peer that vanished before it was resolved.
    let ghost = lab.spawn_with_env(
        "h2",
        "ghost",
        &[("LANSPREAD_TEST_MDNS_HOST", "no-such-host.local")],
    );
    // And a real one that exits within a second of being browsed.
    let brief = lab.spawn_daemon("h2", "brief", |_| {});
    let deadline = Instant::now() + Duration::from_secs(10);
    while !brief.log_text().contains("mdns service registered") {
        assert!(Instant::now() < deadline, "brief never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(brief.kill_hard());

    // Past the resolver's timeout, a newcomer is still found: discovery
    // kept running all along.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !observer.log_text().contains("mdns record not resolved") {
        assert!(
            Instant::now() < deadline,
            "the ghost's resolution never failed:\n{}",
            observer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let newcomer = lab.spawn_daemon("h2", "newcomer", |_| {});
    let id_newcomer = peer_id(&newcomer).await;
    wait_connected(&mut observer.client().await, &id_newcomer, CONNECT_TIMEOUT).await;

    let log = observer.log_text();
    assert!(
        !log.contains("mdns discovery failed"),
        "one peer's failed resolution restarted discovery:\n{log}"
    );
    let mut client = observer.client().await;
    let stable_now = wait_connected(&mut client, &id_stable, Duration::ZERO).await;
    assert_eq!(stable_now.state, PeerState::Connected);
    // The stable peer never dropped out meanwhile.
    while let Ok(Ok(event)) =
        tokio::time::timeout(Duration::from_millis(200), watch.next_event()).await
    {
        assert!(
            !matches!(&event.event, PeerEvent::PeerLost { peer_id } if *peer_id == id_stable),
            "the stable peer was lost"
        );
    }
    drop(ghost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn back_to_back_restarts_on_a_loaded_lab_are_discovered_both_ways_within_3_s() {
    let cycles = std::env::var("LANSPREAD_LAB_RESTARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RESTART_CYCLES);
    let lab = Lab::up(4);
    // The load: h4 downloads a game from h3 over and over.
    let source = game::make_game(LOAD_GAME_SIZE);
    let seeder = lab.spawn_daemon("h3", "seeder", game::copy_game(source.path()));
    let leecher = lab.spawn_daemon("h4", "leecher", |_| {});
    game::wait_peers(&leecher, 1).await;
    let downloads = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(download_forever(
        leecher.client().await,
        leecher.games(),
        Arc::clone(&downloads),
    ));

    let observer = lab.spawn_daemon("h1", "observer", |_| {});
    let id_observer = peer_id(&observer).await;
    let mut observer_client = observer.client().await;
    let mut current = lab.spawn_daemon("h2", "restarting", |_| {});
    let mut samples = Vec::new();
    for cycle in 0..=cycles {
        if cycle > 0 {
            // Stop one and start another at once, on the same host.
            let (status, _) = current.terminate();
            assert!(status.success(), "cycle {cycle}: {status}");
            current = lab.spawn_daemon("h2", "restarting", |_| {});
        }
        let id_current = peer_id(&current).await;
        let bound = if cycle == 0 {
            CONNECT_TIMEOUT
        } else {
            RESTART_BOUND
        };
        let started = current.started;
        let remaining = bound.saturating_sub(started.elapsed());
        wait_connected(&mut observer_client, &id_current, remaining).await;
        let remaining = bound.saturating_sub(started.elapsed());
        wait_connected(&mut current.client().await, &id_observer, remaining).await;
        if cycle > 0 {
            samples.push(started.elapsed());
        }
    }
    assert!(!load.is_finished(), "the load stopped: {:?}", load.await);
    load.abort();
    let downloads = downloads.load(Ordering::Relaxed);
    assert!(downloads > 0, "no transfer ran during the restarts");
    samples.sort();
    eprintln!(
        "measured: restart -> connected both ways, {} cycles: median {:?}, max {:?} ({downloads} downloads of {} MiB meanwhile)",
        samples.len(),
        samples[samples.len() / 2],
        samples.last().unwrap(),
        LOAD_GAME_SIZE >> 20
    );
    drop(seeder);
}

/// Downloads the game, deletes it, and again, until aborted; counts the
/// finished downloads.
async fn download_forever(
    mut client: IpcClient,
    games: std::path::PathBuf,
    finished: Arc<AtomicUsize>,
) -> String {
    client.subscribe().await.unwrap();
    loop {
        game::start_download(&mut client).await;
        match game::wait_outcome(&mut client).await {
            PeerEvent::DownloadGameFilesFinished { .. } => {
                finished.fetch_add(1, Ordering::Relaxed);
            }
            other => return format!("download ended with {other:?}"),
        }
        // Installing starts by itself after a download; let it end, then
        // remove the game and wait until the library says so.
        let _ = wait_for_event(&mut client, Duration::from_secs(60), "install end", |e| {
            matches!(
                e,
                PeerEvent::InstallGameFinished { .. } | PeerEvent::InstallGameFailed { .. }
            )
        })
        .await;
        std::fs::remove_dir_all(games.join(GAME)).unwrap();
        wait_for_event(&mut client, Duration::from_secs(30), "game removed", |e| {
            matches!(e, PeerEvent::LibrarySnapshot { games }
                if games.iter().any(|g| g.id.as_str() == GAME && !g.downloaded))
        })
        .await;
    }
}
