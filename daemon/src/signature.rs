//! Block signatures (`docs/download.md#data-that-moved`): what lets an
//! update find bytes of the new version among the files it already holds,
//! at any offset. Each chunk is cut into [`SIGNATURE_BLOCK`]-byte blocks
//! (the last one may be shorter); a block's signature is a rolling
//! checksum, which a scanner can slide over a file one byte at a time for
//! the cost of a multiply and two table lookups, and a strong check (the
//! first 8 bytes of its BLAKE3 hash) that a candidate must also pass. The
//! chunk's own BLAKE3 hash in the manifest stays the final word: a block
//! found this way only ever helps assemble a chunk that is then verified
//! whole.
//!
//! The rolling checksum is rsync's, twice as wide and over a table of
//! random words (one per byte value) instead of the bytes themselves:
//! `a = Σ T[bᵢ]` and `b = Σ (n − i)·T[bᵢ]`, each modulo 2^32, `a` in the
//! high half. Sliding the window by one byte is two additions and a shift
//! (`roll`). Runs of one byte value (zeros) hash like any other content
//! and are matched by the strong check like any other block. (A
//! polynomial hash was measured as fast: the scan is bound by its
//! pre-filter's memory reads, not by the checksum; see `delta::scan`.)

use lanspread_proto::wire::{SIGNATURE_BLOCK, SIGNATURE_BYTES};

/// Bytes in a block.
pub const BLOCK: usize = SIGNATURE_BLOCK as usize;

/// The signature of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockSignature {
    /// The rolling checksum (of the whole block, however long it is).
    pub weak: u64,
    /// The first 4 bytes of the block's BLAKE3 hash, little-endian.
    pub strong: u32,
}

/// One random word per byte value (splitmix64 from a fixed seed, the low
/// 32 bits: the same on every host, as it must be).
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut state: u64 = 0x6C61_6E73_7072_6561; // "lanspread"
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        table[i] = (z ^ (z >> 31)) as u32;
        i += 1;
    }
    table
};

/// The rolling checksum of `data`: `a = Σ T[bᵢ]` in the high 32 bits,
/// `b = Σ (n − i)·T[bᵢ]` in the low ones, both modulo 2^32 (rsync's
/// checksum, over a table of random words instead of the bytes
/// themselves, and twice as wide).
pub fn weak(data: &[u8]) -> u64 {
    // b = Σ (n − i)·tᵢ is the sum of the running sums of a: two additions
    // a byte, no multiplication.
    let (a, b) = data.iter().fold((0u32, 0u32), |(a, b), &byte| {
        let a = a.wrapping_add(TABLE[byte as usize]);
        (a, b.wrapping_add(a))
    });
    (u64::from(a) << 32) | u64::from(b)
}

/// The checksum of the window one byte further on: `out` left it, `incoming`
/// entered it. Only for windows of exactly [`BLOCK`] bytes.
#[inline]
pub fn roll(hash: u64, out: u8, incoming: u8) -> u64 {
    let (out, incoming) = (TABLE[out as usize], TABLE[incoming as usize]);
    let a = ((hash >> 32) as u32)
        .wrapping_sub(out)
        .wrapping_add(incoming);
    let b = (hash as u32)
        .wrapping_sub(out.wrapping_mul(BLOCK as u32))
        .wrapping_add(a);
    (u64::from(a) << 32) | u64::from(b)
}

/// The strong check of `data`.
pub fn strong(data: &[u8]) -> u32 {
    let hash = blake3::hash(data);
    u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// The signatures of a chunk's blocks.
pub fn of_chunk(data: &[u8]) -> Vec<BlockSignature> {
    data.chunks(BLOCK)
        .map(|block| BlockSignature {
            weak: weak(block),
            strong: strong(block),
        })
        .collect()
}

/// How many blocks a chunk of `length` bytes has.
pub fn blocks_in(length: u64) -> usize {
    length.div_ceil(SIGNATURE_BLOCK) as usize
}

/// The wire form of a chunk's signatures: [`SIGNATURE_BYTES`] per block,
/// lower-case hex.
pub fn encode(signatures: &[BlockSignature]) -> String {
    let mut bytes = Vec::with_capacity(signatures.len() * SIGNATURE_BYTES);
    for signature in signatures {
        bytes.extend_from_slice(&signature.weak.to_le_bytes());
        bytes.extend_from_slice(&signature.strong.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses the wire form of the signatures of a chunk of `blocks` blocks;
/// `None` for anything else (wrong length, not hex).
pub fn decode(hex: &str, blocks: usize) -> Option<Vec<BlockSignature>> {
    if hex.len() != blocks * SIGNATURE_BYTES * 2 || !hex.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    Some(
        bytes
            .chunks_exact(SIGNATURE_BYTES)
            .map(|s| BlockSignature {
                weak: u64::from_le_bytes(s[..8].try_into().expect("8 bytes")),
                strong: u32::from_le_bytes(s[8..].try_into().expect("4 bytes")),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    #[test]
    fn rolling_gives_the_checksum_of_every_window() {
        let data = noise(BLOCK + 300, 1);
        let mut hash = weak(&data[..BLOCK]);
        for start in 1..=300 {
            hash = roll(hash, data[start - 1], data[start + BLOCK - 1]);
            assert_eq!(hash, weak(&data[start..start + BLOCK]), "window at {start}");
        }
    }

    #[test]
    fn a_chunk_has_one_signature_per_block_the_last_one_short() {
        let data = noise(2 * BLOCK + 5, 2);
        let signatures = of_chunk(&data);
        assert_eq!(signatures.len(), blocks_in(data.len() as u64));
        assert_eq!(signatures.len(), 3);
        assert_eq!(signatures[2].weak, weak(&data[2 * BLOCK..]));
        assert_eq!(signatures[1].strong, strong(&data[BLOCK..2 * BLOCK]));
    }

    #[test]
    fn the_wire_form_round_trips_and_rejects_the_wrong_length() {
        let signatures = of_chunk(&noise(3 * BLOCK, 3));
        let hex = encode(&signatures);
        assert_eq!(hex.len(), 3 * SIGNATURE_BYTES * 2);
        assert_eq!(decode(&hex, 3).unwrap(), signatures);
        assert!(decode(&hex, 2).is_none());
        assert!(decode(&format!("g{}", &hex[1..]), 3).is_none(), "not hex");
        assert!(decode("zz", 0).is_none());
    }

    #[test]
    fn the_checksum_is_pinned() {
        // The checksum is part of the wire: every host must compute the
        // same one. A change here is a change of the protocol.
        assert_eq!(weak(b""), 0);
        assert_eq!(weak(b"lanspread"), PINNED);
        assert_eq!(strong(b"lanspread"), PINNED_STRONG);
    }

    const PINNED: u64 = 3_826_094_800_429_521_124;
    const PINNED_STRONG: u32 = 1_908_738_646;
}
