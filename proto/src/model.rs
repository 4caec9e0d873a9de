//! The shared model: what a game, a version, a file and a peer are.
//!
//! Pure data and pure rules (id validation, version ordering); no I/O.

use std::cmp::Ordering;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest accepted game id, in bytes.
pub const MAX_GAME_ID_LEN: usize = 64;

/// A game id: the folder name of a game root. Lower-case ASCII letters,
/// digits, `-` and `_`, 1 to [`MAX_GAME_ID_LEN`] bytes.
///
/// Validated on construction and on deserialization, so a `GameId` in hand
/// is always safe to join onto a game directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GameId(String);

/// Why a string is not a [`GameId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidGameId(pub String);

impl fmt::Display for InvalidGameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid game id {:?}: expected 1 to {MAX_GAME_ID_LEN} characters from a-z, 0-9, '-' and '_'",
            self.0
        )
    }
}

impl std::error::Error for InvalidGameId {}

impl GameId {
    /// Validates `id` and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidGameId> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= MAX_GAME_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(id))
        } else {
            Err(InvalidGameId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GameId {
    type Error = InvalidGameId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<GameId> for String {
    fn from(value: GameId) -> Self {
        value.0
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A game's version (the "ETI version" from `version.ini`).
///
/// Ordering is natural order (docs/ipc.md, "Versions"): each version splits
/// into runs of ASCII digits and runs of other bytes, compared run by run.
/// Two digit runs compare as numbers (leading zeros ignored; equal numbers
/// then by run length, shorter first); any other pair of runs compares by
/// bytes; a version that runs out of runs first is the smaller. So
/// `2 < 10`, `1a < 2`, `1.2 < 1.10`, `1 < 1.0`, `1.0 < 1.0a`. It is a total
/// order consistent with equality, so "the latest" never depends on the
/// order in which peers answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    pub fn new(version: impl Into<String>) -> Self {
        Self(version.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The runs of `bytes`: maximal runs of ASCII digits and maximal runs of
/// anything else, in order. ASCII digits never occur inside a multi-byte
/// UTF-8 sequence, so splitting on bytes is splitting on characters.
fn runs(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let digits = first.is_ascii_digit();
        let len = rest
            .iter()
            .position(|b| b.is_ascii_digit() != digits)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some(run)
    })
}

/// Orders two runs: digit runs by value (without parsing, so any length
/// works), then by length; everything else by bytes. A digit run and a
/// non-digit run always differ in their first byte.
fn cmp_runs(a: &[u8], b: &[u8]) -> Ordering {
    let is_number = |run: &[u8]| run.first().is_some_and(u8::is_ascii_digit);
    if !(is_number(a) && is_number(b)) {
        return a.cmp(b);
    }
    let (value_a, value_b) = (significant_digits(a), significant_digits(b));
    value_a
        .len()
        .cmp(&value_b.len())
        .then_with(|| value_a.cmp(value_b))
        .then_with(|| a.len().cmp(&b.len()))
}

/// A digit run without its leading zeros.
fn significant_digits(run: &[u8]) -> &[u8] {
    let zeros = run.iter().take_while(|&&b| b == b'0').count();
    &run[zeros..]
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut ours = runs(self.0.as_bytes());
        let mut theirs = runs(other.0.as_bytes());
        loop {
            match (ours.next(), theirs.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(a), Some(b)) => match cmp_runs(a, b) {
                    Ordering::Equal => {}
                    decided => return decided,
                },
            }
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One row of the merged library, as `ListGames` and `lanspreadctl games`
/// report it. The field set is a public contract (docs/ipc.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameSummary {
    pub id: GameId,
    /// Display name from the catalog.
    pub name: String,
    /// Latest known version (local or from peers); `None` if unknown.
    pub version: Option<Version>,
    /// This host holds the game's files (its `version.ini` is present).
    pub downloaded: bool,
    /// This host has it installed (`local/` is a directory).
    pub installed: bool,
    /// Bytes of the game's files on this host, without `local/` (for a game
    /// that is not downloaded: what is on disk so far).
    pub size: u64,
    /// How many peers hold the latest version complete.
    pub peers: u32,
    /// How many peers are downloading the latest version (and serve the
    /// chunks they verified).
    #[serde(default)]
    pub downloading: u32,
    /// While this host is still computing the game's chunk hashes (its
    /// file list is not ready for peers yet): how far along it is. Absent
    /// once the file list is ready, and for games this host does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparing: Option<Preparing>,
}

/// How far a host is in computing a game's chunk hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preparing {
    /// Bytes hashed so far (including hashes reused from the index).
    pub bytes_done: u64,
    /// Bytes of the game's files.
    pub bytes_total: u64,
}

impl Preparing {
    /// Whole percent done, 0–100.
    pub fn percent(&self) -> u8 {
        if self.bytes_total == 0 {
            return 100;
        }
        (u128::from(self.bytes_done.min(self.bytes_total)) * 100 / u128::from(self.bytes_total))
            as u8
    }
}

/// One entry of a game's file list as clients see it: no chunk hashes
/// (they stay between daemons), so a listing stays small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameFile {
    /// Path relative to the game root, `/`-separated.
    pub relative_path: String,
    pub is_dir: bool,
    /// File length in bytes (0 for directories).
    pub size: u64,
}

impl From<&GameFileDescription> for GameFile {
    fn from(file: &GameFileDescription) -> Self {
        Self {
            relative_path: file.relative_path.clone(),
            is_dir: file.is_dir,
            size: file.size,
        }
    }
}

/// One entry of a game's file manifest, relative to its game root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameFileDescription {
    /// Path relative to the game root, `/`-separated, never absolute, never
    /// containing `..`.
    pub relative_path: String,
    pub is_dir: bool,
    /// File length in bytes (0 for directories).
    pub size: u64,
    /// Hex BLAKE3 hash of each [`crate::wire::CHUNK_SIZE`] chunk, in order.
    /// Empty for directories and empty files.
    #[serde(default)]
    pub chunk_hashes: Vec<String>,
}

/// A peer as the peer events name it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub name: String,
    /// The address the daemon dials (`ip:port`).
    pub address: String,
}

