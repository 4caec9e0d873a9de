//! `lanspreadctl peers`

use lanspread_proto::client::IpcClient;

use crate::format::{print_json, table};
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output) -> Result<(), Failure> {
    let peers = client.list_peers().await?;
    if output.json {
        print_json(&peers);
        return Ok(());
    }
    if peers.is_empty() {
        println!("no peers");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| vec![p.peer_id.clone(), p.name.clone(), p.address.clone()])
        .collect();
    print!("{}", table(&["PEER ID", "NAME", "ADDRESS"], &rows));
    Ok(())
}
