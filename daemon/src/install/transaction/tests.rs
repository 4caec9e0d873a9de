use std::fs;

use super::*;
use crate::install::intent::{INTENT_FILE, write as write_intent};

/// An unpacker that writes a fixed file set, or fails.
#[derive(Debug)]
struct FakeUnpacker {
    files: Vec<(&'static str, &'static [u8])>,
    fail: bool,
}

impl Unpacker for FakeUnpacker {
    fn unpack(
        &self,
        _volumes: &[PathBuf],
        target: &Path,
        progress: &mut dyn FnMut(UnpackProgress),
    ) -> Result<UnpackProgress, UnpackError> {
        let mut done = UnpackProgress::default();
        for (name, data) in &self.files {
            let path = target.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            done.entries += 1;
            done.bytes += data.len() as u64;
            progress(done);
        }
        if self.fail {
            return Err(UnpackError::Broken {
                archive: "game.rar".into(),
                reason: "truncated".into(),
            });
        }
        Ok(done)
    }
}

fn root_with_archive() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("game.rar"), b"archive").unwrap();
    fs::write(dir.path().join("version.ini"), b"1").unwrap();
    dir
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn install_then_update_then_uninstall_keep_the_archives() {
    let root = root_with_archive();
    let v1 = FakeUnpacker {
        files: vec![("game.exe", b"v1"), ("data/a", b"a")],
        fail: false,
    };
    let done = install(root.path(), &v1, &mut |_| {}).unwrap();
    assert_eq!(done.entries, 2);
    assert_eq!(fs::read(root.path().join("local/game.exe")).unwrap(), b"v1");
    assert_eq!(names(root.path()), ["game.rar", "local", "version.ini"]);
    assert!(!root.path().join("local").join(MARKER).exists());

    let v2 = FakeUnpacker {
        files: vec![("game.exe", b"v2")],
        fail: false,
    };
    install(root.path(), &v2, &mut |_| {}).unwrap();
    assert_eq!(fs::read(root.path().join("local/game.exe")).unwrap(), b"v2");
    assert!(
        !root.path().join("local/data").exists(),
        "the old local/ is replaced whole"
    );
    assert_eq!(names(root.path()), ["game.rar", "local", "version.ini"]);

    uninstall(root.path()).unwrap();
    assert_eq!(names(root.path()), ["game.rar", "version.ini"]);
    assert!(matches!(
        uninstall(root.path()),
        Err(InstallError::NotInstalled { .. })
    ));
}

#[test]
fn a_failed_update_leaves_the_old_local_untouched() {
    let root = root_with_archive();
    let v1 = FakeUnpacker {
        files: vec![("game.exe", b"v1")],
        fail: false,
    };
    install(root.path(), &v1, &mut |_| {}).unwrap();
    let broken = FakeUnpacker {
        files: vec![("game.exe", b"half")],
        fail: true,
    };
    assert!(install(root.path(), &broken, &mut |_| {}).is_err());
    assert_eq!(fs::read(root.path().join("local/game.exe")).unwrap(), b"v1");
    assert_eq!(names(root.path()), ["game.rar", "local", "version.ini"]);
}

#[test]
fn a_root_without_archives_or_with_foreign_reserved_folders_is_refused() {
    let empty = tempfile::tempdir().unwrap();
    let v1 = FakeUnpacker {
        files: vec![],
        fail: false,
    };
    assert!(matches!(
        install(empty.path(), &v1, &mut |_| {}),
        Err(InstallError::NoArchives { .. })
    ));
    let root = root_with_archive();
    fs::create_dir(root.path().join(INSTALLING)).unwrap();
    fs::write(root.path().join(INSTALLING).join("mine"), b"user data").unwrap();
    assert!(matches!(
        install(root.path(), &v1, &mut |_| {}),
        Err(InstallError::Foreign { .. })
    ));
    assert!(root.path().join(INSTALLING).join("mine").exists());
}

/// Builds a root in the state a crash at some step leaves, recovers it,
/// and returns what is left.
fn recovered(
    intent: Option<Intent>,
    local: Option<&[u8]>,
    installing: Option<&[u8]>,
    backup: Option<&[u8]>,
) -> (Vec<String>, Option<Vec<u8>>) {
    let root = root_with_archive();
    let r = root.path();
    for (dir, content, marked) in [
        (LOCAL_DIR, local, false),
        (INSTALLING, installing, true),
        (BACKUP, backup, true),
    ] {
        if let Some(content) = content {
            fs::create_dir(r.join(dir)).unwrap();
            fs::write(r.join(dir).join("game.exe"), content).unwrap();
            if marked {
                fs::write(r.join(dir).join(MARKER), b"").unwrap();
            }
        }
    }
    if let Some(intent) = intent {
        write_intent(r, intent).unwrap();
    }
    recover(r).unwrap();
    let game = fs::read(r.join("local/game.exe")).ok();
    (names(r), game)
}