/// Where a known peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Seen in mDNS, not yet answered.
    Discovered,
    /// Answers pings and its library is known.
    Connected,
    /// Stopped answering; kept (and still pinged) so it can come back.
    Lost,
}

/// A peer as `ListPeers` and `lanspreadctl peers` report it: every peer
/// the daemon knows, whatever its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    pub peer_id: String,
    pub name: String,
    pub state: PeerState,
    /// The address its pings are answered at (`ip:port`), `None` until one
    /// answered.
    pub address: Option<String>,
    /// Every address mDNS gave for it, best first; all are tried at once
    /// until one answers.
    pub addresses: Vec<String>,
    /// Round-trip time of its last answered ping, in microseconds.
    pub rtt_us: Option<u64>,
    /// Seconds since it last answered a ping, `None` if it never did.
    pub last_seen_secs: Option<u64>,
    /// Games it announces (0 unless connected).
    pub games: u32,
}

/// What the daemon reports for `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub peer_id: String,
    /// This daemon's human-readable name (announced to peers).
    pub name: String,
    /// The game directory, or `None` while it is unset.
    pub game_dir: Option<PathBuf>,
    pub peer_count: u32,
    /// Number of cataloged games in the local library.
    pub local_games: u32,
    /// `lanspreadd` version.
    pub daemon_version: String,
    /// The IPC protocol version.
    pub protocol: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Where the QUIC server listens, once the peer runtime runs.
    pub listen: Option<String>,
    /// Game roots rescanned after filesystem changes since the start.
    pub rescans: u64,
    /// This daemon's own mDNS record was seen on the network.
    pub mdns_visible: bool,
    /// Subsystems that are not running, each with the reason.
    pub unavailable: Vec<UnavailableComponent>,
    /// Local games whose file lists (chunk hashes) are still being
    /// computed, with their progress.
    pub preparing: Vec<PreparingGame>,
    /// The rate limits in effect.
    pub limits: RateLimits,
    /// The catalog in use: its file, or `(bundled)`.
    pub catalog: String,
    /// Folders of the game directory that are not served, with the reason
    /// (not in the catalog, not a valid game id, a symlink, unreadable).
    pub ignored_roots: Vec<IgnoredRoot>,
}

