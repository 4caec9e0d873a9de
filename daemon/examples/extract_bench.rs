//! Extraction throughput of the daemon's unpacker on one archive. Used by
//! `just bench-extract`, which times `bsdtar -xf` on the same archive in
//! the same run.
//!
//! Usage: extract_bench ARCHIVE TARGET_DIR

use std::path::PathBuf;
use std::time::Instant;

use lanspreadd::install::{LibarchiveUnpacker, Unpacker};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: extract_bench ARCHIVE TARGET_DIR");
    let archive = PathBuf::from(args.next().ok_or_else(usage)?);
    let target = PathBuf::from(args.next().ok_or_else(usage)?);
    std::fs::create_dir_all(&target)?;
    let started = Instant::now();
    let done = LibarchiveUnpacker.unpack(&[archive], &target, &mut |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"entries\":{},\"bytes\":{},\"seconds\":{secs:.3},\"mib_per_s\":{:.1}}}",
        done.entries,
        done.bytes,
        done.bytes as f64 / (1 << 20) as f64 / secs
    );
    Ok(())
}
