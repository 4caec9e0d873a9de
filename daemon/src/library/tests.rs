use std::fs;

use super::*;

fn catalog() -> Catalog {
    Catalog::parse(
        r#"[{"id":"openarena","name":"OpenArena"},{"id":"quake3","name":"Quake III"},
            {"id":"ut2004","name":"UT2004"}]"#,
        "test",
    )
    .unwrap()
}

fn id(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn cataloged_roots_are_listed_with_version_flags_and_served_files() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path();
    write(&g.join("openarena/version.ini"), b"version=0.8.8\n");
    write(&g.join("openarena/pak0.eti"), &[1; 1000]);
    write(&g.join("openarena/maps/dm1.eti"), &[2; 500]);
    fs::create_dir_all(g.join("openarena/maps/empty")).unwrap();
    // Reserved and installed entries are not served.
    write(&g.join("openarena/local/game.exe"), &[3; 10_000]);
    write(&g.join("openarena/.lanspread.json"), b"{}");
    write(&g.join("openarena/.local.backup/x"), b"x");
    write(&g.join("openarena/.version.ini.tmp"), b"1");
    // A nested folder named local is ordinary content.
    write(&g.join("openarena/maps/local/readme.txt"), b"hi");
    // Not downloaded: no version.ini.
    write(&g.join("quake3/pak0.pk3"), &[4; 10]);
    // Not in the catalog, not a valid id, a plain file.
    write(&g.join("unknown-game/version.ini"), b"1");
    write(&g.join("Bad Name/version.ini"), b"1");
    write(&g.join("stray.txt"), b"x");

    let (library, stats) = scan_local_library(g, &catalog(), &mut LibraryIndex::default()).unwrap();
    assert_eq!(
        library.games.keys().cloned().collect::<Vec<_>>(),
        vec![id("openarena"), id("quake3")]
    );
    let oa = &library.games[&id("openarena")];
    assert_eq!(oa.name, "OpenArena");
    assert_eq!(oa.version.as_ref().unwrap().as_str(), "0.8.8");
    assert!(oa.downloaded && oa.installed);
    let paths: Vec<_> = oa.files.iter().map(|f| f.relative_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "maps",
            "maps/dm1.eti",
            "maps/empty",
            "maps/local",
            "maps/local/readme.txt",
            "pak0.eti",
            "version.ini"
        ]
    );
    assert_eq!(oa.size, 1000 + 500 + 2 + 14);
    let q3 = &library.games[&id("quake3")];
    assert!(!q3.downloaded && !q3.installed);
    assert_eq!(q3.version, None);
    assert_eq!(stats.walked, 2);
    assert_eq!(stats.skipped, 3);
}

#[test]
fn bad_version_ini_files_leave_the_version_unknown_but_the_game_listed() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path();
    write(&g.join("openarena/version.ini"), b"");
    write(&g.join("quake3/version.ini"), &[0xff, 0x00, 0xfe, 0x01]);
    let huge = fs::File::create({
        fs::create_dir_all(g.join("ut2004")).unwrap();
        g.join("ut2004/version.ini")
    })
    .unwrap();
    huge.set_len(512 << 20).unwrap();
    let (library, _) = scan_local_library(g, &catalog(), &mut LibraryIndex::default()).unwrap();
    for game in library.games.values() {
        assert!(game.downloaded, "{}", game.id);
        assert_eq!(game.version, None, "{}", game.id);
    }
    assert_eq!(library.games.len(), 3);
}

#[cfg(unix)]
#[test]
fn symlinks_are_never_followed_out_of_the_game_directory() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("version.ini"), b"9");
    write(&outside.path().join("secret"), b"do not serve");
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path();
    std::os::unix::fs::symlink(outside.path(), g.join("openarena")).unwrap();
    write(&g.join("quake3/version.ini"), b"1");
    std::os::unix::fs::symlink(outside.path().join("secret"), g.join("quake3/secret")).unwrap();
    std::os::unix::fs::symlink(outside.path(), g.join("quake3/linkdir")).unwrap();

    let (library, _) = scan_local_library(g, &catalog(), &mut LibraryIndex::default()).unwrap();
    assert!(!library.games.contains_key(&id("openarena")));
    let q3 = &library.games[&id("quake3")];
    let paths: Vec<_> = q3.files.iter().map(|f| f.relative_path.as_str()).collect();
    assert_eq!(paths, ["version.ini"]);
}

