//! A game of many small files, the shape of an unpacked modern game:
//! `count` files of 1 to 8 KiB with deterministic, distinct content, in
//! folders of 500, plus `version.ini`; and a fast comparison of two trees
//! (a walk and one BLAKE3 per file). What these tests prove is the number
//! of files (file lists, plans, journals, syncs, open files); the number of
//! bytes is proven by the sparse-file tests, so the files are kept small:
//! 150 000 of them are about 0.7 GiB per copy.

use std::collections::BTreeMap;
use std::path::Path;

use lanspread_proto::model::GameFileDescription;

/// How many files the "many files" tests move.
pub const MANY_FILES: usize = 150_000;

/// Files per folder.
const PER_FOLDER: usize = 500;

/// The largest file, in bytes.
const MAX_FILE: u64 = 8 * 1024;

/// The version the game's `version.ini` names.
pub const MANY_FILES_VERSION: &str = "1.0";

/// Writes the game into `root` and returns its manifest, in the order a
/// download plans it (every file has one chunk: none exceeds 4 MiB).
pub fn write_many_files(root: &Path, count: usize) -> Vec<GameFileDescription> {
    // The test keeps two copies (seeder and downloader): a disk that cannot
    // hold them fails here, loudly, rather than halfway through.
    std::fs::create_dir_all(root).unwrap();
    let needed = 2 * count as u64 * (MAX_FILE + 4096);
    let stat = rustix::fs::statvfs(root).unwrap();
    let free = stat.f_bavail * stat.f_frsize;
    assert!(
        free >= needed,
        "{}: {} MiB free, the many-files test needs {} MiB (two copies of {count} files)",
        root.display(),
        free >> 20,
        needed >> 20
    );
    // One block of pseudo-random bytes; file `i` is a window into it,
    // stamped with `i` so no two files are alike.
    let mut block = vec![0u8; 128 * 1024];
    blake3::Hasher::new()
        .update(b"lanspread many files")
        .finalize_xof()
        .fill(&mut block);
    let mut files = Vec::with_capacity(count + 1);
    for i in 0..count {
        let folder = format!("data/{:04}", i / PER_FOLDER);
        if i % PER_FOLDER == 0 {
            std::fs::create_dir_all(root.join(&folder)).unwrap();
        }
        let mixed = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        let size = 1024 + (mixed % (MAX_FILE - 1024)) as usize;
        let start = (mixed as usize / 7) % (block.len() - size);
        let mut data = block[start..start + size].to_vec();
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let relative_path = format!("{folder}/f{i:06}.dat");
        std::fs::write(root.join(&relative_path), &data).unwrap();
        files.push(GameFileDescription {
            relative_path,
            is_dir: false,
            size: size as u64,
            chunk_hashes: vec![blake3::hash(&data).to_hex().to_string()],
        });
    }
    let version = format!("version={MANY_FILES_VERSION}\n");
    std::fs::write(root.join("version.ini"), &version).unwrap();
    files.push(GameFileDescription {
        relative_path: "version.ini".into(),
        is_dir: false,
        size: version.len() as u64,
        chunk_hashes: vec![blake3::hash(version.as_bytes()).to_hex().to_string()],
    });
    files
}

/// Every regular file under `root`, by relative path, with its BLAKE3.
pub fn tree_hashes(root: &Path) -> BTreeMap<String, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into();
                out.insert(relative, blake3::hash(&std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}
