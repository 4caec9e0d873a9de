//! docs/ipc.md cannot drift: every line of its example sessions must parse
//! as the message it claims to be, every reply's result must decode as the
//! result type of the command it answers, and re-encoding must give back
//! the documented line byte for byte.

use std::collections::HashMap;

use lanspread_proto::ipc::{
    CancelRequested, ClientRequest, DownloadStarted, GameFilesPage, GameFilesResult,
    OperationStarted, Outcome, PeerCommand, PeerCountResult, ServerMessage, SetGameDirResult,
    SubscribeResult,
};
use lanspread_proto::model::{DaemonStatus, GameSummary, PeerInfo};
use serde::Serialize;
use serde::de::DeserializeOwned;

const DOC: &str = include_str!("../../docs/ipc.md");

/// The lines of every ```jsonl block.
fn session_blocks() -> Vec<Vec<&'static str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in DOC.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```jsonl") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), line) => block.push(line),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unterminated ```jsonl block");
    blocks
}

/// Decodes `value` as `T` and checks it encodes back to the same JSON.
fn round_trip_as<T: Serialize + DeserializeOwned>(value: &serde_json::Value, what: &str) {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|err| panic!("{what} result does not decode: {err}\n{value}"));
    assert_eq!(
        serde_json::to_string(&typed).unwrap(),
        value.to_string(),
        "{what} result does not round-trip"
    );
}

#[test]
fn the_example_sessions_parse_and_round_trip() {
    let blocks = session_blocks();
    assert!(
        blocks.len() >= 3,
        "expected the example sessions in docs/ipc.md"
    );
    let mut lines_checked = 0;
    let mut results_checked = 0;
    for block in blocks {
        let mut sent: HashMap<u64, PeerCommand> = HashMap::new();
        let mut expect_error = false;
        for line in block {
            let (direction, json) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("session line without direction marker: {line}"));
            match direction {
                ">" => {
                    let request: ClientRequest = serde_json::from_str(json)
                        .unwrap_or_else(|err| panic!("client line does not parse: {err}\n{json}"));
                    assert_eq!(serde_json::to_string(&request).unwrap(), json);
                    sent.insert(request.id, request.command);
                }
                ">!" => {
                    assert!(
                        serde_json::from_str::<ClientRequest>(json).is_err(),
                        "a line marked invalid parses: {json}"
                    );
                    expect_error = true;
                }
                "<" => {
                    let message: ServerMessage = serde_json::from_str(json)
                        .unwrap_or_else(|err| panic!("daemon line does not parse: {err}\n{json}"));
                    assert_eq!(serde_json::to_string(&message).unwrap(), json);
                    if std::mem::take(&mut expect_error) {
                        assert!(
                            matches!(&message, ServerMessage::Reply(r) if matches!(r.outcome, Outcome::Error(_))),
                            "an invalid line must be answered with an error: {json}"
                        );
                    }
                    if let ServerMessage::Reply(reply) = &message
                        && let Outcome::Result(result) = &reply.outcome
                    {
                        let id = reply.id.expect("successful replies carry their id");
                        let command = sent.get(&id).expect("reply to a request sent earlier");
                        match command {
                            PeerCommand::Status => round_trip_as::<DaemonStatus>(result, "Status"),
                            PeerCommand::ListGames => {
                                round_trip_as::<Vec<GameSummary>>(result, "ListGames")
                            }
                            PeerCommand::ListPeers => {
                                round_trip_as::<Vec<PeerInfo>>(result, "ListPeers")
                            }
                            PeerCommand::GetPeerCount => {
                                round_trip_as::<PeerCountResult>(result, "GetPeerCount")
                            }
                            PeerCommand::SetGameDir { .. } => {
                                round_trip_as::<SetGameDirResult>(result, "SetGameDir")
                            }
                            PeerCommand::Subscribe => {
                                round_trip_as::<SubscribeResult>(result, "Subscribe")
                            }
                            PeerCommand::GetGame { .. }
                            | PeerCommand::FetchLatestFromPeers { .. } => {
                                round_trip_as::<GameFilesResult>(result, "GetGame")
                            }
                            PeerCommand::DownloadGameFiles { .. } => {
                                round_trip_as::<DownloadStarted>(result, "DownloadGameFiles")
                            }
                            PeerCommand::ListGameFiles { .. } => {
                                round_trip_as::<GameFilesPage>(result, "ListGameFiles")
                            }
                            PeerCommand::CancelDownload { .. } => {
                                round_trip_as::<CancelRequested>(result, "CancelDownload")
                            }
                            PeerCommand::InstallGame { .. } | PeerCommand::UninstallGame { .. } => {
                                round_trip_as::<OperationStarted>(result, "InstallGame")
                            }
                        }
                        results_checked += 1;
                    }
                }
                other => panic!("unknown direction marker {other:?} in: {line}"),
            }
            lines_checked += 1;
        }
    }
    assert!(lines_checked >= 20, "only {lines_checked} lines checked");
    assert!(
        results_checked >= 5,
        "only {results_checked} results checked"
    );
}

#[test]
fn every_error_code_is_documented() {
    for code in lanspread_proto::ipc::ErrorCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        assert!(
            DOC.contains(&row),
            "docs/ipc.md does not document {}",
            code.as_str()
        );
    }
}

#[test]
fn every_command_is_documented() {
    for name in PeerCommand::NAMES {
        let row = format!("| `{name}` |");
        assert!(DOC.contains(&row), "docs/ipc.md does not document {name}");
    }
}
