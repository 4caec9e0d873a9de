//! `lanspreadctl get|download|update|install|uninstall|cancel ID`: act on
//! one game. `download` and `update` wait for the outcome with a progress
//! bar (plain lines when stderr is not a terminal) and exit 0 only when the
//! download finished.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{GameFilesResult, PeerEvent};
use lanspread_proto::model::GameId;

use crate::format::{print_json, rate, size, table};
use crate::{Failure, Output};

/// Least time between two plain progress lines.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Which operation.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Get,
    Download,
    Update,
    Install,
    Uninstall,
    Cancel,
}

pub async fn run(
    client: &mut IpcClient,
    socket: &std::path::Path,
    output: Output,
    kind: Kind,
    id: &str,
    wait: bool,
) -> Result<(), Failure> {
    let id = GameId::new(id).map_err(|err| Failure::Usage(err.to_string()))?;
    match kind {
        Kind::Get => {
            let mut events = IpcClient::connect(socket).await?;
            events.subscribe().await?;
            let files = fetch_files(client, &mut events, kind, &id, output).await?;
            print_files(client, &files, output).await
        }
        Kind::Download | Kind::Update => download(client, socket, output, kind, id, wait).await,
        Kind::Install | Kind::Uninstall => install(client, socket, output, kind, id).await,
        Kind::Cancel => {
            let result = client.cancel_download(&id).await?;
            if output.json {
                print_json(&result);
            } else {
                println!("cancelling");
            }
            Ok(())
        }
    }
}

/// `GetGame` (or `FetchLatestFromPeers` for an update), reporting on
/// stderr while a peer is still preparing the file list. `events` must be
/// subscribed already.
async fn fetch_files(
    client: &mut IpcClient,
    events: &mut IpcClient,
    kind: Kind,
    id: &GameId,
    output: Output,
) -> Result<GameFilesResult, Failure> {
    let ask = async {
        match kind {
            Kind::Update => client.fetch_latest(id).await,
            _ => client.get_game(id).await,
        }
    };
    tokio::pin!(ask);
    let mut last_line: Option<Instant> = None;
    loop {
        tokio::select! {
            result = &mut ask => return Ok(result?),
            event = events.next_event() => {
                if let PeerEvent::PreparingGameFiles { id: ref event_id, ref peer_name, bytes_done, bytes_total, .. } = event?.event
                    && event_id == id
                    && !output.json
                    && last_line.is_none_or(|at| at.elapsed() >= PLAIN_PROGRESS_EVERY)
                {
                    last_line = Some(Instant::now());
                    let percent = lanspread_proto::model::Preparing { bytes_done, bytes_total }.percent();
                    eprintln!("waiting for {peer_name} to prepare the file list: {percent} %");
                }
            }
        }
    }
}

/// The summary of a file list and, page by page, its entries.
async fn print_files(
    client: &mut IpcClient,
    files: &GameFilesResult,
    output: Output,
) -> Result<(), Failure> {
    if output.json {
        print_json(files);
        return Ok(());
    }
    println!(
        "{} {}: {} entries, {}, from {} peer{}",
        files.id,
        files.version,
        files.files,
        size(files.bytes),
        files.peers,
        if files.peers == 1 { "" } else { "s" }
    );
    let rows: Vec<Vec<String>> = client
        .game_files(&files.id)
        .await?
        .iter()
        .filter(|f| !f.is_dir)
        .map(|f| vec![f.relative_path.clone(), size(f.size)])
        .collect();
    print!("{}", table(&["FILE", "SIZE"], &rows));
    Ok(())
}

async fn download(
    client: &mut IpcClient,
    socket: &std::path::Path,
    output: Output,
    kind: Kind,
    id: GameId,
    wait: bool,
) -> Result<(), Failure> {
    // Subscribe first on a second connection, so no event is missed.
    let mut events = IpcClient::connect(socket).await?;
    events.subscribe().await?;
    let files = fetch_files(client, &mut events, kind, &id, output).await?;
    let started = client.download(&id, Vec::new()).await?;
    if !wait {
        if output.json {
            print_json(&started);
        } else {
            println!(
                "downloading {} {} ({}, {} files) from {} peers",
                id,
                files.version,
                size(started.bytes),
                started.files,
                files.peers
            );
        }
        return Ok(());
    }
    let mut progress = Progress::new(&id, started.bytes, output);
    loop {
        let message = events.next_event().await?;
        match message.event {
            PeerEvent::DownloadGameFilesProgress {
                id: ref event_id,
                bytes_done,
                bytes_total,
                rate,
                peers,
                bytes_from_downloaders,
                bytes_reused,
                ..
            } if *event_id == id => progress.update(
                bytes_done,
                bytes_total,
                rate,
                peers,
                (bytes_reused, bytes_from_downloaders),
            ),
            PeerEvent::DownloadGameFilesFinished {
                id: ref event_id,
                bytes,
                millis,
                chunks_resumed,
                bytes_from_seeders,
                bytes_from_downloaders,
                bytes_reused,
                ..
            } if *event_id == id => {
                progress.finish();
                if output.json {
                    print_json(&message);
                } else {
                    let secs = (millis as f64 / 1000.0).max(0.001);
                    let resumed = if chunks_resumed > 0 {
                        format!(", {chunks_resumed} chunks resumed")
                    } else {
                        String::new()
                    };
                    println!(
                        "downloaded {id} {} ({}) in {secs:.1} s, {}{resumed}; {} already on disk, {} fetched: {} from complete holders, {} from other downloaders",
                        files.version,
                        size(bytes),
                        rate((bytes as f64 / secs) as u64),
                        size(bytes_reused),
                        size(bytes_from_seeders + bytes_from_downloaders),
                        size(bytes_from_seeders),
                        size(bytes_from_downloaders),
                    );
                }
                return Ok(());
            }
            PeerEvent::DownloadGameFilesFailed {
                id: ref event_id,
                ref reason,
            } if *event_id == id => {
                progress.finish();
                return Err(Failure::Operation(format!(
                    "download of {id} failed: {reason}"
                )));
            }
            PeerEvent::DownloadGameFilesCancelled { id: ref event_id } if *event_id == id => {
                progress.finish();
                return Err(Failure::Operation(format!(
                    "download of {id} was cancelled"
                )));
            }
            _ => {}
        }
    }
}

