//! Who this daemon is: fixed for its lifetime, shared by the core, the
//! IPC connections (hello) and the peer runtime (announcements). A leaf.

/// Fixed facts about this daemon.
#[derive(Debug)]
pub struct Identity {
    /// Stable id, kept in the state dir; peers and clients know us by it.
    pub peer_id: String,
    /// Name announced to peers and shown in `status`.
    pub name: String,
    pub daemon_version: &'static str,
}
