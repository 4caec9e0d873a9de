//! Reading and writing the wire messages on one stream, with every length
//! bounded before memory is spent on it.

use lanspread_proto::wire::DataHeader;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};

use super::rate::RateLimiter;

/// Largest piece of chunk data read before the download limit is asked
/// for tokens (small enough that a limit paces smoothly).
const READ_PIECE_BYTES: u64 = 64 * 1024;

/// Longest accepted [`DataHeader`] line, in bytes.
pub const MAX_HEADER_BYTES: u64 = 16 * 1024;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("message longer than {0} bytes")]
    TooLong(u64),
    #[error("message is not valid JSON for its type: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("data ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("more data than the announced {0} bytes")]
    TrailingData(u64),
}

/// Reads everything until the peer finishes its side, at most `max` bytes.
pub async fn read_to_end_bounded(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut buffer = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut buffer).await?;
    if buffer.len() > max {
        return Err(FrameError::TooLong(max as u64));
    }
    Ok(buffer)
}

/// Reads the `DataHeader` line that precedes file data.
pub async fn read_data_header(
    reader: &mut (impl AsyncBufRead + Unpin),
) -> Result<DataHeader, FrameError> {
    read_json_line(reader, MAX_HEADER_BYTES)
        .await?
        .ok_or(FrameError::Truncated {
            got: 0,
            expected: 1,
        })
}

/// Reads one JSON line of at most `max` bytes; `None` at the end of the
/// stream.
pub async fn read_json_line<T: serde::de::DeserializeOwned>(
    reader: &mut (impl AsyncBufRead + Unpin),
    max: u64,
) -> Result<Option<T>, FrameError> {
    let mut line = Vec::new();
    (&mut *reader)
        .take(max)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() as u64 >= max {
            FrameError::TooLong(max)
        } else {
            FrameError::Truncated {
                got: line.len() as u64,
                expected: line.len() as u64 + 1,
            }
        });
    }
    Ok(Some(serde_json::from_slice(&line)?))
}

/// Reads exactly `length` bytes of data into memory, paced by `limiter`
/// (the download limit), then checks the stream ends there.
pub async fn read_exact_data(
    reader: &mut (impl AsyncRead + Unpin),
    length: u64,
    limiter: &RateLimiter,
) -> Result<Vec<u8>, FrameError> {
    let mut data = Vec::with_capacity(length as usize);
    while (data.len() as u64) < length {
        let want = (length - data.len() as u64).min(READ_PIECE_BYTES);
        let got = (&mut *reader).take(want).read_buf(&mut data).await?;
        if got == 0 {
            return Err(FrameError::Truncated {
                got: data.len() as u64,
                expected: length,
            });
        }
        limiter.acquire(got).await;
    }
    let mut probe = [0u8; 1];
    if reader.read(&mut probe).await? != 0 {
        return Err(FrameError::TrailingData(length));
    }
    Ok(data)
}

/// A JSON line ([`DataHeader`], `Availability`), newline-terminated.
pub fn encode_header(header: &impl serde::Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(header).expect("headers serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_reads_refuse_oversized_or_truncated_input() {
        assert_eq!(
            read_to_end_bounded(&mut &b"abc"[..], 3).await.unwrap(),
            b"abc"
        );
        assert!(matches!(
            read_to_end_bounded(&mut &b"abcd"[..], 3).await,
            Err(FrameError::TooLong(3))
        ));
        let mut input = &b"{\"type\":\"Data\",\"chunk\":5,\"length\":3}\nabc"[..];
        let header = read_data_header(&mut input).await.unwrap();
        assert_eq!(
            header,
            DataHeader::Data {
                chunk: 5,
                length: 3
            }
        );
        let unlimited = RateLimiter::default();
        assert_eq!(
            read_exact_data(&mut input, 3, &unlimited).await.unwrap(),
            b"abc"
        );
        let mut short = &b"ab"[..];
        assert!(matches!(
            read_exact_data(&mut short, 3, &unlimited).await,
            Err(FrameError::Truncated {
                got: 2,
                expected: 3
            })
        ));
        let mut long = &b"abcd"[..];
        assert!(matches!(
            read_exact_data(&mut long, 3, &unlimited).await,
            Err(FrameError::TrailingData(3))
        ));
        let mut no_newline = &b"{\"type\":\"Data\""[..];
        assert!(read_data_header(&mut no_newline).await.is_err());
    }
}
