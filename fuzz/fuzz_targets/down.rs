//! Hub → agent messages: any bytes decode or fail; what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoke_api::protocol::Down;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Down::decode(data) {
        assert_eq!(Down::decode(&msg.encode()).unwrap(), msg);
    }
});
