//! `lanspreadctl get|download|update|install|uninstall|cancel ID`: ask the
//! daemon to act on one game and report its answer.

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerCommand;
use lanspread_proto::model::GameId;

use crate::format::print_json;
use crate::{Failure, Output};

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
    output: Output,
    kind: Kind,
    id: &str,
) -> Result<(), Failure> {
    let id = GameId::new(id).map_err(|err| Failure::Usage(err.to_string()))?;
    let command = match kind {
        // A download starts by asking peers for the file list.
        Kind::Get | Kind::Download => PeerCommand::GetGame { id },
        Kind::Update => PeerCommand::FetchLatestFromPeers { id },
        Kind::Install => PeerCommand::InstallGame { id },
        Kind::Uninstall => PeerCommand::UninstallGame { id },
        Kind::Cancel => PeerCommand::CancelDownload { id },
    };
    let result = client.request(command).await?;
    if output.json {
        print_json(&result);
    } else {
        println!("accepted");
    }
    Ok(())
}
