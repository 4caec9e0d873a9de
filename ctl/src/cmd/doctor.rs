//! `lanspreadctl doctor`: checks what a user would otherwise debug by hand
//! and says how to fix each problem. Exits 1 when a check failed, 3 when
//! the daemon is not reachable at all.

use std::path::Path;

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::Access;
use lanspread_proto::model::PeerState;
use serde::Serialize;

use crate::format::print_json;
use crate::{Failure, Output};

/// One check's verdict.
#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    /// `ok`, `warn` or `fail`.
    verdict: &'static str,
    detail: String,
    /// What to do about it (empty when ok).
    fix: String,
}

fn check(check: &'static str, verdict: &'static str, detail: String, fix: &str) -> Check {
    Check {
        check,
        verdict,
        detail,
        fix: fix.to_owned(),
    }
}

pub async fn run(socket: &Path, output: Output) -> Result<(), Failure> {
    let mut checks = Vec::new();
    let mut client = match IpcClient::connect(socket).await {
        Ok(client) => {
            checks.push(check(
                "daemon reachable",
                "ok",
                format!("{}", socket.display()),
                "",
            ));
            client
        }
        Err(err) => {
            checks.push(check(
                "daemon reachable",
                "fail",
                format!("{}: {err}", socket.display()),
                "start it (systemctl enable --now lanspreadd), or point --socket / LANSPREAD_SOCKET at it",
            ));
            report(&checks, output);
            return Err(Failure::Client(err));
        }
    };
    checks.push(match client.hello().access {
        Access::Operator => check("permissions", "ok", "operator: every command".into(), ""),
        Access::ReadOnly => check(
            "permissions",
            "warn",
            "read-only: you can look, not download or install".into(),
            "add yourself to the operator group: sudo usermod -aG lanspread $USER (then log in again)",
        ),
    });
    let status = client.status().await?;
    checks.push(match &status.game_dir {
        None => check(
            "game directory",
            "fail",
            "not set".into(),
            "lanspreadctl set-game-dir /path/to/games",
        ),
        Some(dir) if !dir.is_dir() => check(
            "game directory",
            "fail",
            format!("{} is gone", dir.display()),
            "recreate it or choose another with lanspreadctl set-game-dir",
        ),
        Some(dir) => check(
            "game directory",
            "ok",
            format!("{} ({} games)", dir.display(), status.local_games),
            "",
        ),
    });
    checks.push(match status.ignored_roots.as_slice() {
        [] => check(
            "ignored game folders",
            "ok",
            "every folder of the game directory is a served game".into(),
            "",
        ),
        ignored => {
            let example = ignored
                .iter()
                .find(|i| i.reason == "not in the catalog")
                .map(|i| i.name.clone())
                .unwrap_or_else(|| "my-game".into());
            check(
                "ignored game folders",
                "warn",
                ignored
                    .iter()
                    .map(|i| format!("{} ({})", i.name, i.reason))
                    .collect::<Vec<_>>()
                    .join(", "),
                &format!(
                    "a folder is served when its name is a game id listed in the catalog (in use: {}); add an entry such as {{\"id\": \"{example}\", \"name\": \"My Game\"}} to a catalog file and start lanspreadd with --catalog FILE (or catalog = \"FILE\" in /etc/lanspread/lanspreadd.toml), renaming the folder to a valid id (a-z, 0-9, '-', '_') if needed",
                    status.catalog
                ),
            )
        }
    });
    let unavailable = |component: &str| {
        status
            .unavailable
            .iter()
            .find(|u| u.component == component)
            .map(|u| u.reason.clone())
    };
    checks.push(
        match unavailable("transport").or_else(|| unavailable("peers")) {
            Some(reason) => check(
                "peer transport",
                "fail",
                reason,
                "see the daemon's log; is the --listen port free?",
            ),
            None => check(
                "peer transport",
                "ok",
                format!("QUIC on {}", status.listen.clone().unwrap_or_default()),
                "",
            ),
        },
    );
    checks.push(match unavailable("discovery") {
        Some(reason) => check(
            "avahi reachable",
            "fail",
            reason,
            "start Avahi and D-Bus: systemctl enable --now avahi-daemon",
        ),
        None => check("avahi reachable", "ok", "discovery running".into(), ""),
    });
    checks.push(if status.mdns_visible {
        check("own mDNS record visible", "ok", "announced on the LAN".into(), "")
    } else {
        check(
            "own mDNS record visible",
            "warn",
            "not seen yet (it takes about a second after start)".into(),
            "check that avahi-daemon publishes on this interface (allow-interfaces in /etc/avahi/avahi-daemon.conf) and that UDP 5353 is open",
        )
    });
    let peers = client.list_peers().await?;
    let connected: Vec<_> = peers
        .iter()
        .filter(|p| p.state == PeerState::Connected)
        .collect();
    let silent: Vec<_> = peers
        .iter()
        .filter(|p| p.state != PeerState::Connected)
        .map(|p| format!("{} ({})", p.name, p.addresses.join(" ")))
        .collect();
    checks.push(if connected.is_empty() {
        check(
            "peers answering",
            "warn",
            if silent.is_empty() {
                "no connected peer".into()
            } else {
                format!("seen in mDNS but not answering: {}", silent.join(", "))
            },
            "are other lanspread daemons on this LAN? allow UDP to their QUIC port and UDP 5353 (mDNS) in the firewall",
        )
    } else {
        check(
            "peers answering",
            "ok",
            connected
                .iter()
                .map(|p| format!("{} ({})", p.name, p.address.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", "),
            "",
        )
    });
    report(&checks, output);
    if checks.iter().any(|c| c.verdict == "fail") {
        return Err(Failure::Operation("some checks failed".into()));
    }
    Ok(())
}

fn report(checks: &[Check], output: Output) {
    if output.json {
        print_json(&checks);
        return;
    }
    for c in checks {
        let mark = match c.verdict {
            "ok" => "ok  ",
            "warn" => "WARN",
            _ => "FAIL",
        };
        println!("[{mark}] {:<24} {}", c.check, c.detail);
        if !c.fix.is_empty() {
            println!("       fix: {}", c.fix);
        }
    }
}
