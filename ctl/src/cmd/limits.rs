//! `lanspreadctl limits [--upload RATE] [--download RATE]`: show the rate
//! limits, or change them (operator only).

use lanspread_proto::client::IpcClient;
use lanspread_proto::model::RateLimits;

use crate::format::{print_json, rate};
use crate::{Failure, Output};

pub async fn run(
    client: &mut IpcClient,
    output: Output,
    upload: Option<u64>,
    download: Option<u64>,
) -> Result<(), Failure> {
    let limits = if upload.is_none() && download.is_none() {
        client.status().await?.limits
    } else {
        client.set_limits(upload, download).await?
    };
    if output.json {
        print_json(&limits);
    } else {
        print!("{}", describe(limits));
    }
    Ok(())
}

/// Both limits as two lines, `none` for 0.
pub fn describe(limits: RateLimits) -> String {
    format!(
        "upload      {}\ndownload    {}\n",
        limit(limits.upload),
        limit(limits.download)
    )
}

/// A limit in bytes and bits per second, or `none`.
pub fn limit(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        return "none".into();
    }
    format!(
        "{} ({:.1} Mbit/s)",
        rate(bytes_per_sec),
        bytes_per_sec as f64 * 8.0 / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_in_both_units_and_none_for_zero() {
        assert_eq!(limit(0), "none");
        assert_eq!(limit(12_500_000), "11.9 MiB/s (100.0 Mbit/s)");
    }
}