/// A local game whose file list is being prepared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparingGame {
    pub id: GameId,
    #[serde(flatten)]
    pub progress: Preparing,
}

/// A folder of the game directory the library leaves out, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IgnoredRoot {
    /// The folder's name (lossy when it is not UTF-8).
    pub name: String,
    pub reason: String,
}

/// The daemon's rate limits, in bytes per second; 0 means none. Upload
/// covers file data served to every peer together, download the file data
/// read from every peer together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub upload: u64,
    pub download: u64,
}

/// Parses a rate written with its unit: `10MiB` (bytes per second, binary
/// prefixes), `10MB` (decimal), `80Mbit` (bits per second), optionally
/// followed by `/s`; units are case-insensitive, and `0` alone means no
/// limit. Returns bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/S"))
        .unwrap_or(trimmed)
        .trim();
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, unit) = body.split_at(split);
    let invalid = || {
        format!(
            "invalid rate {text:?}: write a number and a unit, like 10MiB (bytes per second) or 80Mbit (bits per second), or 0 for none"
        )
    };
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.trim().to_ascii_lowercase();
    let bytes_per_unit = match unit.as_str() {
        "" if value == 0.0 => 0.0,
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        _ => return Err(invalid()),
    };
    let rate = (value * bytes_per_unit).round();
    if !rate.is_finite() || rate > u64::MAX as f64 / 2.0 {
        return Err(invalid());
    }
    if value > 0.0 && rate < 1.0 {
        return Err(format!("invalid rate {text:?}: below 1 byte per second"));
    }
    Ok(rate as u64)
}

/// A part of the daemon that is not running, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableComponent {
    pub component: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_ids_follow_the_spec_alphabet() {
        for ok in ["openarena", "quake3", "ut-2004", "a_b", "0"] {
            assert!(GameId::new(ok).is_ok(), "{ok} should be valid");
        }
        let too_long = "a".repeat(MAX_GAME_ID_LEN + 1);
        for bad in [
            "",
            "Quake",
            "a b",
            "../x",
            "a/b",
            ".hidden",
            "é",
            too_long.as_str(),
        ] {
            assert!(GameId::new(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(serde_json::from_str::<GameId>("\"UPPER\"").is_err());
    }

    #[test]
    fn rates_are_read_with_their_unit() {
        assert_eq!(parse_rate("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("80Mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("100mbit/s"), Ok(12_500_000));
        assert_eq!(parse_rate("1.5 KB"), Ok(1500));
        assert_eq!(parse_rate("2GiB"), Ok(2 << 30));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("0MiB"), Ok(0));
        for bad in [
            "",
            "10",
            "MiB",
            "10 parsecs",
            "-1MiB",
            "1e9MiB",
            "1bit",
            "1..2MB",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn versions_compare_in_natural_order() {
        let v = Version::new;
        // Ascending: every version is smaller than the ones after it.
        let ascending = [
            "",
            "-1",
            "0",
            "00",
            "1",
            "1.0",
            "1.0.1",
            "1.0a",
            "1.2",
            "1.9",
            "1.9-beta",
            "1.10",
            "1.10-beta",
            "1a",
            "1b",
            "01",
            "2",
            "10",
            "20231101",
            "20240612",
            "99999999999999999999999999999999999999999",
            "a",
            "a1",
            "a2",
            "a10",
            "b",
        ];
        for (i, a) in ascending.into_iter().enumerate() {
            for (j, b) in ascending.into_iter().enumerate() {
                assert_eq!(v(a).cmp(&v(b)), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        // The cycle of the old order (2 < 10 numerically, 10 < 1a and
        // 1a < 2 by bytes) is gone.
        assert!(v("2") < v("10") && v("1a") < v("2") && v("1a") < v("10"));
        let latest = [v("1.9"), v("1.10"), v("1.2")].into_iter().max().unwrap();
        assert_eq!(latest, v("1.10"));
    }
}
