//! Module chunk frames: any bytes split or fail; a split frame re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spoke_api::protocol::ModuleChunk;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, rest)) = ModuleChunk::decode(data) {
        assert!(data.ends_with(rest));
        let frame = header.encode(rest);
        let (again, rest2) = ModuleChunk::decode(&frame).unwrap();
        assert_eq!(again, header);
        assert_eq!(rest2, rest);
    }
});
