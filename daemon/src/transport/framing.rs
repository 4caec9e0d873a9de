//! Reading and writing the wire messages on one stream, with every length
//! bounded before memory is spent on it.

use std::ops::ControlFlow;

use bytes::Bytes;
use lanspread_proto::wire::DataHeader;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};

use super::rate::RateLimiter;

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

/// A stream that hands out what it received as owned pieces, in order
/// (s2n-quic's streams do, straight from their reassembly buffers).
pub trait Pieces {
    /// The next piece; `None` once the peer finished the stream.
    fn next_piece(&mut self) -> impl Future<Output = std::io::Result<Option<Bytes>>> + Send;
}

impl Pieces for s2n_quic::stream::BidirectionalStream {
    async fn next_piece(&mut self) -> std::io::Result<Option<Bytes>> {
        self.receive().await.map_err(std::io::Error::other)
    }
}

/// Where a fetched chunk's bytes go while they arrive: the downloader's
/// store hashes and writes them a slice at a time while they are in the
/// CPU cache (`docs/download.md#storing-a-chunk`); [`ChunkData`] keeps
/// them in memory.
pub trait ChunkSink: Send {
    /// The next piece of the chunk, in stream order. `Break` stops the
    /// fetch: the stream is dropped (and reset) and the sink is handed
    /// back as it is (it knows why it stopped).
    fn piece(&mut self, piece: Bytes) -> impl Future<Output = ControlFlow<()>> + Send;
}

/// A chunk's bytes as they were received: the stream's pieces in order,
/// never gathered into one buffer (kept in memory: `version.ini`, an
/// update's part of a chunk, tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkData {
    pieces: Vec<Bytes>,
    len: u64,
}

impl ChunkData {
    /// The pieces, in stream order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Bytes in all pieces.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The BLAKE3 hash of the whole chunk.
    pub fn hash(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        for piece in &self.pieces {
            hasher.update(piece);
        }
        hasher.finalize()
    }

    /// The bytes in one buffer (small chunks kept in memory, tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }

    /// Appends the next piece (empty pieces are skipped).
    pub fn push_piece(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len() as u64;
            self.pieces.push(piece);
        }
    }

    /// Takes every piece out, leaving it empty.
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

impl ChunkSink for ChunkData {
    async fn piece(&mut self, piece: Bytes) -> ControlFlow<()> {
        self.push_piece(piece);
        ControlFlow::Continue(())
    }
}

impl From<Vec<u8>> for ChunkData {
    fn from(bytes: Vec<u8>) -> Self {
        let mut data = Self::default();
        data.push_piece(Bytes::from(bytes));
        data
    }
}

/// Reads the [`DataHeader`] line that precedes chunk data from a stream of
/// pieces; returns it and what followed it in the last piece read.
pub async fn read_piece_header(
    stream: &mut impl Pieces,
) -> Result<(DataHeader, Bytes), FrameError> {
    let mut line = Vec::new();
    loop {
        let Some(piece) = stream.next_piece().await? else {
            return Err(FrameError::Truncated {
                got: line.len() as u64,
                expected: line.len() as u64 + 1,
            });
        };
        let end = piece.iter().position(|&b| b == b'\n');
        let head = end.map_or(piece.len(), |at| at + 1);
        if (line.len() + head) as u64 > MAX_HEADER_BYTES {
            return Err(FrameError::TooLong(MAX_HEADER_BYTES));
        }
        line.extend_from_slice(&piece[..head]);
        if end.is_some() {
            return Ok((serde_json::from_slice(&line)?, piece.slice(head..)));
        }
    }
}

