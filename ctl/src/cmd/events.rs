//! `lanspreadctl events`: the event stream, one JSON object a line.

use std::io::Write;

use lanspread_proto::client::IpcClient;

use crate::Failure;

pub async fn run(client: &mut IpcClient) -> Result<(), Failure> {
    client.subscribe().await?;
    let stdout = std::io::stdout();
    loop {
        let event = client.next_event().await?;
        let mut out = stdout.lock();
        let line = serde_json::to_string(&event).expect("events serialize");
        // A closed stdout (`| head`) ends the stream quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}
