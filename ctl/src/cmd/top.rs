//! `lanspreadctl top`: a live terminal view for whoever runs the LAN
//! party: the peers and their state, every running download (progress,
//! rate, sources), install and verify, and the limits. Refreshed from the
//! event stream only (no polling); `q` (or Esc, Ctrl-C) quits.
//!
//! What the daemon does not report yet is shown as such: peers' round-trip
//! times, bytes per source, and who is being served.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{PeerEvent, UploadPeer};
use lanspread_proto::model::{DaemonStatus, KnownPeer, PeerInfo, PeerState};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};

use crate::cmd::limits::limit;
use crate::format::{rate, size};
use crate::{Failure, Output};

/// Recent events kept for the bottom pane.
const RECENT_EVENTS: usize = 6;

pub async fn run(
    client: &mut IpcClient,
    socket: &std::path::Path,
    output: Output,
) -> Result<(), Failure> {
    if output.json {
        return Err(Failure::Usage(
            "top is for terminals; use `lanspreadctl --json events` for a machine-readable stream"
                .into(),
        ));
    }
    if !std::io::stdout().is_terminal() {
        return Err(Failure::Usage("top needs a terminal".into()));
    }
    let mut events = IpcClient::connect(socket).await?;
    events.subscribe().await?;
    let mut view = View::new(client.status().await?, client.list_peers().await?);
    // Keys come from a thread blocked on the terminal.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if keys_tx.blocking_send(event).is_err() {
                break;
            }
        }
    });
    let mut terminal = ratatui::init();
    let outcome = loop {
        if let Err(err) = terminal.draw(|frame| view.render(frame)) {
            break Err(Failure::Operation(format!("cannot draw: {err}")));
        }
        tokio::select! {
            key = keys.recv() => match key {
                Some(Event::Key(key)) if key.kind == KeyEventKind::Press && is_quit(key.code, key.modifiers) => break Ok(()),
                Some(_) => {}
                None => break Ok(()),
            },
            message = events.next_event() => match message {
                Ok(message) => view.apply(message.event),
                Err(err) => break Err(Failure::Client(err)),
            },
        }
    };
    restore(&mut terminal);
    outcome
}

fn is_quit(code: KeyCode, modifiers: KeyModifiers) -> bool {
    matches!(code, KeyCode::Char('q') | KeyCode::Esc)
        || (code == KeyCode::Char('c') && modifiers.contains(KeyModifiers::CONTROL))
}

fn restore(terminal: &mut DefaultTerminal) {
    let _ = terminal.show_cursor();
    ratatui::restore();
}

/// One operation on a game, as the events tell it.
#[derive(Debug, Default)]
struct Operation {
    kind: &'static str,
    done: u64,
    total: u64,
    rate: u64,
    sources: u32,
    /// Bytes from complete holders and from other downloaders.
    from_kinds: (u64, u64),
    state: String,
}

/// What the screen shows, built from the first answers and then events.
#[derive(Debug)]
struct View {
    status: DaemonStatus,
    peers: BTreeMap<String, (PeerInfo, &'static str)>,
    operations: BTreeMap<String, Operation>,
    recent: VecDeque<String>,
    /// Round-trip time per peer id, in microseconds.
    rtt: BTreeMap<String, u64>,
    /// Who this daemon is sending chunks to, and how fast.
    uploads: Vec<UploadPeer>,
}

impl View {
    fn new(status: DaemonStatus, peers: Vec<KnownPeer>) -> Self {
        let rtt = peers
            .iter()
            .filter_map(|p| Some((p.peer_id.clone(), p.rtt_us?)))
            .collect();
        Self {
            rtt,
            uploads: Vec::new(),
            status,
            peers: peers
                .into_iter()
                .map(|p| {
                    let state = match p.state {
                        PeerState::Discovered => "discovered",
                        PeerState::Connected => "connected",
                        PeerState::Lost => "lost",
                    };
                    let address = p
                        .address
                        .or_else(|| p.addresses.first().cloned())
                        .unwrap_or_default();
                    let info = PeerInfo {
                        peer_id: p.peer_id.clone(),
                        name: p.name,
                        address,
                    };
                    (p.peer_id, (info, state))
                })
                .collect(),
            operations: BTreeMap::new(),
            recent: VecDeque::new(),
        }
    }

