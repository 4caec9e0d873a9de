//! A hostile peer, in the test suite (not the product): it speaks the wire
//! protocol over real QUIC and lies — bad paths, sizes that disagree with
//! the data, hashes that do not match, a manifest of a million entries, a
//! stream that stalls forever, a version string of 1 MB. The downloading
//! daemon must stay healthy, write nothing outside its game directory,
//! and name the bad peer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{ErrorCode, PeerEvent};
use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::{
    AnnouncedGame, Availability, CHUNK_SIZE, DataHeader, Request, Response, WIRE_VERSION,
};
use lanspreadd::discovery::Announcement;

const LIAR_ID: &str = "11111111111111111111111111111111";

/// How the fake peer lies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    PathWithDotDot,
    AbsolutePath,
    NameWithNul,
    NameWithBackslashes,
    MillionEntries,
    WrongHashes,
    WrongLength,
    Truncated,
    Stall,
    HugeVersion,
    /// Sends a chunk it was not asked for.
    WrongChunk,
    /// Answers `Subscribe` with a set that is not one.
    BadAvailability,
}

fn hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn file(path: &str, data: &[u8]) -> GameFileDescription {
    GameFileDescription {
        relative_path: path.into(),
        is_dir: false,
        size: data.len() as u64,
        chunk_hashes: data.chunks(CHUNK_SIZE as usize).map(hash).collect(),
    }
}

const PAYLOAD: &[u8] = b"honest looking payload";
const SENTINEL: &[u8] = b"version=6.6.6\n";

fn manifest(lie: Lie) -> Vec<GameFileDescription> {
    let mut files = vec![file("pak0.eti", PAYLOAD), file("version.ini", SENTINEL)];
    match lie {
        Lie::PathWithDotDot => files.push(file("../escape.txt", b"x")),
        Lie::AbsolutePath => files.push(file("/tmp/lanspread-hostile-abs", b"x")),
        Lie::NameWithNul => files.push(file("a\0b", b"x")),
        Lie::NameWithBackslashes => files.push(file("..\\..\\escape.txt", b"x")),
        Lie::MillionEntries => files.extend((0..1_000_000).map(|i| GameFileDescription {
            relative_path: format!("f/{i}"),
            is_dir: false,
            size: 0,
            chunk_hashes: vec![],
        })),
        _ => {}
    }
    files
}

