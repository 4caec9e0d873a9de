//! Real-game scale in the lab (`docs/lab.md`): a 150 GiB game (sparse
//! files: this machine cannot store the download) is listed to another
//! host while its seeder still prepares the file list, every line the
//! downloader's daemon writes to a subscriber fits the IPC limit, and a
//! download of it starts, reports progress and is cancelled cleanly.

mod common;
mod lab_harness;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{wait_for_event, write};
use lab_harness::Lab;
use lab_harness::game::{GAME, id, wait_peers};
use lanspread_proto::ipc::{MAX_LINE_BYTES, PeerEvent};
use lanspread_proto::wire::CHUNK_SIZE;

/// 150 GiB in 30 sparse files of 5 GiB.
const FILES: u64 = 30;
const FILE_SIZE: u64 = 5 << 30;

fn sparse_game(games: &Path) {
    let root = games.join(GAME);
    write(&root.join("version.ini"), b"version=1.0\n");
    for i in 0..FILES {
        let path = root.join(format!("data/pak{i:02}.eti"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(FILE_SIZE)
            .unwrap();
    }
}

/// Reads every line a subscriber receives on `socket`, on a thread, until
/// the connection closes; returns (lines, longest line in bytes, the
/// `PreparingGameFiles` events seen).
fn watch_lines(socket: &Path) -> std::thread::JoinHandle<(usize, usize, usize)> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"{\"id\":1,\"command\":{\"type\":\"Subscribe\"}}\n",
    )
    .unwrap();
    std::thread::spawn(move || {
        let (mut lines, mut longest, mut preparing) = (0, 0, 0);
        let mut reader = std::io::BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            lines += 1;
            longest = longest.max(line.len().saturating_sub(1));
            if line.windows(20).any(|w| w == b"\"PreparingGameFiles\"") {
                preparing += 1;
            }
            line.clear();
        }
        (lines, longest, preparing)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_150_gib_game_is_listed_while_its_seeder_prepares_and_its_download_cancels_cleanly() {
    let lab = Lab::up(2);
    let seed = lab.spawn_daemon("h1", "seed", sparse_game);
    // The downloader checks free space first (and must: a 150 GiB download
    // into a smaller disk is refused). This machine has no such room, so
    // its game directory is a sparse 200 GiB ext4 image, mounted inside h2
    // (gone with h2's mount namespace when the lab is torn down).
    let work = tempfile::tempdir().unwrap();
    let (games, image) = (work.path().join("games"), work.path().join("disk.img"));
    std::fs::create_dir_all(&games).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(200 << 30)
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(&image)
        .status()
        .expect("mkfs.ext4 runs");
    assert!(mkfs.success(), "mkfs.ext4 failed");
    let (games_arg, image_arg) = (games.to_str().unwrap(), image.to_str().unwrap());
    lab.run("h2", &["mount", "-o", "loop", image_arg, games_arg]);
    let leech = lab.spawn_in("h2", "leech", work, &[]);
    wait_peers(&leech, 1).await;
    let lines = watch_lines(&leech.socket);

    // `lanspreadctl get` waits for the seeder, reporting its progress.
    let started = Instant::now();
    let get = tokio::task::spawn_blocking({
        let socket = leech.socket.clone();
        move || {
            std::process::Command::new(common::lanspreadctl())
                .args(["--socket".as_ref(), socket.as_os_str()])
                .args(["get", GAME])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&get.stdout),
        String::from_utf8_lossy(&get.stderr),
    );
    assert!(get.status.success(), "get failed:\n{stderr}");
    eprintln!("measured: 150 GiB file list ready after {took:?}");
    assert!(
        stderr.contains("waiting for seed to prepare the file list:"),
        "no progress while the seeder prepared:\n{stderr}"
    );
    let total = FILES * FILE_SIZE + 12;
    assert!(
        stdout.contains(&format!("{} entries", FILES + 2)),
        "{stdout}"
    );
    assert!(stdout.contains("150.0 GiB"), "{stdout}");

    // The seeder reports no game being prepared any more.
    let status = seed.client().await.status().await.unwrap();
    assert!(status.preparing.is_empty(), "{:?}", status.preparing);

    // A download of it starts, reports progress, and cancels cleanly.
    let mut client = leech.client().await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let started = client.download(&id(), vec![]).await.unwrap();
    assert_eq!(started.bytes, total);
    let progress = wait_for_event(&mut events, Duration::from_secs(60), "progress", |e| {
        matches!(e, PeerEvent::DownloadGameFilesProgress { bytes_done, .. } if *bytes_done >= 4 * CHUNK_SIZE)
    })
    .await;
    let PeerEvent::DownloadGameFilesProgress { bytes_total, .. } = progress.event else {
        unreachable!()
    };
    assert_eq!(bytes_total, total);
    client.cancel_download(&id()).await.unwrap();
    wait_for_event(&mut events, Duration::from_secs(30), "the cancel", |e| {
        matches!(e, PeerEvent::DownloadGameFilesCancelled { .. })
    })
    .await;
    let root = leech.games().join(GAME);
    assert!(
        !root.join("version.ini").exists(),
        "a cancelled download claims the game"
    );

    drop((client, events));
    let (status, _work) = leech.terminate();
    assert!(status.success());
    let (count, longest, preparing) = lines.join().unwrap();
    eprintln!(
        "measured: {count} lines to a subscriber, the longest {longest} bytes, {preparing} PreparingGameFiles"
    );
    assert!(longest <= MAX_LINE_BYTES, "a line of {longest} bytes");
    assert!(
        preparing > 0,
        "no PreparingGameFiles event reached the subscriber"
    );
}
