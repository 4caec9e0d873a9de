//! `SetLimits`: the daemon-wide upload and download limits. The buckets
//! live in the transport (`transport::RateLimiters`) and are shared with it,
//! so a change holds for the next block sent or read.

use lanspread_proto::model::RateLimits;

use super::Daemon;

impl Daemon {
    /// Changes the limits given (bytes per second, 0 = none) and returns
    /// the limits in effect.
    pub(super) fn set_limits(&mut self, upload: Option<u64>, download: Option<u64>) -> RateLimits {
        let current = self.limits.limits();
        let next = RateLimits {
            upload: upload.unwrap_or(current.upload),
            download: download.unwrap_or(current.download),
        };
        self.limits.set(next);
        tracing::info!(
            upload = next.upload,
            download = next.download,
            "rate limits set (bytes/s, 0 = none)"
        );
        next
    }
}
