//! Quantities: any text reads or fails; units and milli-units agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoke_api::quantity::Quantity;

fuzz_target!(|text: &str| {
    let q = Quantity(text.to_string());
    if let (Ok(u), Ok(m)) = (q.to_units(), q.to_milli()) {
        let (u, m) = (u128::from(u), u128::from(m));
        assert!(
            m <= u * 1000 && (u == 0 || m > (u - 1) * 1000),
            "{text}: {u} {m}"
        );
    }
});
