//! The architecture's invariants as tests (ARCHITECTURE.md, "Architecture
//! invariants"): rules a reviewer would otherwise have to remember.
//!
//! - Dependencies point one way: the tasks and leaves below the core never
//!   name the core or the IPC edge; they report through an `EventSender`
//!   of their own event type.
//! - Each outside library has one home: s2n-quic in `transport`, zeroconf
//!   in `discovery`, interprocess in `ipc` (and the proto client), notify in
//!   `monitor`, libarchive's C API (the only `unsafe`) in
//!   `install::libarchive`.
//! - `proto` does no I/O outside its client.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as (path relative to `dir`, text).
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(!found.is_empty(), "no sources under {}", dir.display());
    found.sort();
    found
}

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

/// Whether `text` uses the path `name::` as a crate or module path (not as
/// the tail of a longer name: `sd_notify::` is not `notify::`).
fn uses_path(text: &str, name: &str) -> bool {
    let needle = format!("{name}::");
    text.match_indices(&needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The module a daemon source file belongs to: its first path component
/// without `.rs` (`download/plan.rs` → `download`).
fn module_of(relative: &str) -> &str {
    let first = relative.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first)
}

/// The daemon's layers, top to bottom. A module may name modules of its own
/// layer or below, never above.
const EDGE: &[&str] = &["lib", "main", "ipc", "service"];
const CORE: &[&str] = &["core"];

#[test]
fn nothing_below_the_core_names_the_core_or_the_ipc_edge() {
    let mut violations = Vec::new();
    for (file, text) in sources(&crate_dir("daemon")) {
        let module = module_of(&file);
        if EDGE.contains(&module) || CORE.contains(&module) {
            continue;
        }
        for above in CORE.iter().chain(["ipc", "service"].iter()) {
            if uses_path(&text, &format!("crate::{above}"))
                || uses_path(&text, &format!("lanspreadd::{above}"))
            {
                violations.push(format!("{file} names crate::{above}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies must point one way (give the task an EventSender of its own event type):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_core_does_not_know_the_ipc_edge() {
    for (file, text) in sources(&crate_dir("daemon")) {
        if module_of(&file) == "core" {
            assert!(
                !uses_path(&text, "crate::ipc") && !uses_path(&text, "serde_json"),
                "{file}: the core returns typed results; only the IPC edge encodes JSON"
            );
        }
    }
}

#[test]
fn each_outside_library_has_one_home() {
    // (crate path, modules that may use it)
    let homes: &[(&str, &[&str])] = &[
        ("s2n_quic", &["transport"]),
        ("zeroconf", &["discovery"]),
        ("avahi_sys", &["discovery"]),
        ("interprocess", &["ipc"]),
        ("notify", &["monitor"]),
    ];
    let mut violations = Vec::new();
    for (file, text) in sources(&crate_dir("daemon")) {
        let module = module_of(&file);
        for (library, allowed) in homes {
            if uses_path(&text, library) && !allowed.contains(&module) {
                violations.push(format!("{file} uses {library} (its home: {allowed:?})"));
            }
        }
        if text.contains("unsafe ") && file != "install/libarchive.rs" {
            violations.push(format!(
                "{file} has unsafe code (only install/libarchive.rs may)"
            ));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn proto_does_no_io_outside_its_client() {
    for (file, text) in sources(&crate_dir("proto")) {
        if file == "client.rs" {
            continue;
        }
        for io in [
            "tokio",
            "interprocess",
            "s2n_quic",
            "std::fs",
            "std::net::UdpSocket",
        ] {
            assert!(!uses_path(&text, io), "proto/src/{file} uses {io}");
        }
    }
}

#[test]
fn the_rules_see_what_they_look_for() {
    // A rule that can never fire proves nothing: check the matcher itself.
    assert!(uses_path("use crate::core::DaemonEvent;", "crate::core"));
    assert!(uses_path("x(crate::core::err())", "crate::core"));
    assert!(!uses_path("use sd_notify::NotifyState;", "notify"));
    assert!(uses_path("notify::recommended_watcher(tx)", "notify"));
    assert_eq!(module_of("download/plan.rs"), "download");
    assert_eq!(module_of("monitor.rs"), "monitor");
    let daemon = sources(&crate_dir("daemon"));
    assert!(daemon.iter().any(|(f, _)| f == "core/mod.rs"));
    assert!(
        daemon
            .iter()
            .any(|(f, t)| module_of(f) == "transport" && uses_path(t, "s2n_quic"))
    );
}
