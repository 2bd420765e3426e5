//! Any `Last-Event-ID` a client sends must decode or fail cleanly, and whatever
//! decodes must encode back to the same text.
#![no_main]

use herald_protocol::ResumeToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<String>)| {
    let (token, channels) = input;
    if let Ok(decoded) = ResumeToken::decode(token, &channels) {
        let mut encoded = Vec::new();
        ResumeToken::encode(&channels, &decoded.positions, &mut encoded);
        let again = ResumeToken::decode(std::str::from_utf8(&encoded).unwrap(), &channels);
        assert_eq!(again.as_ref(), Ok(&decoded));
    }
});
