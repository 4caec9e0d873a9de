//! Serving never reads outside a game root, even while someone who can
//! write the game directory swaps a served file or folder for a symlink to
//! outside between the server's checks and its open (issue 14).

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{test_catalog, write};
use lanspread_proto::model::GameId;
use lanspread_proto::wire::WireErrorCode;
use lanspreadd::library::{LibraryIndex, scan_local_library};
use lanspreadd::serve::ServedLibrary;

const INSIDE: &[u8] = b"the served map";
const SECRET: &[u8] = b"a file outside the game root";

/// Swaps `maps/dm1.eti` for a symlink to an outside file and back, and the
/// whole `maps` folder for a symlink to an outside folder and back, until
/// `stop` is set. Returns how many swaps it made.
fn swap_until(root: &Path, outside: &Path, stop: &AtomicBool) -> u64 {
    let maps = root.join("maps");
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        let link = maps.join(".link");
        std::os::unix::fs::symlink(outside.join("dm1.eti"), &link).unwrap();
        std::fs::rename(&link, maps.join("dm1.eti")).unwrap();
        let real = maps.join(".real");
        std::fs::write(&real, INSIDE).unwrap();
        std::fs::rename(&real, maps.join("dm1.eti")).unwrap();
        let parked = root.join("maps.parked");
        std::fs::rename(&maps, &parked).unwrap();
        std::os::unix::fs::symlink(outside.join("maps"), &maps).unwrap();
        std::fs::remove_file(&maps).unwrap();
        std::fs::rename(&parked, &maps).unwrap();
        swaps += 2;
    }
    swaps
}

#[test]
fn a_symlink_swapped_in_during_serving_is_refused_and_nothing_outside_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let games = dir.path().join("games");
    let root = games.join("openarena");
    let outside = dir.path().join("outside");
    write(&root.join("version.ini"), b"1");
    write(&root.join("maps/dm1.eti"), INSIDE);
    write(&outside.join("dm1.eti"), SECRET);
    write(&outside.join("maps/dm1.eti"), SECRET);
    let games = std::fs::canonicalize(&games).unwrap();
    let (library, _) =
        scan_local_library(&games, &test_catalog(), &mut LibraryIndex::default()).unwrap();
    let served = ServedLibrary::new(Some(games.clone()), &library, 1);
    let id = GameId::new("openarena").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (root.clone(), outside.clone(), Arc::clone(&stop));
        std::thread::spawn(move || swap_until(&root, &outside, &stop))
    };
    let (mut read, mut refused, mut gone) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) || read == 0 || refused == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the race never ran"
        );
        match served.open_file(&id, "maps/dm1.eti") {
            Ok(mut file) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).unwrap();
                assert_ne!(bytes, SECRET, "a file outside the game root was served");
                // The swapper may have just recreated it (empty so far).
                assert!(INSIDE.starts_with(&bytes), "{bytes:?}");
                read += 1;
            }
            Err(err) if err.code == WireErrorCode::ForbiddenPath => {
                assert!(
                    err.message.contains("is a symlink")
                        || err.message.contains("replaced while it was opened"),
                    "{}",
                    err.message
                );
                refused += 1;
            }
            Err(err) if err.code == WireErrorCode::NotFound => gone += 1,
            Err(err) => panic!("unexpected refusal: {err:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "measured: {swaps} swaps; {read} opens read the game's file, {refused} were refused (symlink), {gone} found it gone"
    );
}
