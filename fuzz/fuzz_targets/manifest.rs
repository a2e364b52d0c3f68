//! Manifests as `spoke apply` and the hub read them: a YAML (or JSON)
//! stream of documents, each decoded strictly as a Pod and validated.
//! Never a panic; every refusal names a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize as _;
use spoke_api::validation::{decode_strict, validate_pod};

fuzz_target!(|text: &str| {
    for de in serde_yaml::Deserializer::from_str(text).take(16) {
        let Ok(value) = serde_json::Value::deserialize(de) else {
            break;
        };
        if !value.is_object() {
            continue;
        }
        match decode_strict::<spoke_api::Pod>(value) {
            Ok(pod) => {
                for e in validate_pod(&pod) {
                    assert!(!e.field.is_empty(), "{e:?}");
                }
            }
            Err(causes) => assert!(!causes.is_empty()),
        }
    }
});
