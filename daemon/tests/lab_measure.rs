//! Lab measurements that the peers issue reports: time from a daemon's
//! start to `PeerConnected` on another host (median of 10), and the idle
//! CPU and RSS of a daemon with two peers. Printed for the notes, and
//! checked against loose bounds so a regression fails (the product
//! targets: `docs/lab.md#targets`).

mod common;
mod lab_harness;

use std::time::{Duration, Instant};

use common::{wait_for_event, write};
use lab_harness::Lab;
use lanspread_proto::ipc::PeerEvent;

fn game(dir: &std::path::Path) {
    write(&dir.join("openarena/version.ini"), b"1");
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_time_and_idle_cost() {
    const ROUNDS: usize = 10;
    let lab = Lab::up(3);
    let observer = lab.spawn_daemon("h1", "observer", game);
    let mut watch = observer.client().await;
    watch.subscribe().await.unwrap();

    let mut samples = Vec::new();
    for _ in 0..ROUNDS {
        let newcomer = lab.spawn_daemon("h2", "newcomer", game);
        let id = newcomer.client().await.hello().peer_id.clone();
        wait_for_event(
            &mut watch,
            Duration::from_secs(30),
            "PeerConnected",
            |e| matches!(e, PeerEvent::PeerConnected { peer } if peer.peer_id == id),
        )
        .await;
        samples.push(newcomer.started.elapsed());
        drop(newcomer);
    }
    samples.sort();
    let median = samples[ROUNDS / 2];
    eprintln!(
        "measured: start -> PeerConnected on another host: median {median:?}, min {:?}, max {:?} ({ROUNDS} runs)",
        samples[0],
        samples[ROUNDS - 1]
    );
    assert!(median < Duration::from_secs(10), "median {median:?}");

    // Idle: the observer with two connected peers.
    let _b = lab.spawn_daemon("h2", "b", game);
    let _c = lab.spawn_daemon("h3", "c", game);
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer.client().await.peer_count().await.unwrap() != 2 {
        assert!(Instant::now() < deadline, "observer never had two peers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(20);
    let before = cpu_ticks(observer.pid());
    tokio::time::sleep(window).await;
    let ticks = cpu_ticks(observer.pid()) - before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    let cpu_percent = ticks as f64 / hz / window.as_secs_f64() * 100.0;
    let rss = rss_kib(observer.pid());
    eprintln!(
        "measured: idle daemon with 2 peers: {cpu_percent:.2} % CPU over {window:?}, RSS {rss} KiB"
    );
    assert!(cpu_percent < 5.0, "idle CPU {cpu_percent:.2} %");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_throughput_from_one_seeder_on_an_unshaped_link() {
    const SIZE: u64 = 512 * 1024 * 1024;
    let source = tempfile::tempdir().unwrap();
    {
        let mut data = vec![0u8; SIZE as usize];
        blake3::Hasher::new()
            .update(b"throughput")
            .finalize_xof()
            .fill(&mut data);
        write(&source.path().join("openarena/pak0.eti"), &data);
        write(&source.path().join("openarena/version.ini"), b"1");
    }
    let lab = Lab::up(2);
    let seed_dir = source.path().to_owned();
    let _seed = lab.spawn_daemon("h1", "seed", move |games| {
        std::fs::create_dir_all(games.join("openarena")).unwrap();
        for name in ["pak0.eti", "version.ini"] {
            std::fs::copy(
                seed_dir.join("openarena").join(name),
                games.join("openarena").join(name),
            )
            .unwrap();
        }
    });
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    let mut client = leech.client().await;
    common::wait_peer_count(&mut client, 1, Duration::from_secs(30)).await;
    // Hash the seeder's manifest first, so only the transfer is timed.
    let id = lanspread_proto::model::GameId::new("openarena").unwrap();
    let _: lanspread_proto::ipc::GameFilesResult = client
        .call(lanspread_proto::ipc::PeerCommand::GetGame { id: id.clone() })
        .await
        .unwrap();
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    client
        .request(lanspread_proto::ipc::PeerCommand::DownloadGameFiles { id, files: vec![] })
        .await
        .unwrap();
    let finished = lab_harness::game::wait_outcome(&mut events).await;
    let PeerEvent::DownloadGameFilesFinished { bytes, millis, .. } = finished else {
        panic!("download failed: {finished:?}");
    };
    let mib_per_s = bytes as f64 / (1 << 20) as f64 / (millis as f64 / 1000.0);
    eprintln!(
        "measured: one seeder, unshaped lab link: {} MiB in {millis} ms = {mib_per_s:.0} MiB/s",
        bytes >> 20
    );
    let got = std::fs::read(leech.games().join("openarena/pak0.eti")).unwrap();
    let want = std::fs::read(source.path().join("openarena/pak0.eti")).unwrap();
    assert!(got == want, "downloaded bytes differ");
    assert!(mib_per_s > 10.0, "{mib_per_s:.1} MiB/s");
}
