//! Tells the service manager how the daemon is doing: READY once the
//! socket accepts clients, then a one-line STATUS whenever the library or
//! the peer count changes (`systemctl status lanspreadd` shows it). A
//! no-op outside systemd (no `NOTIFY_SOCKET`).

/// Readiness, once.
pub fn ready() {
    if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(cause = %err, "cannot notify the service manager of readiness");
    }
}

/// The current one-line status.
pub fn status(games: usize, peers: u32) {
    let line = format!("{games} local games, {peers} peers");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&line)]);
}
