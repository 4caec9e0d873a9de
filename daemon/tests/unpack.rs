//! The libarchive unpacker against real archives: the RAR fixtures from
//! libarchive's own test suite (daemon/tests/data/README.md gives the
//! expected results), zip/7z-free hand-made archives built here, and
//! hostile archives that try to write outside their target.

#[path = "common/archives.rs"]
mod archives;

use std::path::{Path, PathBuf};
use std::process::Command;

use lanspreadd::install::{LibarchiveUnpacker, UnpackError, Unpacker};
use sha2::{Digest, Sha256};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unpack(volumes: &[PathBuf]) -> (tempfile::TempDir, Result<u64, UnpackError>) {
    let target = tempfile::tempdir().unwrap();
    let result = LibarchiveUnpacker
        .unpack(volumes, target.path(), &mut |_| {})
        .map(|done| done.entries);
    (target, result)
}

#[test]
fn rar4_fixture_gives_its_files_symlink_and_empty_folder() {
    let (target, result) = unpack(&[data("test_read_format_rar.rar")]);
    result.unwrap();
    let t = target.path();
    let expected = "5a5f16e01faf8adf92eb4499a2d3e93010c4b41dbb7f698f4a8466d9f58e6dd2";
    assert_eq!(sha256(&t.join("test.txt")), expected);
    assert_eq!(sha256(&t.join("testdir/test.txt")), expected);
    assert_eq!(
        std::fs::read_link(t.join("testlink")).unwrap(),
        Path::new("test.txt")
    );
    assert!(t.join("testemptydir").is_dir());
}

#[test]
fn rar5_fixtures_give_their_files() {
    let (target, result) = unpack(&[data("test_read_format_rar5_compressed.rar")]);
    result.unwrap();
    let bin = target.path().join("test.bin");
    assert_eq!(std::fs::metadata(&bin).unwrap().len(), 1200);
    assert_eq!(
        sha256(&bin),
        "588870a2dade35c2650fbb7898c9a9c7f21fce7c281198604e8d0c9737f2c375"
    );

    let (target, result) = unpack(&[data("test_read_format_rar5_multiple_files_solid.rar")]);
    result.unwrap();
    for (name, hash) in [
        (
            "test1.bin",
            "7d89f86f9f69d744ffff3fc043e15bf89fc3ffc134ffcbb31d164a99bb8b67b0",
        ),
        (
            "test2.bin",
            "f81e6fceeeab366306b23466bf6bb3aac2875e0906dc20a8652be0696ceb15a2",
        ),
        (
            "test3.bin",
            "5e621f2b6ce8fed758c3df8221f994eda55d1e432c7cc4349c34a30ec2e1c43d",
        ),
        (
            "test4.bin",
            "2627f40180217252956edb9a426e8d3e344adaf89019d3bccbe04f6c3416dcdd",
        ),
    ] {
        assert_eq!(sha256(&target.path().join(name)), hash, "{name}");
    }
}

#[test]
fn encrypted_and_broken_rar5_fail_with_a_clear_error() {
    let (_, result) = unpack(&[data("test_read_format_rar5_encrypted.rar")]);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("encrypt"), "{err}");
    let (_, result) = unpack(&[data("test_read_format_rar5_truncated_huff.rar")]);
    let err = result.unwrap_err();
    assert!(matches!(err, UnpackError::Broken { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("test_read_format_rar5_truncated_huff.rar"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_no_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("game.rar");
    std::fs::write(&fake, b"this is not an archive at all").unwrap();
    let (_, result) = unpack(&[fake]);
    assert!(
        matches!(result, Err(UnpackError::Broken { .. })),
        "{result:?}"
    );
}

/// Builds an archive with Python's tarfile/zipfile, which write any entry
/// a hostile peer could send (CPython is on every machine of this kind).
fn python_archive(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import io, tarfile, zipfile, sys\npath = sys.argv[1]\n{script}"
        ))
        .arg(&path)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "building {name} failed");
    path
}

const TAR_HELPERS: &str = r#"
def add_file(t, name, data=b'x'):
    info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
def add_link(t, name, target, kind):
    info = tarfile.TarInfo(name); info.type = kind; info.linkname = target; t.addfile(info)
"#;

#[test]
fn hostile_archives_write_nothing_outside_the_target() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases = [
        ("dotdot.zip", "z = zipfile.ZipFile(path, 'w'); z.writestr('ok.txt', 'ok'); z.writestr('../outside/evil.txt', 'evil'); z.close()".to_owned()),
        ("absolute.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_file(t, '{}/abs.txt'); t.close()", outside.display())),
        ("symlink.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_link(t, 'link', '{}', tarfile.SYMTYPE); add_file(t, 'link/through.txt'); t.close()", outside.display())),
        ("etc.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_link(t, 'etc', '/etc', tarfile.SYMTYPE); add_file(t, 'etc/lanspread-test'); t.close()")),
        ("relative-symlink.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_link(t, 'up', '../outside', tarfile.SYMTYPE); add_file(t, 'up/through.txt'); t.close()")),
        ("hardlink.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_link(t, 'hard', '../outside/target', tarfile.LNKTYPE); t.close()")),
        ("hardlink-abs.tar", format!("{TAR_HELPERS}\nt = tarfile.open(path, 'w'); add_link(t, 'hard', '/etc/passwd', tarfile.LNKTYPE); t.close()")),
    ];
    std::fs::write(outside.join("target"), b"outside file").unwrap();
    for (name, script) in cases {
        let archive = python_archive(work.path(), name, &script);
        let target = work.path().join(format!("target-{name}"));
        std::fs::create_dir(&target).unwrap();
        let result = LibarchiveUnpacker.unpack(&[archive], &target, &mut |_| {});
        let err = result.expect_err(name);
        assert!(
            matches!(err, UnpackError::Unsafe { .. }),
            "{name}: expected a refusal, got {err}"
        );
        let mut outside_now: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        outside_now.sort();
        assert_eq!(outside_now, ["target"], "{name} wrote outside its target");
        assert_eq!(
            std::fs::read(outside.join("target")).unwrap(),
            b"outside file"
        );
    }
    assert!(!Path::new("/etc/lanspread-test").exists());
}