/// Serves the lies until the test ends.
async fn liar(lie: Lie) -> SocketAddr {
    let tls = s2n_quic::provider::tls::default::Server::builder()
        .with_certificate(
            include_str!("../../certs/cert.pem"),
            include_str!("../../certs/key.pem"),
        )
        .unwrap()
        .with_application_protocols([lanspread_proto::wire::ALPN])
        .unwrap()
        .build()
        .unwrap();
    let mut server = s2n_quic::Server::builder()
        .with_tls(tls)
        .unwrap()
        .with_io("127.0.0.1:0")
        .unwrap()
        .start()
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(mut connection) = server.accept().await {
            tokio::spawn(async move {
                while let Ok(Some(mut stream)) = connection.accept_bidirectional_stream().await {
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        while let Ok(Some(bytes)) = stream.receive().await {
                            request.extend_from_slice(&bytes);
                        }
                        let Ok(request) = serde_json::from_slice::<Request>(&request) else {
                            return;
                        };
                        let json = |v: &Response| Bytes::from(serde_json::to_vec(v).unwrap());
                        let header = |h: &DataHeader| {
                            let mut line = serde_json::to_vec(h).unwrap();
                            line.push(b'\n');
                            Bytes::from(line)
                        };
                        let version = if lie == Lie::HugeVersion {
                            "9".repeat(1 << 20)
                        } else {
                            "6.6.6".into()
                        };
                        match request {
                            Request::Ping { .. } => {
                                let _ = stream
                                    .send(json(&Response::Pong {
                                        peer_id: LIAR_ID.into(),
                                        wire_version: WIRE_VERSION,
                                        library_revision: 1,
                                    }))
                                    .await;
                            }
                            Request::ListGames => {
                                let _ = stream
                                    .send(json(&Response::Games {
                                        games: vec![AnnouncedGame {
                                            id: GameId::new("openarena").unwrap(),
                                            version: Version::new(version),
                                            size: 1,
                                            manifest: None,
                                            complete: true,
                                        }],
                                    }))
                                    .await;
                            }
                            Request::GetGame { id } => {
                                let _ = stream
                                    .send(json(&Response::Game {
                                        id,
                                        version: Version::new("6.6.6"),
                                        files: manifest(lie),
                                    }))
                                    .await;
                            }
                            Request::Subscribe { .. } => {
                                let line = if lie == Lie::BadAvailability {
                                    Availability::Have {
                                        chunks: "not hex".into(),
                                        complete: true,
                                    }
                                } else {
                                    Availability::Have {
                                        chunks: "03".into(),
                                        complete: true,
                                    }
                                };
                                let mut bytes = serde_json::to_vec(&line).unwrap();
                                bytes.push(b'\n');
                                let _ = stream.send(Bytes::from(bytes)).await;
                            }
                            Request::GetSignatures { first, count, .. } => {
                                // Signatures that are not: the asker
                                // leaves those chunks to the transfer.
                                let _ = stream
                                    .send(json(&Response::Signatures {
                                        first,
                                        chunks: vec!["zz".into(); count as usize],
                                    }))
                                    .await;
                            }
                            Request::GetChunk { chunk, .. } => {
                                // Chunk 0 is pak0.eti, chunk 1 version.ini.
                                let real: &[u8] = if chunk == 1 { SENTINEL } else { PAYLOAD };
                                let length = real.len() as u64;
                                match lie {
                                    Lie::Stall => {
                                        tokio::time::sleep(Duration::from_secs(3600)).await;
                                    }
                                    Lie::WrongLength => {
                                        let _ = stream
                                            .send(header(&DataHeader::Data {
                                                chunk,
                                                length: length + 5,
                                            }))
                                            .await;
                                        let _ = stream
                                            .send(Bytes::from(vec![0u8; length as usize + 5]))
                                            .await;
                                    }
                                    Lie::Truncated => {
                                        let _ = stream
                                            .send(header(&DataHeader::Data { chunk, length }))
                                            .await;
                                        let _ = stream
                                            .send(Bytes::copy_from_slice(&real[..real.len() / 2]))
                                            .await;
                                    }
                                    Lie::WrongHashes => {
                                        let _ = stream
                                            .send(header(&DataHeader::Data { chunk, length }))
                                            .await;
                                        let _ = stream
                                            .send(Bytes::from(vec![b'!'; length as usize]))
                                            .await;
                                    }
                                    Lie::WrongChunk => {
                                        let _ = stream
                                            .send(header(&DataHeader::Data {
                                                chunk: chunk + 7,
                                                length,
                                            }))
                                            .await;
                                        let _ = stream.send(Bytes::copy_from_slice(real)).await;
                                    }
                                    _ => {
                                        let _ = stream
                                            .send(header(&DataHeader::Data { chunk, length }))
                                            .await;
                                        let _ = stream.send(Bytes::copy_from_slice(real)).await;
                                    }
                                }
                            }
                        }
                        let _ = stream.finish();
                    });
                }
            });
        }
    });
    addr
}

/// A daemon that knows only the liar, waiting until it is connected.
async fn victim(lie: Lie) -> (TestDaemon, IpcClient) {
    let lan = MemoryLan::default();
    let addr = liar(lie).await;
    lan.announce(Announcement {
        peer_id: LIAR_ID.into(),
        name: "liar".into(),
        listen: addr,
    });
    let daemon = TestDaemon::start_on(&lan, |_| {}).await;
    let mut client = daemon.client().await;
    wait_peer_count(&mut client, 1, Duration::from_secs(15)).await;
    (daemon, client)
}

