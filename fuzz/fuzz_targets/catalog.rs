//! The catalog (`--catalog FILE`, admin-supplied JSON): parsing arbitrary
//! text never panics, and what it accepts has unique, valid ids.
#![no_main]

use lanspreadd::catalog::Catalog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(catalog) = Catalog::parse(text, "fuzz") {
        for entry in catalog.entries() {
            assert_eq!(catalog.get(&entry.id).map(|e| &e.id), Some(&entry.id));
        }
    }
});
