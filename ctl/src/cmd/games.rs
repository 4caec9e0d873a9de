//! `lanspreadctl games`

use lanspread_proto::client::IpcClient;

use crate::format::{print_json, size, table};
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output) -> Result<(), Failure> {
    let games = client.list_games().await?;
    if output.json {
        print_json(&games);
        return Ok(());
    }
    if games.is_empty() {
        println!("no games (is the game directory set? see `lanspreadctl status`)");
        return Ok(());
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = games
        .iter()
        .map(|g| {
            vec![
                g.id.to_string(),
                g.name.clone(),
                g.version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "-".into()),
                yes_no(g.downloaded),
                yes_no(g.installed),
                size(g.size),
                g.peers.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "NAME",
                "VERSION",
                "DOWNLOADED",
                "INSTALLED",
                "SIZE",
                "PEERS"
            ],
            &rows
        )
    );
    Ok(())
}
