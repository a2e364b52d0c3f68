//! Label selectors: any text parses or fails with a reason; what parses
//! prints as a selector that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoke_api::selector::Selector;

fuzz_target!(|text: &str| {
    match Selector::parse(text) {
        Ok(sel) => assert_eq!(Selector::parse(&sel.to_string()), Ok(sel)),
        Err(e) => assert!(e.contains("selector") || e.contains("requirement"), "{e}"),
    }
});
