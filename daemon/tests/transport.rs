//! The QUIC transport in-process on loopback: what a server answers, every
//! path it must refuse, and peers that misbehave while a good one is served.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{test_catalog, write};
use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::{
    Availability, CHUNK_SIZE, MAX_REQUEST_BYTES, Request, Response, WIRE_VERSION, WireErrorCode,
};
use lanspreadd::event_sender::EventSender;
use lanspreadd::library::{LibraryIndex, scan_local_library};
use lanspreadd::manifest_id::{ChunkTable, ManifestId};
use lanspreadd::prepare::{Manifests, PrepareEvent, Preparer};
use lanspreadd::serve::ServedLibrary;
use lanspreadd::swarm::{Partial, Swarm};
use lanspreadd::transport::{
    ChunkData, HANDSHAKE_TIMEOUT, PeerClient, QuicServer, ServeContext, ServeEvent, TlsIdentity,
    TransportError,
};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const BIG_FILE: u64 = CHUNK_SIZE * 2 + 12345;

fn id(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn content(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A server on loopback serving openarena (several files, one larger than
/// two chunks, an empty one, nested folders) and quake3 without
/// `version.ini`.
struct Fixture {
    addr: SocketAddr,
    dir: TempDir,
    shutdown: CancellationToken,
    /// The downloads the server serves chunks of.
    swarm: Arc<Swarm>,
    upload_limit: Arc<lanspreadd::transport::RateLimiter>,
}

impl Fixture {
    /// A server whose file lists are prepared (the preparer ran).
    async fn start() -> Self {
        Self::start_with(true).await
    }

    /// A server; with `prepare`, the preparer runs and the fixture waits
    /// until it reported the served game's file list ready.
    async fn start_with(prepare: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        write(&g.join("openarena/version.ini"), b"version=0.8.8\n");
        write(&g.join("openarena/pak0.eti"), &content(BIG_FILE, 1));
        write(&g.join("openarena/maps/dm1.eti"), &content(1000, 2));
        write(&g.join("openarena/empty.txt"), b"");
        write(&g.join("openarena/local/game.exe"), b"installed");
        write(&g.join("openarena/.lanspread.json"), b"{}");
        write(&g.join("quake3/pak0.pk3"), b"no sentinel");
        write(&g.join("unlisted/version.ini"), b"1");
        let secret = dir.path().join("secret.txt");
        write(&secret, b"outside");
        let game_dir = std::fs::canonicalize(g).unwrap();
        let index = Arc::new(Mutex::new(LibraryIndex::default()));
        let (library, _) =
            scan_local_library(&game_dir, &test_catalog(), &mut index.lock().unwrap()).unwrap();
        let served = ServedLibrary::new(Some(game_dir), &library, 7);
        let (_tx, rx) = watch::channel(Arc::new(served));
        // Keep the sender alive for the server's lifetime.
        std::mem::forget(_tx);
        let manifests = Arc::new(Manifests::default());
        let shutdown = CancellationToken::new();
        if prepare {
            let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
            let preparer = Preparer {
                served: rx.clone(),
                index,
                state_dir: dir.path().to_owned(),
                manifests: Arc::clone(&manifests),
                events: EventSender::<PrepareEvent>::new(events_tx),
            };
            tokio::spawn(preparer.run(shutdown.clone()));
            loop {
                let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                    .await
                    .expect("the preparer reports within 10 s")
                    .expect("the preparer runs");
                if matches!(event, PrepareEvent::Ready { ref id } if id.as_str() == "openarena") {
                    break;
                }
            }
            // Keep draining, so the preparer never waits on a full channel.
            tokio::spawn(async move { while events.recv().await.is_some() {} });
        }
        let server =
            QuicServer::bind("127.0.0.1:0".parse().unwrap(), &TlsIdentity::compiled_in()).unwrap();
        let addr = server.local_addr();
        let swarm = Arc::new(Swarm::default());
        let upload_limit: Arc<lanspreadd::transport::RateLimiter> = Default::default();
        let context = Arc::new(ServeContext {
            peer_id: "server-peer".into(),
            library: rx,
            manifests,
            upload_limit: Arc::clone(&upload_limit),
            swarm: Arc::clone(&swarm),
            events: EventSender::<ServeEvent>::new(tokio::sync::mpsc::channel::<ServeEvent>(16).0),
            uploads: Default::default(),
            turns: Default::default(),
            heard: Default::default(),
        });
        tokio::spawn(server.serve(context, shutdown.clone()));
        Self {
            addr,
            dir,
            shutdown,
            swarm,
            upload_limit,
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("openarena")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A server that has not prepared a game's file list answers `GetGame` at
/// once with `Preparing` and its progress: a request never waits on hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_list_not_yet_prepared_is_answered_at_once_with_progress() {
    let fixture = Fixture::start_with(false).await;
    let started = Instant::now();
    let answer = client()
        .request(
            fixture.addr,
            &Request::GetGame {
                id: id("openarena"),
            },
        )
        .await
        .unwrap();
    let Response::Preparing {
        version,
        bytes_done,
        bytes_total,
        ..
    } = answer
    else {
        panic!("expected Preparing, got {answer:?}");
    };
    assert_eq!(version.as_str(), "0.8.8");
    assert_eq!(bytes_done, 0);
    assert_eq!(
        bytes_total,
        BIG_FILE + 1000 + "version=0.8.8\n".len() as u64
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn client() -> PeerClient {
    PeerClient::new(&TlsIdentity::compiled_in()).unwrap()
}

/// The served manifest's digest and numbering (asked with `GetGame`).
async fn served_manifest(client: &PeerClient, addr: SocketAddr) -> (String, ChunkTable) {
    let answer = client
        .request(
            addr,
            &Request::GetGame {
                id: id("openarena"),
            },
        )
        .await
        .unwrap();
    let Response::Game { version, files, .. } = answer else {
        panic!("expected a manifest, got {answer:?}");
    };
    (
        ManifestId::of(&version, &files).to_hex(),
        ChunkTable::new(&files),
    )
}

/// Chunk `index` (or one of `alternatives`) of manifest `manifest`.
async fn chunk(
    client: &PeerClient,
    addr: SocketAddr,
    game: &str,
    (manifest, table): &(String, ChunkTable),
    index: u32,
    alternatives: Vec<u32>,
) -> Result<(u32, Vec<u8>), TransportError> {
    client
        .fetch_chunk(
            addr,
            &id(game),
            manifest,
            index,
            alternatives,
            |c| table.place(c).map(|p| p.length),
            |_| ChunkData::default(),
            Duration::from_secs(10),
        )
        .await
        .map(|(sent, data)| (sent, data.to_vec()))
}

/// A ping as a daemon sends it.
fn ping() -> Request {
    Request::Ping {
        peer_id: "client-peer".into(),
        library_revision: 0,
    }
}

fn refused(result: Result<(u32, Vec<u8>), TransportError>) -> (WireErrorCode, String) {
    match result {
        Err(TransportError::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn refused_code(result: Result<(u32, Vec<u8>), TransportError>) -> WireErrorCode {
    refused(result).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_list_and_manifest_describe_the_served_library() {
    let fixture = Fixture::start().await;
    let client = client();
    let pong = client.request(fixture.addr, &ping()).await.unwrap();
    // The revision is the library's (7) plus what changed in the prepared
    // file lists and the swarm since: it only grows.
    let Response::Pong {
        peer_id,
        wire_version,
        library_revision,
    } = pong
    else {
        panic!("expected a pong, got {pong:?}");
    };
    assert_eq!(
        (peer_id.as_str(), wire_version),
        ("server-peer", WIRE_VERSION)
    );
    assert!(library_revision > 7, "{library_revision}");
    let Response::Games { games } = client
        .request(fixture.addr, &Request::ListGames)
        .await
        .unwrap()
    else {
        panic!("expected games");
    };
    // quake3 has no version.ini and is not announced.
    assert_eq!(games.len(), 1);
    assert_eq!(games[0].id, id("openarena"));
    assert_eq!(games[0].version.as_str(), "0.8.8");
    assert!(games[0].complete);
    assert!(
        games[0].manifest.is_some(),
        "a prepared game announces its digest"
    );

    let answer = client
        .request(
            fixture.addr,
            &Request::GetGame {
                id: id("openarena"),
            },
        )
        .await
        .unwrap();
    let Response::Game { files, version, .. } = answer else {
        panic!("expected a manifest, got {answer:?}");
    };
    assert_eq!(version.as_str(), "0.8.8");
    let paths: Vec<_> = files.iter().map(|f| f.relative_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "empty.txt",
            "maps",
            "maps/dm1.eti",
            "pak0.eti",
            "version.ini"
        ]
    );
    let pak = files
        .iter()
        .find(|f| f.relative_path == "pak0.eti")
        .unwrap();
    assert_eq!(pak.size, BIG_FILE);
    let data = content(BIG_FILE, 1);
    let expected: Vec<String> = data
        .chunks(CHUNK_SIZE as usize)
        .map(|c| blake3::hash(c).to_hex().to_string())
        .collect();
    assert_eq!(pak.chunk_hashes, expected);
    let empty = files
        .iter()
        .find(|f| f.relative_path == "empty.txt")
        .unwrap();
    assert!(empty.chunk_hashes.is_empty());
    // The connection is reused: many requests, one handshake's worth of time.
    let started = Instant::now();
    for _ in 0..50 {
        client.request(fixture.addr, &ping()).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The manifest numbers its chunks file by file: maps/dm1.eti is chunk 0,
/// pak0.eti chunks 1 to 3, version.ini chunk 4 (directories and empty
/// files have none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_arrive_byte_exact_and_numbers_past_the_end_are_refused() {
    let fixture = Fixture::start().await;
    let client = client();
    let served = served_manifest(&client, fixture.addr).await;
    assert_eq!(served.1.len(), 5);
    let data = content(BIG_FILE, 1);
    let (sent, last) = chunk(&client, fixture.addr, "openarena", &served, 3, vec![])
        .await
        .unwrap();
    assert_eq!(
        (sent, last.as_slice()),
        (3, &data[(CHUNK_SIZE * 2) as usize..])
    );
    let (_, first) = chunk(&client, fixture.addr, "openarena", &served, 1, vec![])
        .await
        .unwrap();
    assert_eq!(first, &data[..CHUNK_SIZE as usize]);
    let (_, nested) = chunk(&client, fixture.addr, "openarena", &served, 0, vec![])
        .await
        .unwrap();
    assert_eq!(nested, content(1000, 2));
    for index in [5, 6, u32::MAX] {
        let code =
            refused_code(chunk(&client, fixture.addr, "openarena", &served, index, vec![]).await);
        assert_eq!(code, WireErrorCode::OutOfRange, "{index}");
    }
    // Still serving after all those refusals.
    client.request(fixture.addr, &ping()).await.unwrap();
}

/// Delta updates: a range of a chunk arrives byte-exact, a range outside
/// the chunk is refused; block signatures describe exactly the chunk's
/// blocks; asking for too many is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_block_signatures_describe_the_served_bytes() {
    use lanspread_proto::wire::{ChunkRange, MAX_SIGNATURE_CHUNKS, SIGNATURE_BLOCK};
    let fixture = Fixture::start().await;
    let client = client();
    let served = served_manifest(&client, fixture.addr).await;
    let data = content(BIG_FILE, 1);
    let range = ChunkRange {
        offset: 12_345,
        length: 70_000,
    };
    // Chunk 2 is the big file's second chunk.
    let got = client
        .fetch_range(
            fixture.addr,
            &id("openarena"),
            &served.0,
            2,
            range,
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .to_vec();
    let start = (CHUNK_SIZE + range.offset) as usize;
    assert_eq!(got, &data[start..start + range.length as usize]);
    for bad in [
        ChunkRange {
            offset: CHUNK_SIZE - 1,
            length: 2,
        },
        ChunkRange {
            offset: 0,
            length: 0,
        },
        ChunkRange {
            offset: u64::MAX,
            length: 1,
        },
    ] {
        let result = client
            .fetch_range(
                fixture.addr,
                &id("openarena"),
                &served.0,
                2,
                bad,
                Duration::from_secs(10),
            )
            .await;
        assert!(
            matches!(
                result,
                Err(TransportError::Refused {
                    code: WireErrorCode::OutOfRange,
                    ..
                })
            ),
            "{bad:?}: {result:?}"
        );
    }
    let chunks = client
        .fetch_signatures(fixture.addr, &id("openarena"), &served.0, 2, 2)
        .await
        .unwrap();
    for (i, hex) in chunks.iter().enumerate() {
        let place = served.1.place(2 + i as u32).unwrap();
        let bytes = &data[place.offset as usize..(place.offset + place.length) as usize];
        let blocks = place.length.div_ceil(SIGNATURE_BLOCK) as usize;
        let signatures = lanspreadd::signature::decode(hex, blocks).expect("one per block");
        assert_eq!(
            signatures,
            lanspreadd::signature::of_chunk(bytes),
            "chunk {}",
            2 + i
        );
    }
    for count in [0, MAX_SIGNATURE_CHUNKS + 1] {
        let result = client
            .fetch_signatures(fixture.addr, &id("openarena"), &served.0, 0, count)
            .await;
        assert!(
            matches!(
                result,
                Err(TransportError::Refused {
                    code: WireErrorCode::BadRequest,
                    ..
                })
            ),
            "{count}: {result:?}"
        );
    }
    let past = client
        .fetch_signatures(fixture.addr, &id("openarena"), &served.0, 4, 2)
        .await;
    assert!(
        matches!(
            past,
            Err(TransportError::Refused {
                code: WireErrorCode::OutOfRange,
                ..
            })
        ),
        "{past:?}"
    );
}

/// Asked for a chunk with alternatives, a complete holder sends the one it
/// sent least often (the asked one among equals): downloaders asking at
/// the same moment get different chunks. One just sent is on its way to
/// a peer that will pass it on: not sent again within the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_holder_sends_the_least_sent_of_the_alternatives() {
    let fixture = Fixture::start().await;
    let client = client();
    let served = served_manifest(&client, fixture.addr).await;
    let data = content(BIG_FILE, 1);
    let fetch = || chunk(&client, fixture.addr, "openarena", &served, 2, vec![1, 3]);
    let mut sent = Vec::new();
    for round in 0..4 {
        if round == 3 {
            // All three were sent within the grace: busy, then sent again.
            let refused = fetch().await;
            assert!(
                matches!(
                    refused,
                    Err(TransportError::Refused {
                        code: WireErrorCode::Busy,
                        ..
                    })
                ),
                "{refused:?}"
            );
            tokio::time::sleep(lanspreadd::transport::ON_ITS_WAY_GRACE).await;
        }
        let (index, bytes) = fetch().await.unwrap();
        let place = served.1.place(index).unwrap();
        let start = place.offset as usize;
        assert_eq!(
            bytes,
            &data[start..start + place.length as usize],
            "chunk {index}"
        );
        sent.push(index);
    }
    assert_eq!(sent, [2, 1, 3, 2], "each once before any twice");
    // A chunk that was not asked for is never accepted.
    let lying_length = |_| Some(1);
    let result = client
        .fetch_chunk(
            fixture.addr,
            &id("openarena"),
            &served.0,
            1,
            vec![],
            lying_length,
            |_| ChunkData::default(),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(result, Err(TransportError::Protocol { .. })),
        "{result:?}"
    );
}

/// Chunks are named by the manifest's digest: another digest is refused
/// with its stable code and the version the peer holds; so is a chunk of a
/// file that changed since its hashes were taken (the peer does not send
/// bytes under a manifest they no longer match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_manifest_or_a_changed_file_is_refused_as_unknown_manifest() {
    let fixture = Fixture::start().await;
    let client = client();
    let served = served_manifest(&client, fixture.addr).await;
    let other = ("00".repeat(32), served.1.clone());
    let (code, message) =
        refused(chunk(&client, fixture.addr, "openarena", &other, 1, vec![]).await);
    assert_eq!(code, WireErrorCode::UnknownManifest);
    assert!(message.contains("0.8.8"), "{message}");
    let garbled = ("not a digest".to_owned(), served.1.clone());
    let code = refused_code(chunk(&client, fixture.addr, "openarena", &garbled, 1, vec![]).await);
    assert_eq!(code, WireErrorCode::BadRequest);
    // pak0.eti is rewritten in place (same size): its chunks are refused.
    std::thread::sleep(Duration::from_millis(20));
    write(&fixture.root().join("pak0.eti"), &content(BIG_FILE, 9));
    let code = refused_code(chunk(&client, fixture.addr, "openarena", &served, 1, vec![]).await);
    assert_eq!(code, WireErrorCode::UnknownManifest);
    // Other files still serve.
    assert!(
        chunk(&client, fixture.addr, "openarena", &served, 0, vec![])
            .await
            .is_ok()
    );
}

/// A complete holder answers `Subscribe` with every chunk the asker lacks,
/// then ends the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_holder_says_it_holds_every_chunk_the_asker_lacks() {
    let fixture = Fixture::start().await;
    let client = client();
    let (manifest, table) = served_manifest(&client, fixture.addr).await;
    let mut subscription = client
        .subscribe(fixture.addr, &id("openarena"), &manifest, "05".into())
        .await
        .unwrap();
    let line = subscription.next().await.unwrap();
    // We hold chunks 0 and 2 (bits 0 and 2 of 0x05): told about 1, 3, 4.
    assert_eq!(
        line,
        Some(Availability::Have {
            chunks: "1a".into(),
            complete: true
        }),
        "{table:?}"
    );
    assert_eq!(subscription.next().await.unwrap(), None);
    let mut refused = client
        .subscribe(
            fixture.addr,
            &id("openarena"),
            &"00".repeat(32),
            "00".into(),
        )
        .await
        .unwrap();
    assert!(matches!(
        refused.next().await.unwrap(),
        Some(Availability::Error(ref e)) if e.code == WireErrorCode::UnknownManifest
    ));
}

/// A download in progress tells a subscriber each chunk it verifies; once
/// finished and handed over to the complete game, it ends the stream as a
/// complete holder does (the chunks not told yet, `complete: true`), and a
/// chunk stream running at that moment goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_download_ends_its_subscriptions_as_a_complete_holder_and_its_sends_go_on() {
    let fixture = Fixture::start().await;
    let root = fixture.dir.path().join("downloading");
    let data = content(CHUNK_SIZE * 2 + 10, 9);
    write(&root.join("big.bin"), &data);
    let files = vec![GameFileDescription {
        relative_path: "big.bin".into(),
        is_dir: false,
        size: data.len() as u64,
        chunk_hashes: data
            .chunks(CHUNK_SIZE as usize)
            .map(|c| blake3::hash(c).to_hex().to_string())
            .collect(),
    }];
    let game = id("downloading");
    let partial = Partial::new(game.clone(), Version::new("2"), Arc::new(files), root);
    fixture.swarm.register(Arc::clone(&partial));
    partial.verified([0]);
    let manifest = partial.manifest.to_hex();
    let client = client();
    let mut subscription = client
        .subscribe(fixture.addr, &game, &manifest, String::new())
        .await
        .unwrap();
    let first = subscription.next().await.unwrap();
    assert_eq!(
        first,
        Some(Availability::Have {
            chunks: "01".into(),
            complete: false
        })
    );
    partial.verified([1]);
    let news = subscription.next().await.unwrap();
    assert_eq!(news, Some(Availability::More { chunks: vec![1] }));
    // A send of chunk 1, slowed to take about a second, runs while the
    // download finishes and is handed over.
    fixture.upload_limit.set_rate(4 * 1024 * 1024);
    let table = ChunkTable::new(&partial.files);
    let send = {
        let (sender, addr, manifest) = (self::client(), fixture.addr, manifest.clone());
        tokio::spawn(async move {
            chunk(
                &sender,
                addr,
                "downloading",
                &(manifest, table),
                1,
                Vec::new(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    partial.verified([2]);
    partial.finish();
    fixture.swarm.retire_finished(&game);
    let mut lines = Vec::new();
    while let Some(line) = subscription.next().await.unwrap() {
        lines.push(line);
    }
    // The last line says it is complete, with the chunks not told yet:
    // chunk 2, unless a `More` told of it just before.
    let Some(Availability::Have {
        chunks,
        complete: true,
    }) = lines.pop()
    else {
        panic!("the stream ends as a complete holder's would: {lines:?}");
    };
    let told: Vec<u32> = lines
        .iter()
        .flat_map(|line| match line {
            Availability::More { chunks } => chunks.clone(),
            other => panic!("only news before the end: {other:?}"),
        })
        .collect();
    let expected = if told == [2] { "00" } else { "04" };
    assert_eq!(
        (chunks.as_str(), told.len() <= 1),
        (expected, true),
        "{told:?}"
    );
    let (sent, bytes) = send.await.unwrap().expect("the send running goes on");
    assert_eq!(sent, 1);
    assert!(
        bytes == data[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize],
        "the chunk's bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_files_are_opened_without_following_links_and_unserved_games_are_refused() {
    let fixture = Fixture::start().await;
    let client = client();
    let served = served_manifest(&client, fixture.addr).await;
    // A served file replaced by a symlink that leaves the root.
    let dm1 = fixture.root().join("maps/dm1.eti");
    std::fs::remove_file(&dm1).unwrap();
    std::os::unix::fs::symlink(fixture.dir.path().join("secret.txt"), &dm1).unwrap();
    let code = refused_code(chunk(&client, fixture.addr, "openarena", &served, 0, vec![]).await);
    assert_eq!(code, WireErrorCode::ForbiddenPath);
    // Uncataloged ids and roots without version.ini are not served.
    for game in ["unlisted", "quake3", "teeworlds"] {
        let code = refused_code(chunk(&client, fixture.addr, game, &served, 0, vec![]).await);
        assert_eq!(code, WireErrorCode::UnknownManifest, "{game}");
        let answer = client
            .request(fixture.addr, &Request::GetGame { id: id(game) })
            .await
            .unwrap();
        assert!(
            matches!(answer, Response::Error(ref e) if e.code == WireErrorCode::UnknownGame),
            "{game}: {answer:?}"
        );
    }
    client.request(fixture.addr, &ping()).await.unwrap();
}

/// A raw s2n-quic client, for requests `PeerClient` would never send.
mod raw {
    use super::*;
    use s2n_quic::Client;
    use s2n_quic::client::Connect;

    pub async fn connect(addr: SocketAddr, alpn: &[u8]) -> Result<s2n_quic::Connection, String> {
        let cert = include_str!("../../certs/cert.pem");
        let tls = s2n_quic::provider::tls::default::Client::builder()
            .with_empty_trust_store()
            .unwrap()
            .with_certificate(cert)
            .unwrap()
            .with_application_protocols([alpn])
            .unwrap()
            .build()
            .unwrap();
        let client = Client::builder()
            .with_tls(tls)
            .unwrap()
            .with_io("0.0.0.0:0")
            .unwrap()
            .start()
            .unwrap();
        let connect = Connect::new(addr).with_server_name("lanspread");
        let connection = client.connect(connect).await.map_err(|e| e.to_string())?;
        // The endpoint must outlive the connection in this test.
        std::mem::forget(client);
        Ok(connection)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_garbled_request_costs_only_itself() {
    let fixture = Fixture::start().await;
    let mut connection = raw::connect(fixture.addr, lanspread_proto::wire::ALPN)
        .await
        .unwrap();
    for body in [
        vec![b'x'; MAX_REQUEST_BYTES + 10],
        b"{not json".to_vec(),
        br#"{"type":"GetGame","id":"../x"}"#.to_vec(),
    ] {
        let mut stream = connection.open_bidirectional_stream().await.unwrap();
        // The server may answer before all of an oversized body was sent.
        let _ = stream.send(Bytes::from(body)).await;
        let _ = stream.finish();
        let mut answer = Vec::new();
        while let Ok(Some(bytes)) = stream.receive().await {
            answer.extend_from_slice(&bytes);
        }
        let response: Response = serde_json::from_slice(&answer).unwrap();
        assert!(
            matches!(response, Response::Error(ref e) if e.code == WireErrorCode::BadRequest),
            "{response:?}"
        );
    }
    client().request(fixture.addr, &ping()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_alpn_fails_fast_and_the_server_lives_on() {
    let fixture = Fixture::start().await;
    let wrong = PeerClient::with_alpn(&TlsIdentity::compiled_in(), b"h3").unwrap();
    let started = Instant::now();
    let result = wrong.request(fixture.addr, &ping()).await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    client().request(fixture.addr, &ping()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_many_streams_and_never_reads_does_not_starve_others() {
    let fixture = Fixture::start().await;
    let mut hog = raw::connect(fixture.addr, lanspread_proto::wire::ALPN)
        .await
        .unwrap();
    let good = client();
    let served = served_manifest(&good, fixture.addr).await;
    let mut stalled = Vec::new();
    for _ in 0..32 {
        let mut stream = hog.open_bidirectional_stream().await.unwrap();
        let request = Request::GetChunk {
            id: id("openarena"),
            manifest: served.0.clone(),
            chunk: 1,
            alternatives: vec![],
            range: None,
        };
        stream
            .send(Bytes::from(serde_json::to_vec(&request).unwrap()))
            .await
            .unwrap();
        stream.finish().unwrap();
        stalled.push(stream); // never read
    }
    let data = content(BIG_FILE, 1);
    for round in 0..3 {
        if round > 0 {
            // Chunk 2 was just sent: past the grace it is sent again.
            tokio::time::sleep(lanspreadd::transport::ON_ITS_WAY_GRACE).await;
        }
        let started = Instant::now();
        let (_, got) = chunk(&good, fixture.addr, "openarena", &served, 2, vec![])
            .await
            .unwrap();
        assert_eq!(got, &data[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        good.request(fixture.addr, &ping()).await.unwrap();
    }
    drop(stalled);
}
