//! The library index in the state dir (a cache that may be damaged):
//! decoding never panics, and what decodes re-encodes to the same index.
#![no_main]

use lanspreadd::library::LibraryIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = LibraryIndex::parse(data) {
        let bytes = index.to_bytes().unwrap();
        assert_eq!(LibraryIndex::parse(&bytes).unwrap(), index);
    }
});
