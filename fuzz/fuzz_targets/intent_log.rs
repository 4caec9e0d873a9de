//! The install intent log (`.lanspread.json`, possibly damaged on disk):
//! decoding never panics, and what decodes re-encodes to the same intent.
#![no_main]

use lanspreadd::install::intent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = intent::parse(data) {
        let again = intent::parse(&serde_json::to_vec(&decoded).unwrap()).unwrap();
        assert_eq!(again, decoded);
    }
});