    fn operation(&mut self, id: &impl ToString, kind: &'static str) -> &mut Operation {
        let operation = self.operations.entry(id.to_string()).or_default();
        if operation.kind != kind {
            *operation = Operation {
                kind,
                state: "starting".into(),
                ..Operation::default()
            };
        }
        operation
    }

    fn apply(&mut self, event: PeerEvent) {
        let note = match &event {
            PeerEvent::LibrarySnapshot { .. } | PeerEvent::GotGameFiles { .. } => None,
            PeerEvent::DownloadGameFilesProgress { .. }
            | PeerEvent::Uploading { .. }
            | PeerEvent::PeerRtt { .. }
            | PeerEvent::InstallGameProgress { .. }
            | PeerEvent::VerifyGameProgress { .. } => None,
            other => serde_json::to_value(other).ok().and_then(|v| {
                Some(format!(
                    "{} {}",
                    v["type"].as_str()?,
                    v.get("id")
                        .or(v.get("peer_id"))
                        .and_then(|i| i.as_str())
                        .unwrap_or("")
                ))
            }),
        };
        if let Some(note) = note {
            self.recent.push_front(note.trim().to_owned());
            self.recent.truncate(RECENT_EVENTS);
        }
        match event {
            PeerEvent::PeerDiscovered { peer } => {
                self.peers
                    .entry(peer.peer_id.clone())
                    .or_insert((peer, "discovered"));
            }
            PeerEvent::PeerConnected { peer } => {
                self.peers.insert(peer.peer_id.clone(), (peer, "connected"));
            }
            PeerEvent::PeerLost { peer_id } => {
                if let Some(entry) = self.peers.get_mut(&peer_id) {
                    entry.1 = "lost";
                }
            }
            PeerEvent::PeerCountChanged { count } => self.status.peer_count = count,
            PeerEvent::DownloadGameFilesBegin { id } => {
                self.operation(&id, "download").state = "running".into();
            }
            PeerEvent::DownloadGameFilesProgress {
                id,
                bytes_done,
                bytes_total,
                rate,
                peers,
                bytes_from_seeders,
                bytes_from_downloaders,
                ..
            } => {
                let op = self.operation(&id, "download");
                (op.done, op.total, op.rate, op.sources) = (bytes_done, bytes_total, rate, peers);
                op.from_kinds = (bytes_from_seeders, bytes_from_downloaders);
                op.state = "running".into();
            }
            PeerEvent::DownloadGameFilesFinished { id, bytes, .. } => {
                let op = self.operation(&id, "download");
                (op.done, op.total, op.rate, op.sources) = (bytes, bytes, 0, 0);
                op.state = "finished".into();
            }
            PeerEvent::DownloadGameFilesFailed { id, reason } => {
                self.operation(&id, "download").state = format!("failed: {reason}");
            }
            PeerEvent::DownloadGameFilesCancelled { id } => {
                self.operation(&id, "download").state = "cancelled".into();
            }
            PeerEvent::InstallGameBegin { id } => {
                self.operation(&id, "install").state = "extracting".into();
            }
            PeerEvent::InstallGameProgress { id, bytes, .. } => {
                self.operation(&id, "install").done = bytes;
            }
            PeerEvent::InstallGameFinished { id } => {
                self.operation(&id, "install").state = "installed".into();
            }
            PeerEvent::InstallGameSkipped { id, .. } => {
                self.operation(&id, "install").state = "nothing to install".into();
            }
            PeerEvent::PreparingGameFiles {
                id,
                peer_name,
                bytes_done,
                bytes_total,
                ..
            } => {
                let percent = lanspread_proto::model::Preparing {
                    bytes_done,
                    bytes_total,
                }
                .percent();
                self.operation(&id, "file list").state =
                    format!("waiting for {peer_name} to prepare it: {percent} %");
            }
            PeerEvent::InstallGameFailed { id, reason } => {
                self.operation(&id, "install").state = format!("failed: {reason}");
            }
            PeerEvent::UninstallGameBegin { id } => {
                self.operation(&id, "uninstall").state = "running".into();
            }
            PeerEvent::UninstallGameFinished { id } => {
                self.operation(&id, "uninstall").state = "uninstalled".into();
            }
            PeerEvent::UninstallGameFailed { id, reason } => {
                self.operation(&id, "uninstall").state = format!("failed: {reason}");
            }
            PeerEvent::VerifyGameBegin { id, peers } => {
                let op = self.operation(&id, "verify");
                op.sources = peers;
                op.state = "hashing".into();
            }
            PeerEvent::VerifyGameProgress {
                id,
                bytes_done,
                bytes_total,
            } => {
                let op = self.operation(&id, "verify");
                (op.done, op.total) = (bytes_done, bytes_total);
            }
            PeerEvent::VerifyGameFinished { id, differing, .. } => {
                self.operation(&id, "verify").state = if differing.is_empty() {
                    "clean".into()
                } else {
                    format!("{} files differ", differing.len())
                };
            }
            PeerEvent::VerifyGameFailed { id, reason } => {
                self.operation(&id, "verify").state = format!("failed: {reason}");
            }
            PeerEvent::Uploading { peers } => self.uploads = peers,
            PeerEvent::PeerRtt { peer_id, rtt_us } => {
                self.rtt.insert(peer_id, rtt_us);
            }
            PeerEvent::LibrarySnapshot { .. }
            | PeerEvent::GameDirChanged { .. }
            | PeerEvent::GotGameFiles { .. }
            | PeerEvent::NoPeersHaveGame { .. }
            | PeerEvent::RuntimeFailed { .. } => {}
        }
    }