#[test]
fn zip_and_tar_gz_made_here_extract_with_folders_and_modes() {
    let work = tempfile::tempdir().unwrap();
    let zip = python_archive(
        work.path(),
        "game.zip",
        "z = zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED); z.writestr('bin/game', 'run' * 1000); z.writestr('data/maps/dm1.bsp', 'map'); z.close()",
    );
    let (target, result) = unpack(&[zip]);
    assert_eq!(result.unwrap(), 2);
    assert_eq!(
        std::fs::read(target.path().join("bin/game")).unwrap(),
        "run".repeat(1000).as_bytes()
    );
    let tgz = python_archive(
        work.path(),
        "tools.tar.gz",
        &format!(
            "{TAR_HELPERS}\nt = tarfile.open(path, 'w:gz'); add_file(t, 'tools/a', b'abc'); t.close()"
        ),
    );
    let (target, result) = unpack(&[tgz]);
    result.unwrap();
    assert_eq!(
        std::fs::read(target.path().join("tools/a")).unwrap(),
        b"abc"
    );
}

#[test]
fn seven_zip_made_with_bsdtar_extracts() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("maps")).unwrap();
    std::fs::write(src.join("maps/dm1.bsp"), vec![42u8; 100_000]).unwrap();
    std::fs::write(src.join("readme.txt"), b"frag").unwrap();
    let archive = work.path().join("game.7z");
    let status = Command::new("bsdtar")
        .args(["--format", "7zip", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .args(["maps", "readme.txt"])
        .status()
        .expect("bsdtar runs (apt-get install libarchive-tools)");
    assert!(status.success());
    let (target, result) = unpack(&[archive]);
    result.unwrap();
    assert_eq!(
        std::fs::read(target.path().join("maps/dm1.bsp")).unwrap(),
        vec![42u8; 100_000]
    );
    assert_eq!(
        std::fs::read(target.path().join("readme.txt")).unwrap(),
        b"frag"
    );
}

/// This test process never calls `setlocale`, so it runs in the "C"
/// locale whatever the environment says: the case that made every
/// non-ASCII name fail (issue 14).
#[test]
fn non_ascii_names_extract_exactly_in_every_format_in_the_c_locale() {
    let work = tempfile::tempdir().unwrap();
    for (kind, file_name) in archives::KINDS {
        let files = archives::files_for(kind, "game");
        let archive = work.path().join(file_name);
        archives::build(kind, &archive, &files);
        let (target, result) = unpack(&[archive]);
        let entries = result.unwrap_or_else(|err| panic!("{kind}: {err}"));
        assert!(entries >= files.len() as u64, "{kind}: {entries} entries");
        archives::assert_tree(target.path(), &files);
    }
}

#[test]
fn a_legacy_zip_name_is_cp437_unless_it_is_valid_utf8() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("legacy.zip");
    let files = archives::files_for("zip-legacy", "x");
    archives::build("zip-legacy", &archive, &files);
    let (target, result) = unpack(&[archive]);
    result.unwrap();
    let t = target.path();
    // 0x9a 0xe1 in CP437 are Ü and ß; the UTF-8 bytes of 日本語 were kept.
    assert!(t.join("x/Überspiel/straße.cfg").is_file());
    assert!(t.join("x/Ñandú/Ämter ±.dat").is_file());
    assert!(t.join("x/mac/日本語.txt").is_file());
}

#[test]
fn a_name_that_cannot_be_decoded_fails_naming_the_entry() {
    let work = tempfile::tempdir().unwrap();
    // A tar name is raw bytes with no charset: Latin-1 bytes are not text.
    let tar = python_archive(
        work.path(),
        "latin1.tar",
        &format!(
            "{TAR_HELPERS}\nt = tarfile.open(path, 'w', format=tarfile.GNU_FORMAT, encoding='latin-1'); add_file(t, 'ok.txt'); add_file(t, 'caf\\xe9.txt'); t.close()"
        ),
    );
    let (target, result) = unpack(&[tar]);
    let err = result.unwrap_err();
    assert!(matches!(err, UnpackError::Broken { .. }), "{err}");
    let message = err.to_string();
    eprintln!("refused: {message}");
    assert!(message.contains("latin1.tar"), "{message}");
    assert!(message.contains("caf\\xe9.txt"), "{message}");
    assert!(message.contains("is not UTF-8"), "{message}");
    assert!(target.path().join("ok.txt").is_file());
    // A zip entry that claims UTF-8 (flag 0x800) but is not.
    let zip = python_archive(
        work.path(),
        "liar.zip",
        "class Liar(zipfile.ZipInfo):\n    def _encodeFilenameFlags(self): return b'first.txt' if self.filename == 'first.txt' else b'bad\\xff.txt', self.flag_bits | 0x800\nz = zipfile.ZipFile(path, 'w')\nz.writestr(Liar('first.txt'), b'1')\nz.writestr(Liar('bad'), b'2')\nz.close()",
    );
    let (_, result) = unpack(&[zip]);
    let message = result.unwrap_err().to_string();
    eprintln!("refused: {message}");
    assert!(message.contains("liar.zip"), "{message}");
    assert!(
        message.contains("entry 2 (the one after \"first.txt\")"),
        "{message}"
    );
    assert!(message.contains("cannot be decoded"), "{message}");
}
