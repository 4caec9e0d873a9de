//! Version ordering on arbitrary strings: never panics (huge numbers,
//! empty components), is antisymmetric, and agrees with equality.
#![no_main]

use lanspread_proto::model::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    let (a, b) = (Version::new(a), Version::new(b));
    assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
    assert_eq!(a.cmp(&b) == std::cmp::Ordering::Equal, a == b);
});
