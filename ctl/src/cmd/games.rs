//! `lanspreadctl games [--all]`: the library; with `--all` also the
//! folders of the game directory the daemon leaves out, with the reason.

use lanspread_proto::client::IpcClient;

use crate::format::{print_json, size, table};
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output, all: bool) -> Result<(), Failure> {
    let games = client.list_games().await?;
    let ignored = if all {
        client.status().await?.ignored_roots
    } else {
        Vec::new()
    };
    if output.json {
        if all {
            print_json(&serde_json::json!({"games": games, "ignored": ignored}));
        } else {
            print_json(&games);
        }
        return Ok(());
    }
    if games.is_empty() && ignored.is_empty() {
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
                g.downloading.to_string(),
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
                "PEERS",
                "DOWNLOADING"
            ],
            &rows
        )
    );
    if !ignored.is_empty() {
        let rows: Vec<Vec<String>> = ignored
            .iter()
            .map(|i| vec![i.name.clone(), "ignored".into(), i.reason.clone()])
            .collect();
        println!();
        print!("{}", table(&["FOLDER", "STATE", "REASON"], &rows));
        println!("(`lanspreadctl doctor` says how to make them count)");
    }
    Ok(())
}
