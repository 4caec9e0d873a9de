//! Version ordering on arbitrary strings: never panics (huge numbers,
//! empty components), is antisymmetric, agrees with equality, and is
//! transitive (up to three versions, one per line).
#![no_main]

use lanspread_proto::model::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let mut next = || Version::new(parts.next().unwrap_or(""));
    let (a, b, c) = (next(), next(), next());
    for (x, y) in [(&a, &b), (&b, &c), (&a, &c)] {
        assert_eq!(x.cmp(y), y.cmp(x).reverse());
        assert_eq!(x.cmp(y) == std::cmp::Ordering::Equal, x == y);
    }
    if a <= b && b <= c {
        assert!(a <= c, "not transitive: {a} <= {b} <= {c}");
    }
});