#[test]
fn an_unchanged_root_is_taken_from_the_index_and_a_changed_one_is_walked() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let g = dir.path();
    write(&g.join("openarena/version.ini"), b"1.0");
    write(&g.join("openarena/data/a.eti"), b"aaaa");
    write(&g.join("quake3/version.ini"), b"2.0");

    let mut index = LibraryIndex::default();
    let (first, stats) = scan_local_library(g, &catalog(), &mut index).unwrap();
    assert_eq!((stats.walked, stats.reused), (2, 0));
    index.save(state.path()).unwrap();

    // A fresh daemon loads the index and walks nothing.
    let mut index = LibraryIndex::load(state.path());
    let (second, stats) = scan_local_library(g, &catalog(), &mut index).unwrap();
    assert_eq!((stats.walked, stats.reused), (0, 2));
    assert_eq!(first, second);

    // A file added in a nested folder, and a new version: both walked again.
    write(&g.join("openarena/data/b.eti"), b"bb");
    // mtime granularity: make sure the sentinel's stamp differs by size too.
    write(&g.join("quake3/version.ini"), b"2.10");
    let (third, stats) = scan_local_library(g, &catalog(), &mut index).unwrap();
    assert_eq!((stats.walked, stats.reused), (2, 0));
    assert_eq!(third.games[&id("openarena")].size, 4 + 2 + 3);
    assert_eq!(
        third.games[&id("quake3")]
            .version
            .as_ref()
            .unwrap()
            .as_str(),
        "2.10"
    );

    // Installing by hand flips the flag even when the root is reused.
    fs::create_dir(g.join("quake3/local")).unwrap();
    let (fourth, _) = scan_local_library(g, &catalog(), &mut index).unwrap();
    assert!(fourth.games[&id("quake3")].installed);
}

#[test]
fn a_corrupt_or_foreign_index_costs_only_a_walk() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    write(&dir.path().join("openarena/version.ini"), b"1");
    fs::write(state.path().join(index::INDEX_FILE_NAME), b"{not json").unwrap();
    let mut index = LibraryIndex::load(state.path());
    let (library, stats) = scan_local_library(dir.path(), &catalog(), &mut index).unwrap();
    assert_eq!(stats.walked, 1);
    assert_eq!(library.games.len(), 1);

    // The same index used for another game directory starts over.
    let other = tempfile::tempdir().unwrap();
    write(&other.path().join("openarena/version.ini"), b"1");
    let (_, stats) = scan_local_library(other.path(), &catalog(), &mut index).unwrap();
    assert_eq!((stats.walked, stats.reused), (1, 0));
}