fn assert_nothing_escaped(daemon: &TestDaemon) {
    let games = daemon.game_dir.path();
    assert!(!games.parent().unwrap().join("escape.txt").exists());
    assert!(!std::path::Path::new("/tmp/lanspread-hostile-abs").exists());
    assert!(
        !games.join("openarena/version.ini").exists(),
        "a lie was committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_manifests_are_refused_naming_the_peer() {
    for lie in [
        Lie::PathWithDotDot,
        Lie::AbsolutePath,
        Lie::NameWithNul,
        Lie::NameWithBackslashes,
        Lie::MillionEntries,
    ] {
        let (daemon, mut client) = victim(lie).await;
        let err = client
            .get_game(&GameId::new("openarena").unwrap())
            .await
            .unwrap_err();
        let refusal = err
            .daemon_error()
            .unwrap_or_else(|| panic!("{lie:?}: {err}"));
        assert_eq!(refusal.code, ErrorCode::NoPeers, "{lie:?}");
        assert!(
            refusal.message.contains(LIAR_ID),
            "{lie:?}: the liar is not named: {}",
            refusal.message
        );
        assert_nothing_escaped(&daemon);
        assert!(client.status().await.is_ok(), "{lie:?}: daemon unhealthy");
        daemon.stop().await.0.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_data_fails_the_download_naming_the_peer_and_commits_nothing() {
    for lie in [
        Lie::WrongHashes,
        Lie::WrongLength,
        Lie::Truncated,
        Lie::WrongChunk,
        Lie::BadAvailability,
    ] {
        let (daemon, mut client) = victim(lie).await;
        let mut events = daemon.client().await;
        events.subscribe().await.unwrap();
        client
            .get_game(&GameId::new("openarena").unwrap())
            .await
            .unwrap();
        client
            .download(&GameId::new("openarena").unwrap(), vec![])
            .await
            .unwrap();
        let ended = wait_for_event(
            &mut events,
            Duration::from_secs(60),
            "the failed download",
            |e| {
                matches!(
                    e,
                    PeerEvent::DownloadGameFilesFailed { .. }
                        | PeerEvent::DownloadGameFilesFinished { .. }
                )
            },
        )
        .await;
        let PeerEvent::DownloadGameFilesFailed { reason, .. } = ended.event else {
            panic!("{lie:?}: a lying peer's download finished");
        };
        assert!(
            reason.contains(LIAR_ID),
            "{lie:?}: the liar is not named: {reason}"
        );
        assert_nothing_escaped(&daemon);
        let root = daemon.game_dir.path().join("openarena");
        assert!(
            !root.join(".version.ini.tmp").exists()
                && !root.join(".version.ini.discarded").exists()
        );
        assert!(client.status().await.is_ok(), "{lie:?}: daemon unhealthy");
        daemon.stop().await.0.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_keeps_the_daemon_responsive_and_cancellable() {
    let (daemon, mut client) = victim(Lie::Stall).await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    let id = GameId::new("openarena").unwrap();
    client.get_game(&id).await.unwrap();
    client.download(&id, vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    assert!(client.status().await.is_ok());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "IPC slowed by a stalled peer"
    );
    client.cancel_download(&id).await.unwrap();
    wait_for_event(&mut events, Duration::from_secs(10), "the cancel", |e| {
        matches!(e, PeerEvent::DownloadGameFilesCancelled { .. })
    })
    .await;
    assert_nothing_escaped(&daemon);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_version_string_is_ignored_and_clients_stay_readable() {
    let lan = MemoryLan::default();
    let addr = liar(Lie::HugeVersion).await;
    lan.announce(Announcement {
        peer_id: LIAR_ID.into(),
        name: "liar".into(),
        listen: addr,
    });
    let daemon = TestDaemon::start_on(&lan, |_| {}).await;
    let mut client = daemon.client().await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    wait_for_event(
        &mut events,
        Duration::from_secs(15),
        "the liar's connection",
        |e| matches!(e, PeerEvent::PeerConnected { .. }),
    )
    .await;
    // Its only entry was dropped; the library and the event stream stay
    // small enough for any client.
    let games = client.list_games().await.unwrap();
    assert!(games.is_empty(), "{games:?}");
    assert!(client.status().await.is_ok());
    daemon.stop().await.0.unwrap();
}
