//! `lanspreadctl peers`: every peer the daemon knows (discovered,
//! connected, lost), where it answers, how fast, and when it last did.

use lanspread_proto::client::IpcClient;
use lanspread_proto::model::{KnownPeer, PeerState};

use crate::format::{duration, print_json, table};
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output) -> Result<(), Failure> {
    let peers = client.list_peers().await?;
    if output.json {
        print_json(&peers);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = peers.iter().map(row).collect();
    print!(
        "{}",
        table(
            &[
                "PEER ID",
                "NAME",
                "STATE",
                "ADDRESS",
                "RTT",
                "LAST SEEN",
                "GAMES",
                "TRIED"
            ],
            &rows
        )
    );
    Ok(())
}

fn row(peer: &KnownPeer) -> Vec<String> {
    let dash = || "-".to_owned();
    let state = match peer.state {
        PeerState::Discovered => "discovered",
        PeerState::Connected => "connected",
        PeerState::Lost => "lost",
    };
    // The other addresses mDNS gave (the one in use has its own column).
    let tried: Vec<&str> = peer
        .addresses
        .iter()
        .map(String::as_str)
        .filter(|a| Some(*a) != peer.address.as_deref())
        .collect();
    vec![
        peer.peer_id.clone(),
        peer.name.clone(),
        state.to_owned(),
        peer.address.clone().unwrap_or_else(dash),
        peer.rtt_us.map_or_else(dash, rtt),
        peer.last_seen_secs
            .map_or_else(|| "never".to_owned(), |s| format!("{} ago", duration(s))),
        peer.games.to_string(),
        if tried.is_empty() {
            dash()
        } else {
            tried.join(" ")
        },
    ]
}

/// A round-trip time in microseconds as `0.42 ms` / `12 ms`.
fn rtt(us: u64) -> String {
    if us < 10_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{} ms", us / 1000)
    }
}
