//! One client connection: hello, requests in order, pushed events, and the
//! rules that keep one bad client from costing anyone else anything.
//!
//! - Lines over [`MAX_LINE_BYTES`] are answered with `line_too_long` and
//!   skipped; the connection lives on.
//! - Every write has a deadline ([`WRITE_TIMEOUT`]): a client that stops
//!   reading is dropped, never waited on.
//! - A subscriber more than `EVENT_BUFFER` events behind is dropped with a
//!   `closing` line saying so; the core never waits for it.

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use interprocess::local_socket::tokio::{Stream, prelude::*};
use lanspread_proto::ipc::{
    Access, ClientRequest, CommandResult, ErrorCode, EventMessage, Hello, IpcError, MAX_LINE_BYTES,
    Outcome, PROTOCOL_VERSION, PeerCommand, Reply, ServerMessage,
};
use tokio::sync::broadcast;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::access::AccessPolicy;
use crate::core::{CommandOutcome, CoreHandle};
use crate::error_chain::err_chain;
use crate::identity::Identity;

/// Longest a single write to a client may take before the client is
/// considered gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection shares.
#[derive(Debug)]
pub struct ConnectionContext {
    pub core: CoreHandle,
    pub identity: Arc<Identity>,
    pub policy: AccessPolicy,
}

/// An accepted client.
#[derive(Debug)]
pub struct Connection {
    framed: Framed<Stream, LinesCodec>,
    context: Arc<ConnectionContext>,
    shutdown: CancellationToken,
    access: Access,
    /// Client pid, for logs.
    pid: Option<i32>,
    /// Live events, once the client subscribed.
    events: Option<broadcast::Receiver<EventMessage>>,
}

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("connection failed")]
    Io(#[source] std::io::Error),
    #[error("client did not read for {WRITE_TIMEOUT:?}")]
    WriteTimeout,
    #[error("subscriber fell {0} events behind")]
    Lagged(u64),
    #[error("daemon shutting down")]
    Shutdown,
}

