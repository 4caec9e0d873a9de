//! The version order (natural order, docs/ipc.md "Versions") is a total
//! order over generated versions: antisymmetric, consistent with equality
//! and transitive, so "the latest" of any set of versions is the same
//! whatever order the peers answered in.

use std::cmp::Ordering;

use lanspread_proto::model::Version;
use proptest::prelude::*;

/// Versions built from the pieces that make orders disagree: numbers with
/// and without leading zeros, multi-digit numbers, separators, letters
/// sorting before and after digits, and non-ASCII text.
fn version() -> impl Strategy<Value = Version> {
    let piece = prop::sample::select(vec![
        "0",
        "00",
        "1",
        "01",
        "2",
        "9",
        "10",
        "010",
        "99999999999999999999999",
        ".",
        "-",
        "_",
        "a",
        "b",
        "beta",
        "rc",
        "é",
        " ",
    ]);
    prop::collection::vec(piece, 0..7).prop_map(|pieces| Version::new(pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_order_is_antisymmetric_and_agrees_with_equality(a in version(), b in version()) {
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
    }

    #[test]
    fn the_order_is_transitive(a in version(), b in version(), c in version()) {
        if a <= b && b <= c {
            prop_assert!(a <= c, "{a} <= {b} <= {c} but not {a} <= {c}");
        }
        if a < b && b < c {
            prop_assert!(a < c, "{a} < {b} < {c} but not {a} < {c}");
        }
    }

    #[test]
    fn the_latest_does_not_depend_on_the_answer_order(a in version(), b in version(), c in version()) {
        let orders = [
            [&a, &b, &c], [&a, &c, &b], [&b, &a, &c], [&b, &c, &a], [&c, &a, &b], [&c, &b, &a],
        ];
        let latest = |order: [&Version; 3]| order.into_iter().max().cloned();
        for order in orders {
            prop_assert_eq!(latest(order), latest([&a, &b, &c]));
        }
    }
}