/// intent, local, installing, backup → expected `local/game.exe`.
type Case = (
    Option<Intent>,
    Option<&'static [u8]>,
    Option<&'static [u8]>,
    Option<&'static [u8]>,
    Option<&'static [u8]>,
);

#[test]
fn recovery_leaves_the_old_or_the_new_local_never_a_mix_and_no_reserved_folder() {
    use Intent::*;
    let clean = |with_local: bool| {
        let mut n = vec!["game.rar".to_owned()];
        if with_local {
            n.push("local".into());
        }
        n.push("version.ini".into());
        n
    };
    let cases: Vec<Case> = vec![
        // intent, local, installing, backup → expected local/game.exe
        (
            Some(Install(InstallStep::Extracting)),
            None,
            None,
            None,
            None,
        ),
        (
            Some(Install(InstallStep::Extracting)),
            None,
            Some(b"new"),
            None,
            None,
        ),
        (
            Some(Install(InstallStep::Activating)),
            None,
            Some(b"new"),
            None,
            Some(b"new"),
        ),
        (
            Some(Install(InstallStep::Activating)),
            Some(b"new"),
            None,
            None,
            Some(b"new"),
        ),
        (
            Some(Update(UpdateStep::Extracting)),
            Some(b"old"),
            Some(b"new"),
            None,
            Some(b"old"),
        ),
        (
            Some(Update(UpdateStep::Swapping)),
            Some(b"old"),
            Some(b"new"),
            None,
            Some(b"new"),
        ),
        (
            Some(Update(UpdateStep::Swapping)),
            None,
            Some(b"new"),
            Some(b"old"),
            Some(b"new"),
        ),
        (
            Some(Update(UpdateStep::Swapping)),
            Some(b"new"),
            None,
            Some(b"old"),
            Some(b"new"),
        ),
        (
            Some(Update(UpdateStep::Cleaning)),
            Some(b"new"),
            None,
            Some(b"old"),
            Some(b"new"),
        ),
        (
            Some(Update(UpdateStep::Cleaning)),
            Some(b"new"),
            None,
            None,
            Some(b"new"),
        ),
        (
            Some(Uninstall(UninstallStep::Removing)),
            Some(b"old"),
            None,
            None,
            None,
        ),
        (
            Some(Uninstall(UninstallStep::Removing)),
            None,
            None,
            Some(b"old"),
            None,
        ),
        (
            Some(Uninstall(UninstallStep::Removing)),
            None,
            None,
            None,
            None,
        ),
        (None, Some(b"old"), Some(b"new"), None, Some(b"old")),
        (None, Some(b"new"), None, Some(b"old"), Some(b"new")),
        (None, None, None, Some(b"old"), Some(b"old")),
    ];
    for (i, (intent, local, installing, backup, expected)) in cases.into_iter().enumerate() {
        let (names, game) = recovered(intent, local, installing, backup);
        assert_eq!(game.as_deref(), expected, "case {i}: local/");
        assert_eq!(names, clean(expected.is_some()), "case {i}: leftovers");
    }
}

#[test]
fn recovery_never_deletes_a_reserved_folder_lanspread_did_not_make() {
    let root = root_with_archive();
    let r = root.path();
    fs::create_dir(r.join(BACKUP)).unwrap();
    fs::write(r.join(BACKUP).join("saves"), b"precious").unwrap();
    fs::create_dir(r.join(INSTALLING)).unwrap();
    let outcome = recover(r).unwrap();
    assert!(matches!(outcome, Recovered::LeftAlone(_)), "{outcome:?}");
    assert_eq!(fs::read(r.join(BACKUP).join("saves")).unwrap(), b"precious");
    assert!(r.join(INSTALLING).is_dir());
    // A corrupt intent log: nothing is guessed, nothing touched.
    fs::write(r.join(INTENT_FILE), b"{garbage").unwrap();
    assert!(matches!(recover(r).unwrap(), Recovered::LeftAlone(_)));
    assert!(r.join(BACKUP).join("saves").exists());
}