impl Connection {
    pub fn new(
        stream: Stream,
        context: Arc<ConnectionContext>,
        shutdown: CancellationToken,
    ) -> Self {
        let (access, pid) = client_access(&stream, &context.policy);
        Self {
            framed: Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES)),
            context,
            shutdown,
            access,
            pid,
            events: None,
        }
    }

    /// Tells the client it cannot be served and closes.
    pub async fn refuse(mut self, reason: &'static str) {
        tracing::warn!(reason, "ipc client refused");
        let _ = self
            .send(&ServerMessage::Closing {
                reason: reason.into(),
            })
            .await;
    }

    /// Serves the client until it leaves, misbehaves or the daemon stops.
    pub async fn serve(mut self) {
        let span = tracing::info_span!("ipc", pid = self.pid, access = ?self.access);
        async move {
            tracing::debug!("client connected");
            let ended = self.run().await;
            if let Ended::Shutdown = ended {
                let _ = self
                    .send(&ServerMessage::Closing {
                        reason: ended.to_string(),
                    })
                    .await;
            }
            match ended {
                Ended::ClientClosed | Ended::Shutdown => {
                    tracing::debug!(reason = %ended, "client disconnected")
                }
                Ended::Lagged(_) | Ended::WriteTimeout | Ended::Io(_) => {
                    tracing::warn!(reason = %err_chain(&ended), "client dropped")
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn run(&mut self) -> Ended {
        let hello = ServerMessage::Hello(Hello {
            daemon_version: self.context.identity.daemon_version.to_owned(),
            protocol: PROTOCOL_VERSION,
            peer_id: self.context.identity.peer_id.clone(),
            access: self.access,
        });
        if let Err(ended) = self.send(&hello).await {
            return ended;
        }
        // Framed yields `None` once right after a decode error, then
        // resumes; only a `None` that does not follow an error is EOF.
        let mut after_error = false;
        loop {
            let result = tokio::select! {
                () = self.shutdown.cancelled() => Err(Ended::Shutdown),
                line = self.framed.next() => match line {
                    None if after_error => { after_error = false; Ok(()) }
                    None => Err(Ended::ClientClosed),
                    // The codec consumed the line before finding it is not UTF-8.
                    Some(Err(LinesCodecError::Io(err))) if err.kind() == std::io::ErrorKind::InvalidData => {
                        after_error = true;
                        self.reply(None, Err(IpcError::new(
                            ErrorCode::MalformedJson,
                            "line is not UTF-8, skipped",
                        ))).await
                    }
                    Some(Err(LinesCodecError::Io(err))) => Err(Ended::Io(err)),
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        after_error = true;
                        self.reply(None, Err(IpcError::new(
                            ErrorCode::LineTooLong,
                            format!("line longer than {MAX_LINE_BYTES} bytes, skipped"),
                        ))).await
                    }
                    Some(Ok(line)) => { after_error = false; self.on_line(&line).await }
                },
                event = next_event(&mut self.events) => match event {
                    Ok(event) => self.send(&ServerMessage::Event(event)).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let ended = Ended::Lagged(missed);
                        let _ = self.send(&ServerMessage::Closing { reason: ended.to_string() }).await;
                        Err(ended)
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(Ended::Shutdown),
                },
            };
            if let Err(ended) = result {
                return ended;
            }
        }
    }

    async fn on_line(&mut self, line: &str) -> Result<(), Ended> {
        let (id, command) = match parse_request(line) {
            Ok(request) => (Some(request.id), request.command),
            Err((id, err)) => return self.reply(id, Err(err)).await,
        };
        if self.access == Access::ReadOnly && !command.is_read_only() {
            let err = IpcError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "{} needs operator access: run as root, as the daemon's user, or as a member of its operator group",
                    command.name()
                ),
            );
            return self.reply(id, Err(err)).await;
        }
        tracing::debug!(command = command.name(), "request");
        match self.context.core.command(command).await {
            CommandOutcome::Reply(result) => self.reply(id, result).await,
            CommandOutcome::Subscribed {
                result,
                snapshot,
                events,
            } => {
                self.reply(id, Ok(CommandResult::Subscribed(result)))
                    .await?;
                self.events = Some(events);
                self.send(&ServerMessage::Event(snapshot)).await
            }
        }
    }

    async fn reply(
        &mut self,
        id: Option<u64>,
        result: Result<CommandResult, IpcError>,
    ) -> Result<(), Ended> {
        // The one place a command's typed result becomes JSON.
        let outcome = match result.map(serde_json::to_value) {
            Ok(Ok(value)) => Outcome::Result(value),
            Ok(Err(err)) => Outcome::Error(IpcError::new(
                ErrorCode::Internal,
                format!("cannot encode the result: {err}"),
            )),
            Err(err) => Outcome::Error(err),
        };
        self.send(&ServerMessage::Reply(Reply { id, outcome }))
            .await
    }

    async fn send(&mut self, message: &ServerMessage) -> Result<(), Ended> {
        // Every line fits the limit by construction (lists that grow with
        // a game are paged); should one not, the client gets an error
        // instead of a line it would have to refuse.
        let line = match message.encode() {
            Ok(line) => line,
            Err(too_long) => {
                tracing::error!(cause = %too_long, "a message does not fit in one line");
                let id = match message {
                    ServerMessage::Reply(reply) => reply.id,
                    _ => return Ok(()),
                };
                let error = ServerMessage::Reply(Reply {
                    id,
                    outcome: Outcome::Error(IpcError::new(
                        ErrorCode::Internal,
                        too_long.to_string(),
                    )),
                });
                error.encode().expect("an error reply is short")
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, self.framed.send(line)).await {
            Err(_) => Err(Ended::WriteTimeout),
            Ok(Err(LinesCodecError::Io(err))) => Err(Ended::Io(err)),
            Ok(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                unreachable!("the lines encoder has no length limit")
            }
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// The client's access level and pid, from its socket credentials.
#[cfg(unix)]
fn client_access(stream: &Stream, policy: &AccessPolicy) -> (Access, Option<i32>) {
    match stream.peer_creds() {
        Ok(creds) => (policy.decide(creds.euid(), creds.egid()), creds.pid()),
        Err(err) => {
            tracing::warn!(cause = %err, "cannot read ipc client credentials; read-only");
            (Access::ReadOnly, None)
        }
    }
}

/// On Windows the pipe's security descriptor decides who may connect.
#[cfg(not(unix))]
fn client_access(_stream: &Stream, _policy: &AccessPolicy) -> (Access, Option<i32>) {
    (Access::Operator, None)
}

async fn next_event(
    events: &mut Option<broadcast::Receiver<EventMessage>>,
) -> Result<EventMessage, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => pending().await,
    }
}

/// Parses one request line, or says precisely what is wrong with it (and
/// the request id, when the line got far enough to carry one).
fn parse_request(line: &str) -> Result<ClientRequest, (Option<u64>, IpcError)> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|err| {
        (
            None,
            IpcError::new(ErrorCode::MalformedJson, format!("not JSON: {err}")),
        )
    })?;
    let id = value.get("id").and_then(serde_json::Value::as_u64);
    let command_type = value
        .get("command")
        .and_then(|c| c.get("type"))
        .and_then(serde_json::Value::as_str);
    if let Some(name) = command_type
        && !PeerCommand::NAMES.contains(&name)
    {
        return Err((
            id,
            IpcError::new(
                ErrorCode::UnknownCommand,
                format!("unknown command {name:?}"),
            ),
        ));
    }
    serde_json::from_value(value).map_err(|err| {
        (
            id,
            IpcError::new(ErrorCode::InvalidRequest, format!("invalid request: {err}")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(line: &str) -> (Option<u64>, ErrorCode) {
        let (id, err) = parse_request(line).unwrap_err();
        (id, err.code)
    }

    #[test]
    fn each_kind_of_bad_line_gets_its_own_code() {
        assert_eq!(code("{"), (None, ErrorCode::MalformedJson));
        assert_eq!(code("nonsense"), (None, ErrorCode::MalformedJson));
        assert_eq!(
            code(r#"{"id":4,"command":{"type":"FormatDisk"}}"#),
            (Some(4), ErrorCode::UnknownCommand)
        );
        assert_eq!(
            code(r#"{"id":5,"command":{"type":"SetGameDir"}}"#),
            (Some(5), ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code(r#"{"id":6,"command":{"type":"InstallGame","id":"Not/Valid"}}"#),
            (Some(6), ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code(r#"{"command":{"type":"Status"}}"#),
            (None, ErrorCode::InvalidRequest)
        );
        assert_eq!(code(r#"[1,2]"#), (None, ErrorCode::InvalidRequest));
        let ok = parse_request(r#"{"id":7,"command":{"type":"Status"}}"#).unwrap();
        assert_eq!(ok.command, PeerCommand::Status);
    }
}
