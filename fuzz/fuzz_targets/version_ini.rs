//! `version.ini` from arbitrary bytes (a game folder is outside input):
//! parsing never panics, and a version it accepts is non-empty, bounded
//! and free of control characters (it reaches peers and IPC lines).
#![no_main]

use lanspreadd::library::parse_version_ini;
use lanspreadd::library::version_ini::MAX_VERSION_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(version) = parse_version_ini(data) {
        let text = version.as_str();
        assert!(!text.is_empty());
        assert!(text.len() <= MAX_VERSION_LEN);
        assert!(!text.chars().any(char::is_control));
    }
});
