//! IPC lines from arbitrary bytes, both directions: decoding never panics
//! and round-trips.
#![no_main]

use lanspread_proto::ipc::{ClientRequest, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ClientRequest>(data) {
        let again: ClientRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        let again: ServerMessage = serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
        assert_eq!(again, message);
    }
});
