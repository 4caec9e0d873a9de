//! Archives with non-ASCII entry names in every format the unpacker
//! supports, built by the tests themselves (Python's zipfile and tarfile,
//! `bsdtar` for 7z, and a stored RAR 5 written byte by byte), and the
//! check that an extraction gave exactly their names and bytes.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The formats, each as (kind, archive file name).
pub const KINDS: [(&str, &str); 6] = [
    ("zip-utf8", "zip-utf8.zip"),
    ("zip-legacy", "zip-legacy.zip"),
    ("tar-pax", "tar-pax.tar"),
    ("7z", "seven.7z"),
    ("rar5", "rar5.rar"),
    ("rar4", "rar4.rar"),
];

/// Files with names in several scripts (and spaces, combining-free
/// accents, an emoji), under `prefix/`, each with distinct bytes. A
/// legacy zip gets names CP437 can spell, plus one it cannot (written as
/// UTF-8 bytes without the UTF-8 flag, as macOS and old Linux tools do).
pub fn files_for(kind: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let names: &[&str] = if kind == "zip-legacy" {
        &[
            "Überspiel/straße.cfg",
            "naïve/façade ½.txt",
            "Ñandú/Ämter ±.dat",
            "plain/ascii.txt",
            "mac/日本語.txt",
        ]
    } else {
        &[
            "表だよ/テスト.txt",
            "Überspiel/straße.cfg",
            "Ελληνικά/файл Ω.dat",
            "한국어/게임 데이터.pak",
            "emoji 🎮.bin",
            "plain/ascii.txt",
        ]
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            // One larger file, so compressed data spans several reads.
            let len = if i == 0 { 300_000 } else { 1000 + i * 37 };
            let data = (0..len)
                .map(|n| (n as u8).wrapping_mul(i as u8 + 3) ^ (n >> 8) as u8)
                .collect();
            (format!("{prefix}/{name}"), data)
        })
        .collect()
}

const BUILDER: &str = r#"
import binascii, io, json, struct, sys, tarfile, zipfile
kind, path, files = sys.argv[1], sys.argv[2], json.load(sys.stdin)
files = [(name, bytes(data)) for name, data in files]

def vint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7f, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)

def rar5_block(body):
    size = vint(len(body))
    return struct.pack('<I', binascii.crc32(size + body)) + size + body

def rar4_unicode(name):
    # RAR 4 names with FHD_UNICODE: an ASCII name, NUL, then the encoded
    # UTF-16: a high byte, then groups of four 2-bit opcodes; opcode 2 is
    # one little-endian UTF-16 unit.
    units = name.encode('utf-16-le')
    units = [units[i:i + 2] for i in range(0, len(units), 2)]
    out = bytearray(b'\0')
    for i in range(0, len(units), 4):
        group = units[i:i + 4]
        out.append(sum(2 << (6 - 2 * j) for j in range(len(group))))
        for unit in group:
            out += unit
    return name.encode('ascii', 'replace') + b'\0' + bytes(out)

if kind == 'zip-utf8':
    # zipfile sets the UTF-8 flag for every non-ASCII name.
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            z.writestr(name, data)
elif kind == 'zip-legacy':
    class Legacy(zipfile.ZipInfo):
        def _encodeFilenameFlags(self):
            try:
                raw = self.filename.encode('cp437')
            except UnicodeEncodeError:
                raw = self.filename.encode('utf-8')
            return raw, self.flag_bits & ~0x800
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name, data in files:
            info = Legacy(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
elif kind == 'tar-pax':
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
elif kind == 'rar5':
    out = bytearray(b'Rar!\x1a\x07\x01\x00')
    out += rar5_block(vint(1) + vint(0) + vint(0))
    for name, data in files:
        raw = name.encode('utf-8')
        body = vint(2) + vint(0x2) + vint(len(data))      # file, data follows
        body += vint(0x4) + vint(len(data)) + vint(0o100644)  # CRC32 present, size, mode
        body += struct.pack('<I', binascii.crc32(data))
        body += vint(0) + vint(1)                            # stored, Unix
        body += vint(len(raw)) + raw
        out += rar5_block(body) + data
    out += rar5_block(vint(5) + vint(0) + vint(0))
    open(path, 'wb').write(out)
elif kind == 'rar4':
    def block(kind_, flags, body, add=b''):
        head = struct.pack('<BHH', kind_, flags, 7 + len(body)) + body
        crc = binascii.crc32(head) & 0xffff
        return struct.pack('<H', crc) + head + add
    out = bytearray(b'Rar!\x1a\x07\x00')
    out += block(0x73, 0, b'\0' * 6)
    for name, data in files:
        raw = rar4_unicode(name)
        body = struct.pack('<IIBIIBBHI', len(data), len(data), 3, binascii.crc32(data),
                           0x5a210000, 29, 0x30, len(raw), 0o100644) + raw
        out += block(0x74, 0x8000 | 0x0200, body, data)
    out += block(0x7b, 0x4000, b'')
    open(path, 'wb').write(out)
else:
    raise SystemExit('unknown kind ' + kind)
"#;

/// Writes an archive of `kind` with `files` at `path`.
pub fn build(kind: &str, path: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if kind == "7z" {
        // bsdtar writes 7z from a folder; it reads those names in the
        // locale it runs in, so it gets a UTF-8 one.
        let staging = tempfile::tempdir().unwrap();
        for (name, data) in files {
            let path = staging.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        let top: Vec<_> = std::fs::read_dir(staging.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let status = Command::new("bsdtar")
            .env("LC_ALL", "C.UTF-8")
            .args(["--format", "7zip", "-cf"])
            .arg(path)
            .arg("-C")
            .arg(staging.path())
            .args(top)
            .status()
            .expect("bsdtar runs");
        assert!(
            status.success(),
            "bsdtar could not write {}",
            path.display()
        );
        return;
    }
    // The names and bytes go in on stdin: too large for an argument.
    let mut python = Command::new("python3")
        .arg("-c")
        .arg(BUILDER)
        .arg(kind)
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let spec = serde_json::to_vec(files).unwrap();
    python.stdin.take().unwrap().write_all(&spec).unwrap();
    let status = python.wait().unwrap();
    assert!(
        status.success(),
        "building {kind} {} failed",
        path.display()
    );
}

/// Writes one archive of every kind into `dir`, each holding its files
/// under a folder named after the kind; returns every file they hold.
pub fn build_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for (kind, file_name) in KINDS {
        let files = files_for(kind, kind);
        build(kind, &dir.join(file_name), &files);
        all.extend(files);
    }
    all
}

/// Asserts that `dir` holds exactly `expected` as regular files: the same
/// names (byte for byte, as UTF-8) and the same bytes.
pub fn assert_tree(dir: &Path, expected: &[(String, Vec<u8>)]) {
    fn walk(dir: &Path, rel: &str, found: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry
                .file_name()
                .into_string()
                .unwrap_or_else(|raw| panic!("{raw:?} in {} is not UTF-8", dir.display()));
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(&entry.path(), &rel, found);
            } else {
                assert!(kind.is_file(), "{rel} is not a regular file");
                found.push((rel, std::fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, "", &mut found);
    found.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&found),
        names(&expected),
        "names in {}",
        dir.display()
    );
    for ((name, got), (_, want)) in found.iter().zip(&expected) {
        assert!(
            got == want,
            "{name}: {} bytes differ from the {} expected",
            got.len(),
            want.len()
        );
    }
}
