//! `lanspread-proto`: every type that crosses one of lanspread's process
//! boundaries.
//!
//! - [`model`]: the shared vocabulary (game ids, versions, summaries, file
//!   manifests, peers).
//! - [`wire`]: the peer-to-peer protocol spoken over QUIC.
//! - [`ipc`]: the newline-JSON protocol between `lanspreadd` and its clients.
//! - `client` (feature `client`): the typed IPC client shared by
//!   `lanspreadctl` and the tests.
//!
//! Without the `client` feature this crate does no I/O: it only describes
//! messages and the pure rules over them (id validation, version ordering).

pub mod ipc;
pub mod model;
pub mod wire;

#[cfg(feature = "client")]
pub mod client;
