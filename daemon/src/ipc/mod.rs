//! The IPC server: the local socket clients use to drive the daemon
//! (`docs/ipc.md`).
//!
//! The only module that knows `interprocess`. It turns lines into
//! [`PeerCommand`](lanspread_proto::ipc::PeerCommand)s for the core and the
//! core's outcomes and events back into lines; it holds no daemon state.

mod access;
mod connection;
mod server;

pub use access::AccessPolicy;
pub use server::{BindError, IpcServer};
