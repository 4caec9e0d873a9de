//! The bare transport's ceiling, for `just bench ceiling`: bytes from
//! memory on one host to a file on another over s2n-quic with the daemon's
//! own transport settings (`lanspreadd::transport::server_endpoint`,
//! `client_endpoint`: TLS identity, limits, MTU probing, GSO), over as
//! many connections as a download uses ([`BULK_LANES`]), one stream each;
//! the receiver writes each piece at its offset as it arrives and ends
//! with `fdatasync`. No manifest, no hashing, no planner: what lanspread
//! could reach if everything it adds cost nothing. Each side runs on the
//! runtime of its daemon counterpart.
//!
//! ```text
//! quic_ceiling serve ADDR            # serve until killed
//! quic_ceiling fetch ADDR BYTES FILE # prints {"bytes":N,"seconds":S}
//! ```

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use bytes::Bytes;
use lanspreadd::transport::{
    BULK_LANES, TlsIdentity, TransportRuntime, client_endpoint, server_endpoint,
};
use s2n_quic::client::Connect;
use tokio::io::AsyncWriteExt;

const ALPN: &[u8] = b"lanspread-ceiling";

/// What the server sends over and over: 1 MiB of bytes (shared, not
/// copied, by every send).
const BLOCK: usize = 1024 * 1024;

fn usage() -> ! {
    eprintln!("usage: quic_ceiling serve ADDR | quic_ceiling fetch ADDR BYTES FILE");
    std::process::exit(2)
}

/// Each side runs on the runtime its daemon counterpart uses: the server
/// on the serving runtime (one worker, nice 19), the fetch on the fetch
/// runtime (one worker, which reads and writes each lane's data).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => {
            let listen = args[1].parse()?;
            let runtime = TransportRuntime::serving()?;
            let handle = runtime.handle();
            handle
                .block_on(
                    handle.spawn(async move { serve(listen).await.map_err(|e| e.to_string()) }),
                )?
                .map_err(Into::into)
        }
        Some("fetch") if args.len() == 4 => {
            // The endpoint and the lanes' tasks run on the fetch thread.
            let runtime = TransportRuntime::fetching()?;
            runtime
                .handle()
                .block_on(fetch(args[1].parse()?, args[2].parse()?, &args[3]))
        }
        _ => usage(),
    }
}

/// Answers every stream's request (`BYTES\n`) with that many bytes.
async fn serve(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut server = server_endpoint(listen, &TlsIdentity::compiled_in(), ALPN)?;
    let block = Bytes::from(vec![0x5au8; BLOCK]);
    while let Some(mut connection) = server.accept().await {
        let block = block.clone();
        tokio::spawn(async move {
            while let Ok(Some(mut stream)) = connection.accept_bidirectional_stream().await {
                let block = block.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    while let Ok(Some(piece)) = stream.receive().await {
                        request.extend_from_slice(&piece);
                    }
                    let Some(mut left) = std::str::from_utf8(&request)
                        .ok()
                        .and_then(|r| r.trim().parse::<usize>().ok())
                    else {
                        return;
                    };
                    while left > 0 {
                        let piece = block.slice(..left.min(BLOCK));
                        left -= piece.len();
                        if stream.send(piece).await.is_err() {
                            return;
                        }
                    }
                    let _ = stream.finish();
                    let _ = stream.flush().await;
                });
            }
        });
    }
    Ok(())
}

/// Fetches `bytes` over [`BULK_LANES`] connections into `path`.
async fn fetch(to: SocketAddr, bytes: u64, path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = client_endpoint(&TlsIdentity::compiled_in(), ALPN)?;
    let file = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?,
    );
    file.set_len(bytes)?;
    let lanes = BULK_LANES as u64;
    let share = bytes.div_ceil(lanes);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        let offset = lane * share;
        let length = share.min(bytes.saturating_sub(offset));
        let connect = Connect::new(to).with_server_name(lanspread_proto::wire::SERVER_NAME);
        let mut connection = client.connect(connect).await?;
        let file = std::sync::Arc::clone(&file);
        tasks.spawn(async move {
            let mut stream = connection.open_bidirectional_stream().await?;
            stream.write_all(format!("{length}\n").as_bytes()).await?;
            stream.finish()?;
            let mut at = offset;
            while let Some(piece) = stream.receive().await? {
                file.write_all_at(&piece, at)?;
                at += piece.len() as u64;
            }
            if at != offset + length {
                return Err(format!("lane {lane}: got {} of {length} bytes", at - offset).into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|err| err.to_string())?;
    }
    file.sync_data()?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"bytes\":{bytes},\"seconds\":{seconds:.4}}}");
    Ok(())
}
