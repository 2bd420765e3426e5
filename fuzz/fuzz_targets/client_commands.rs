//! Any bytes a client sends as a WebSocket message must decode into commands or
//! fail with an error, never panic.
#![no_main]

use herald_protocol::centrifuge::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Ok(commands) = Codec::Json.decode_commands(frame) {
        // Whatever decoded re-encodes (client side) without panicking.
        let mut out = Vec::new();
        for command in &commands {
            Codec::Json.append_command(&mut out, command);
        }
    }
});
