//! `lanspreadctl status`

use lanspread_proto::client::IpcClient;

use crate::format::{duration, print_json};
use crate::{Failure, Output};

pub async fn run(client: &mut IpcClient, output: Output) -> Result<(), Failure> {
    let status = client.status().await?;
    if output.json {
        print_json(&status);
        return Ok(());
    }
    let game_dir = status
        .game_dir
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(not set: use `lanspreadctl set-game-dir PATH`)".into());
    println!("peer id     {}", status.peer_id);
    println!("name        {}", status.name);
    println!("game dir    {game_dir}");
    println!("local games {}", status.local_games);
    println!("peers       {}", status.peer_count);
    println!(
        "daemon      lanspreadd {} (ipc protocol {}), up {}",
        status.daemon_version,
        status.protocol,
        duration(status.uptime_secs)
    );
    let access = match client.hello().access {
        lanspread_proto::ipc::Access::Operator => "operator",
        lanspread_proto::ipc::Access::ReadOnly => "read-only",
    };
    println!("your access {access}");
    print!("{}", crate::cmd::limits::describe(status.limits));
    for missing in &status.unavailable {
        println!("unavailable {}: {}", missing.component, missing.reason);
    }
    Ok(())
}
