//! `lanspreadctl set-game-dir PATH`

use std::path::Path;

use lanspread_proto::client::IpcClient;

use crate::format::print_json;
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output, path: &Path) -> Result<(), Failure> {
    // The daemon has another working directory: resolve relative paths here.
    let path = std::path::absolute(path)
        .map_err(|err| Failure::Usage(format!("cannot resolve {}: {err}", path.display())))?;
    let result = client.set_game_dir(&path).await?;
    if output.json {
        print_json(&result);
    } else {
        println!(
            "game directory set to {} ({} games)",
            result.path.display(),
            result.games
        );
    }
    Ok(())
}
