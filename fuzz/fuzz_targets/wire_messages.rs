//! Peer wire messages from arbitrary bytes: decoding never panics, and
//! whatever decodes re-encodes to something that decodes to the same value.
#![no_main]

use lanspread_proto::wire::{Availability, DataHeader, Request, Response};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip::<DataHeader>(data);
    round_trip::<Availability>(data);
});
