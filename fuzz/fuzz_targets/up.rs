//! Agent → hub messages: any bytes decode or fail; what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoke_api::protocol::Up;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Up::decode(data) {
        assert_eq!(Up::decode(&msg.encode()).unwrap(), msg);
    }
});
