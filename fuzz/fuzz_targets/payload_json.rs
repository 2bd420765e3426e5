//! Accepted JSON payloads must stay valid JSON on a single line, so they embed
//! unchanged into an SSE `data:` line.
#![no_main]

use herald_protocol::Payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Payload::Json(json)) = Payload::json(data) {
        assert!(!json.contains(&b'\n') && !json.contains(&b'\r'));
        assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
    }
});