/// `install` / `uninstall`: start it and wait for the outcome, showing
/// extraction progress.
async fn install(
    client: &mut IpcClient,
    socket: &std::path::Path,
    output: Output,
    kind: Kind,
    id: GameId,
) -> Result<(), Failure> {
    let mut events = IpcClient::connect(socket).await?;
    events.subscribe().await?;
    let installing = matches!(kind, Kind::Install);
    if installing {
        client.install(&id).await?;
    } else {
        client.uninstall(&id).await?;
    }
    // Extraction has no known total: a spinner on a terminal, plain lines
    // (at most one a second) elsewhere, nothing with --json.
    let spinner = (!output.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar.set_message(format!("{id}: starting"));
        bar
    });
    let mut last_line: Option<Instant> = None;
    loop {
        let message = events.next_event().await?;
        let (done, failed) = match &message.event {
            PeerEvent::InstallGameProgress {
                id: event_id,
                entries,
                bytes,
            } if *event_id == id => {
                let line = format!("{id}: extracted {entries} entries, {}", size(*bytes));
                match &spinner {
                    Some(bar) => bar.set_message(line),
                    None if !output.json
                        && last_line.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY) =>
                    {
                        last_line = Some(Instant::now());
                        eprintln!("{line}");
                    }
                    None => {}
                }
                (false, None)
            }
            PeerEvent::InstallGameFinished { id: event_id } if installing && *event_id == id => {
                (true, None)
            }
            PeerEvent::UninstallGameFinished { id: event_id } if !installing && *event_id == id => {
                (true, None)
            }
            PeerEvent::InstallGameFailed {
                id: event_id,
                reason,
            } if installing && *event_id == id => {
                (true, Some(format!("install of {id} failed: {reason}")))
            }
            PeerEvent::UninstallGameFailed {
                id: event_id,
                reason,
            } if !installing && *event_id == id => {
                (true, Some(format!("uninstall of {id} failed: {reason}")))
            }
            _ => (false, None),
        };
        if done && let Some(bar) = &spinner {
            bar.finish_and_clear();
        }
        if let Some(reason) = failed {
            return Err(Failure::Operation(reason));
        }
        if done {
            if output.json {
                print_json(&message);
            } else if installing {
                println!("installed {id}");
            } else {
                println!("uninstalled {id} (its archives stay)");
            }
            return Ok(());
        }
    }
}

/// A progress bar on a terminal, plain lines elsewhere, nothing with
/// `--json`.
enum Progress {
    Bar(ProgressBar),
    Plain { id: String, last: Option<Instant> },
    Quiet,
}

impl Progress {
    fn new(id: &GameId, total: u64, output: Output) -> Self {
        if output.json {
            return Self::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(id.to_string());
            Self::Bar(bar)
        } else {
            Self::Plain {
                id: id.to_string(),
                last: None,
            }
        }
    }

    /// `from_downloaders`: bytes so far from peers downloading it too.
    fn update(
        &mut self,
        done: u64,
        total: u64,
        bytes_per_sec: u64,
        peers: u32,
        (reused, from_downloaders): (u64, u64),
    ) {
        match self {
            Self::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!(
                    "{peers} peers, {} already on disk, {} from downloaders",
                    size(reused),
                    size(from_downloaders)
                ));
            }
            Self::Plain { id, last } => {
                if last.is_some_and(|t| t.elapsed() < PLAIN_PROGRESS_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                let percent = done as f64 * 100.0 / total.max(1) as f64;
                eprintln!(
                    "{id}: {percent:.0}% ({} of {}) at {} from {peers} peers ({} already on disk, {} from other downloaders)",
                    size(done),
                    size(total),
                    rate(bytes_per_sec),
                    size(reused),
                    size(from_downloaders)
                );
            }
            Self::Quiet => {}
        }
    }

    fn finish(&mut self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