#[test]
fn a_missing_game_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = scan_local_library(&missing, &catalog(), &mut LibraryIndex::default()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn chunk_hashes_are_cached_in_the_index_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let g = dir.path();
    write(&g.join("openarena/version.ini"), b"1");
    write(&g.join("openarena/pak0.eti"), b"payload");
    let index = std::sync::Mutex::new(LibraryIndex::default());
    let (library, _) = scan_local_library(g, &catalog(), &mut index.lock().unwrap()).unwrap();
    let game = &library.games[&id("openarena")];
    let root = g.join("openarena");
    let no_cancel = std::sync::atomic::AtomicBool::new(false);
    let reported = std::sync::Mutex::new(Vec::new());
    let report = |done: u64| reported.lock().unwrap().push(done);
    let manifest = game_manifest(
        &root,
        &game.id,
        &game.files,
        &index,
        Some(state.path()),
        &report,
        &no_cancel,
    )
    .unwrap()
    .0;
    // The last report covers the whole game.
    assert_eq!(
        reported.lock().unwrap().last(),
        Some(&(b"payload".len() as u64 + 1))
    );
    let pak = manifest
        .iter()
        .find(|f| f.relative_path == "pak0.eti")
        .unwrap();
    assert_eq!(
        pak.chunk_hashes,
        [blake3::hash(b"payload").to_hex().to_string()]
    );

    // A restarted daemon finds the hashes in the saved index.
    let reloaded = LibraryIndex::load(state.path());
    let meta = fs::metadata(root.join("pak0.eti")).unwrap();
    let cached = reloaded.cached_hashes(&game.id, "pak0.eti", meta.len(), index::mtime_ns(&meta));
    assert_eq!(cached.as_deref(), Some(&pak.chunk_hashes[..]));
    // A changed file is hashed again.
    write(&root.join("pak0.eti"), b"other payload");
    let manifest = game_manifest(
        &root,
        &game.id,
        &game.files,
        &index,
        None,
        &report,
        &no_cancel,
    )
    .unwrap()
    .0;
    let pak = manifest
        .iter()
        .find(|f| f.relative_path == "pak0.eti")
        .unwrap();
    assert_eq!(
        pak.chunk_hashes,
        [blake3::hash(b"other payload").to_hex().to_string()]
    );
}

#[test]
fn non_ascii_names_are_listed_exactly_and_a_name_that_is_not_utf8_stops_serving() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path();
    write(&g.join("openarena/version.ini"), b"1");
    write(&g.join("openarena/データ/マップ 1.eti"), &[1; 10]);
    write(&g.join("openarena/Überspiel/straße.cfg"), &[2; 20]);
    write(&g.join("openarena/emoji 🎮.bin"), &[3; 30]);
    let mut index = LibraryIndex::default();
    let (library, _) = scan_local_library(g, &catalog(), &mut index).unwrap();
    let oa = &library.games[&id("openarena")];
    let files: Vec<_> = oa
        .files
        .iter()
        .filter(|f| !f.is_dir)
        .map(|f| (f.relative_path.as_str(), f.size))
        .collect();
    assert_eq!(
        files,
        [
            ("emoji 🎮.bin", 30),
            ("version.ini", 1),
            ("Überspiel/straße.cfg", 20),
            ("データ/マップ 1.eti", 10),
        ]
    );
    assert!(oa.unnamed_files.is_empty());
    let served = crate::serve::ServedLibrary::new(Some(g.to_owned()), &library, 1);
    assert!(served.games.contains_key(&id("openarena")));

    // A Latin-1 name: the game stays in the local library but is not
    // served, and the name is reported escaped; also from the index.
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    write(&g.join("openarena/Überspiel").join(latin1), b"x");
    for _ in 0..2 {
        let (library, _) = scan_local_library(g, &catalog(), &mut index).unwrap();
        let oa = &library.games[&id("openarena")];
        assert!(oa.downloaded);
        assert_eq!(oa.unnamed_files, [r"Überspiel/caf\xe9.txt"]);
        let served = crate::serve::ServedLibrary::new(Some(g.to_owned()), &library, 2);
        assert!(!served.games.contains_key(&id("openarena")));
    }
    let reloaded = LibraryIndex::parse(&index.to_bytes().unwrap()).unwrap();
    let (library, stats) = scan_local_library(g, &catalog(), &mut reloaded.clone()).unwrap();
    assert_eq!(stats.reused, 1);
    assert_eq!(library.games[&id("openarena")].unnamed_files.len(), 1);

    // Renamed to UTF-8: served again.
    fs::rename(
        g.join("openarena/Überspiel").join(latin1),
        g.join("openarena/Überspiel/café.txt"),
    )
    .unwrap();
    let (library, _) = scan_local_library(g, &catalog(), &mut index).unwrap();
    assert!(library.games[&id("openarena")].unnamed_files.is_empty());
    let served = crate::serve::ServedLibrary::new(Some(g.to_owned()), &library, 3);
    assert!(served.games.contains_key(&id("openarena")));
}