/// Reads exactly `length` bytes of data, `first` (what followed the
/// header) included, as the stream's own pieces (no copy), paced by
/// `limiter` (the download limit), into `sink`; then checks the stream
/// ends there. Returns early, without that check, if the sink stops.
pub async fn read_data_into(
    stream: &mut impl Pieces,
    first: Bytes,
    length: u64,
    limiter: &RateLimiter,
    sink: &mut impl ChunkSink,
) -> Result<(), FrameError> {
    let mut got = 0u64;
    let mut next = Some(first);
    loop {
        let Some(piece) = next.take() else {
            break;
        };
        if got + piece.len() as u64 > length {
            return Err(FrameError::TrailingData(length));
        }
        limiter.acquire(piece.len()).await;
        got += piece.len() as u64;
        if !piece.is_empty() && sink.piece(piece).await.is_break() {
            return Ok(());
        }
        if got == length {
            // The stream must end here.
            if let Some(extra) = stream.next_piece().await? {
                if !extra.is_empty() {
                    return Err(FrameError::TrailingData(length));
                }
            }
            return Ok(());
        }
        next = stream.next_piece().await?;
    }
    Err(FrameError::Truncated {
        got,
        expected: length,
    })
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
    }

    /// Pieces from a list, as a QUIC stream would hand them out.
    struct Listed(std::collections::VecDeque<Bytes>);

    impl Pieces for Listed {
        async fn next_piece(&mut self) -> std::io::Result<Option<Bytes>> {
            Ok(self.0.pop_front())
        }
    }

    fn listed(pieces: &[&[u8]]) -> Listed {
        Listed(pieces.iter().map(|p| Bytes::copy_from_slice(p)).collect())
    }

    /// A sink that takes `room` pieces, then stops the fetch.
    struct Stopping {
        room: usize,
        got: Vec<Bytes>,
    }

    impl ChunkSink for Stopping {
        async fn piece(&mut self, piece: Bytes) -> ControlFlow<()> {
            self.got.push(piece);
            if self.got.len() == self.room {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    #[tokio::test]
    async fn a_sink_that_stops_ends_the_read_at_once() {
        let unlimited = RateLimiter::default();
        let mut input = listed(&[b"cd", b"ef", b"gh"]);
        let mut sink = Stopping {
            room: 2,
            got: Vec::new(),
        };
        read_data_into(
            &mut input,
            Bytes::from_static(b"ab"),
            8,
            &unlimited,
            &mut sink,
        )
        .await
        .unwrap();
        assert_eq!(sink.got, [&b"ab"[..], &b"cd"[..]]);
        assert_eq!(input.0.len(), 2, "nothing more was read");
    }

    #[tokio::test]
    async fn chunk_data_is_read_as_the_streams_pieces_and_bounded() {
        let unlimited = RateLimiter::default();
        // The header split over two pieces, data after it in the second.
        let mut input = listed(&[
            b"{\"type\":\"Data\",\"chu",
            b"nk\":5,\"length\":5}\nab",
            b"cde",
        ]);
        let (header, rest) = read_piece_header(&mut input).await.unwrap();
        assert_eq!(
            header,
            DataHeader::Data {
                chunk: 5,
                length: 5
            }
        );
        let mut data = ChunkData::default();
        read_data_into(&mut input, rest, 5, &unlimited, &mut data)
            .await
            .unwrap();
        assert_eq!(data.to_vec(), b"abcde");
        assert_eq!(data.pieces().len(), 2, "no piece gathered or copied");
        assert_eq!(data.hash(), blake3::hash(b"abcde"));
        // Short, long (in the last piece or in one more), no header end.
        let mut short = listed(&[b"ab"]);
        assert!(matches!(
            read_data_into(
                &mut short,
                Bytes::new(),
                3,
                &unlimited,
                &mut ChunkData::default()
            )
            .await,
            Err(FrameError::Truncated {
                got: 2,
                expected: 3
            })
        ));
        let mut long = listed(&[b"abcd"]);
        assert!(matches!(
            read_data_into(
                &mut long,
                Bytes::new(),
                3,
                &unlimited,
                &mut ChunkData::default()
            )
            .await,
            Err(FrameError::TrailingData(3))
        ));
        let mut one_more = listed(&[b"abc", b"d"]);
        assert!(matches!(
            read_data_into(
                &mut one_more,
                Bytes::new(),
                3,
                &unlimited,
                &mut ChunkData::default()
            )
            .await,
            Err(FrameError::TrailingData(3))
        ));
        let mut no_newline = listed(&[b"{\"type\":\"Data\""]);
        assert!(matches!(
            read_piece_header(&mut no_newline).await,
            Err(FrameError::Truncated { .. })
        ));
        let endless = vec![b'x'; MAX_HEADER_BYTES as usize + 1];
        let mut endless = listed(&[&endless]);
        assert!(matches!(
            read_piece_header(&mut endless).await,
            Err(FrameError::TooLong(_))
        ));
    }
}
