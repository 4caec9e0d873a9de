//! IPC round-trip latency: sends `Status` requests one after another over
//! one connection and reports p50/p99/max. Used by `just bench-ipc`.
//!
//! Usage: ipc_bench SOCKET [REQUESTS]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerCommand;

/// Requests sent before measuring, to warm caches and the allocator.
const WARM_UP: usize = 500;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: ipc_bench SOCKET [REQUESTS]"))?,
    );
    let requests: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10_000);
    let mut client = IpcClient::connect(&socket).await?;
    for _ in 0..WARM_UP {
        client.request(PeerCommand::Status).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        client.request(PeerCommand::Status).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{{\"requests\":{requests},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1}}}",
        us(pct(0.50)),
        us(pct(0.99)),
        us(*samples.last().unwrap())
    );
    Ok(())
}