    fn render(&self, frame: &mut Frame) {
        let [head, peers, operations, recent] = Layout::vertical([
            Constraint::Length(4),
            Constraint::Min(4),
            Constraint::Min(4),
            Constraint::Length(RECENT_EVENTS as u16 + 2),
        ])
        .areas(frame.area());
        let game_dir = self
            .status
            .game_dir
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(not set)".into());
        let header = Paragraph::new(vec![
            Line::from(format!(
                "{}  {}  game dir {}  {} peers",
                self.status.name, self.status.peer_id, game_dir, self.status.peer_count
            )),
            Line::from(format!(
                "limits: upload {}, download {}   serving: {}",
                limit(self.status.limits.upload),
                limit(self.status.limits.download),
                if self.uploads.is_empty() {
                    "nobody".to_owned()
                } else {
                    self.uploads
                        .iter()
                        .map(|u| format!("{} {}", u.name, rate(u.rate)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
        ])
        .block(Block::bordered().title(" lanspread top — q quits "));
        frame.render_widget(header, head);

        let bold = Style::default().add_modifier(Modifier::BOLD);
        let rows = self.peers.values().map(|(peer, state)| {
            let rtt = self
                .rtt
                .get(&peer.peer_id)
                .map_or_else(|| "-".into(), |us| format!("{:.2} ms", *us as f64 / 1000.0));
            Row::new(vec![
                peer.name.clone(),
                peer.address.clone(),
                (*state).to_owned(),
                rtt,
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Percentage(30),
                Constraint::Percentage(30),
                Constraint::Percentage(20),
                Constraint::Percentage(20),
            ],
        )
        .header(Row::new(["PEER", "ADDRESS", "STATE", "RTT"]).style(bold))
        .block(Block::bordered().title(" peers (RTT: not reported by the daemon yet) "));
        frame.render_widget(table, peers);

        let rows = self.operations.iter().map(|(id, op)| {
            let progress = if op.total > 0 {
                format!(
                    "{:.0}% {} of {}",
                    op.done as f64 * 100.0 / op.total as f64,
                    size(op.done),
                    size(op.total)
                )
            } else if op.done > 0 {
                size(op.done)
            } else {
                String::new()
            };
            let speed = if op.kind == "download" && op.rate > 0 {
                rate(op.rate)
            } else {
                String::new()
            };
            let sources = if op.kind == "download" {
                format!(
                    "{} peers: {} complete / {} dl",
                    op.sources,
                    size(op.from_kinds.0),
                    size(op.from_kinds.1)
                )
            } else if op.kind == "verify" {
                format!("{} peers", op.sources)
            } else {
                String::new()
            };
            Row::new(vec![
                id.clone(),
                op.kind.to_owned(),
                progress,
                speed,
                sources,
                op.state.clone(),
            ])
        });
        let table = Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(10),
                Constraint::Length(28),
                Constraint::Length(14),
                Constraint::Length(34),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["GAME", "OPERATION", "PROGRESS", "RATE", "SOURCES", "STATE"]).style(bold))
        .block(Block::bordered().title(" downloads, installs, verifies "));
        frame.render_widget(table, operations);

        let lines: Vec<Line> = self.recent.iter().map(|e| Line::from(e.clone())).collect();
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" recent events ")),
            recent,
        );
    }
}
