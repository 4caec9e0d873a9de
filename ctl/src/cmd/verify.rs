//! `lanspreadctl verify ID [--repair]`: rehash a downloaded game against
//! the manifest its peers offer (or the daemon's own), list every file
//! that differs, and with `--repair` fetch just the bad chunks again.
//! Exits 0 when the game is clean (or was fully repaired), 1 otherwise.

use std::time::{Duration, Instant};

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::model::GameId;

use crate::format::{print_json, size, table};
use crate::{Failure, Output};

/// Least time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub async fn run(
    client: &mut IpcClient,
    socket: &std::path::Path,
    output: Output,
    id: &str,
    repair: bool,
) -> Result<(), Failure> {
    let id = GameId::new(id).map_err(|err| Failure::Usage(err.to_string()))?;
    // Subscribe first on a second connection, so no event is missed.
    let mut events = IpcClient::connect(socket).await?;
    events.subscribe().await?;
    client.verify(&id, repair).await?;
    let mut last_line: Option<Instant> = None;
    loop {
        let message = events.next_event().await?;
        match &message.event {
            PeerEvent::VerifyGameBegin {
                id: event_id,
                peers,
            } if *event_id == id && !output.json => {
                if *peers == 0 {
                    eprintln!(
                        "{id}: no peer holds this version; checking against this host's own hashes (finds only changes that kept size and mtime)"
                    );
                } else {
                    eprintln!("{id}: checking against the manifest of {peers} peers");
                }
            }
            PeerEvent::VerifyGameProgress {
                id: event_id,
                bytes_done,
                bytes_total,
            } if *event_id == id
                && !output.json
                && last_line.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) =>
            {
                last_line = Some(Instant::now());
                eprintln!(
                    "{id}: checked {} of {}",
                    size(*bytes_done),
                    size(*bytes_total)
                );
            }
            PeerEvent::VerifyGameFailed {
                id: event_id,
                reason,
            } if *event_id == id => {
                return Err(Failure::Operation(format!(
                    "verify of {id} failed: {reason}"
                )));
            }
            PeerEvent::VerifyGameFinished {
                id: event_id,
                bytes,
                differing,
                repaired_chunks,
            } if *event_id == id => {
                let unrepaired = differing.iter().filter(|d| !d.repaired).count();
                if output.json {
                    print_json(&message);
                } else if differing.is_empty() {
                    println!("{id}: clean ({} checked)", size(*bytes));
                } else {
                    let rows: Vec<Vec<String>> = differing
                        .iter()
                        .map(|d| {
                            vec![
                                d.relative_path.clone(),
                                d.problem.clone(),
                                d.bad_chunks.len().to_string(),
                                if d.repaired { "yes" } else { "no" }.into(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["FILE", "PROBLEM", "BAD CHUNKS", "REPAIRED"], &rows)
                    );
                    println!(
                        "{id}: {} files differ; {repaired_chunks} chunks fetched again",
                        differing.len()
                    );
                }
                if unrepaired > 0 {
                    let hint = if repair {
                        "no peer could supply every bad chunk"
                    } else {
                        "run `lanspreadctl verify --repair` to fetch the bad chunks again"
                    };
                    return Err(Failure::Operation(format!(
                        "{unrepaired} files of {id} differ: {hint}"
                    )));
                }
                return Ok(());
            }
            _ => {}
        }
    }
}
