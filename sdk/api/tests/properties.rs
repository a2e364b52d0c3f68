//! Properties of everything in spoke-api that reads input from the network:
//! the MQTT messages both sides decode, quantities, label selectors and the
//! strict decoding and validation of objects. Arbitrary bytes never panic,
//! what a decoder accepts encodes back to itself, and refusals name the
//! field. A fixed number of cases runs in `cargo test`; `scripts/fuzz` runs
//! many more (`PROPTEST_CASES`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use spoke_api::fuzz::{self, bytes_near, config, mutated};
use spoke_api::protocol::{DecodeError, Down, MAX_MESSAGE_BYTES, ModuleChunk, Up};
use spoke_api::quantity::{Quantity, QuantityError};
use spoke_api::selector::{LabelSelector, Op, Requirement, Selector};
use spoke_api::validation::{FieldError, decode_strict};

/// Field names of the protocol messages and pod specs, so that mutations
/// often produce fields the decoders know.
const KEYS: &[&str] = &[
    "type",
    "revision",
    "fromRevision",
    "pods",
    "deleted",
    "appliedRevision",
    "node",
    "statusDigest",
    "id",
    "image",
    "offset",
    "error",
    "text",
    "namespace",
    "name",
    "uid",
    "generation",
    "spec",
    "deleting",
    "configMaps",
    "secrets",
    "data",
    "binaryData",
    "tailLines",
    "status",
    "gone",
    "capacity",
    "architecture",
    "operatingSystem",
    "agentVersion",
    "containers",
    "restartPolicy",
    "nodeName",
    "volumes",
    "resources",
    "limits",
    "requests",
    "cpu",
    "memory",
    "env",
    "value",
    "args",
    "command",
    "phase",
    "conditions",
    "containerStatuses",
    "state",
    "running",
    "waiting",
    "terminated",
    "exitCode",
    "reason",
    "message",
    "startedAt",
    "restartCount",
    "digest",
    "total",
    "metadata",
    "labels",
    "annotations",
    "kind",
    "apiVersion",
    "emptyDir",
    "sizeLimit",
    "hostPath",
    "path",
    "volumeMounts",
    "mountPath",
    "readOnly",
    "ports",
    "containerPort",
    "livenessProbe",
    "exec",
    "httpGet",
    "port",
    "tolerations",
    "affinity",
    "key",
    "operator",
    "effect",
    "tolerationSeconds",
    "terminationGracePeriodSeconds",
];

fn desired_pod(name: &str) -> Value {
    json!({
        "namespace": "default", "name": name, "uid": format!("u-{name}"), "generation": 2,
        "spec": {
            "restartPolicy": "OnFailure", "nodeName": "pi-1",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "hello:v1", "args": ["a", "b"],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": 0.1}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 3},
            }],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}},
                        {"name": "cfg", "configMap": {"name": "c", "items": [{"key": "k", "path": "p"}]}}],
            "tolerations": [{"key": "x", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
        },
        "configMaps": {"c": {"data": {"k": "v"}, "binaryData": {"b": "AAEC"}}},
        "secrets": {"s": {"binaryData": {"password": "aHVudGVyMg=="}}},
    })
}

fn pod_report(name: &str) -> Value {
    json!({
        "namespace": "default", "name": name, "uid": format!("u-{name}"),
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": "main", "ready": true, "restartCount": 3, "image": "hello:v1",
                "imageID": "sha256:00", "started": true,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "trap",
                                              "startedAt": "2026-01-01T00:00:00Z",
                                              "finishedAt": "2026-01-01T00:00:01Z"}},
            }],
        },
    })
}

fn downs() -> Vec<Value> {
    vec![
        json!({"type": "desired", "revision": 7, "pods": [desired_pod("a"), desired_pod("b")]}),
        json!({"type": "delta", "fromRevision": 7, "revision": 9, "pods": [desired_pod("c")],
               "deleted": ["u-a"]}),
        json!({"type": "upToDate", "revision": 3}),
        json!({"type": "sendStatus"}),
        json!({"type": "logs", "id": 4, "namespace": "default", "name": "a", "tailLines": 10}),
    ]
}

fn ups() -> Vec<Value> {
    vec![
        json!({"type": "hello", "appliedRevision": 7,
               "node": {"capacity": {"cpu": "4", "memory": "1Gi", "pods": 110},
                        "architecture": "arm64", "operatingSystem": "linux", "agentVersion": "0.1.0"},
               "pods": [pod_report("a")], "statusDigest": "0123456789abcdef"}),
        json!({"type": "ack", "appliedRevision": 9}),
        json!({"type": "status", "pods": [pod_report("a"), dict_gone()]}),
        json!({"type": "moduleRequest", "id": 1, "image": "hello:v1", "offset": 131072}),
        json!({"type": "resync", "appliedRevision": 2}),
        json!({"type": "logs", "id": 4, "text": "line\n"}),
        json!({"type": "logs", "id": 5, "error": "no such pod"}),
    ]
}

fn dict_gone() -> Value {
    let mut r = pod_report("b");
    r["gone"] = json!(true);
    r
}

fn encoded(values: Vec<Value>) -> Vec<Vec<u8>> {
    values
        .into_iter()
        .map(|v| serde_json::to_vec(&v).unwrap())
        .collect()
}

fn frames() -> Vec<Vec<u8>> {
    let header = ModuleChunk {
        id: 1,
        digest: format!("sha256:{}", "ab".repeat(32)),
        offset: 0,
        total: 5,
        error: None,
    };
    let error = ModuleChunk {
        error: Some("module x:v1 not found".into()),
        ..header.clone()
    };
    vec![header.encode(b"\0asm\x01"), error.encode(&[])]
}

/// Every seed message is a message both sides accept: otherwise the
/// mutations below would start from nothing.
#[test]
fn the_seed_messages_decode() {
    for v in downs() {
        Down::decode(&serde_json::to_vec(&v).unwrap()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    for v in ups() {
        Up::decode(&serde_json::to_vec(&v).unwrap()).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Hub → agent: any payload is a message or an error, never a panic;
    /// what decodes encodes back to the same message.
    #[test]
    fn down_payloads_decode_or_fail_cleanly(payload in bytes_near(encoded(downs()))) {
        if let Ok(msg) = Down::decode(&payload) {
            prop_assert_eq!(Down::decode(&msg.encode()).unwrap(), msg);
        }
    }

    /// Agent → hub: the same.
    #[test]
    fn up_payloads_decode_or_fail_cleanly(payload in bytes_near(encoded(ups()))) {
        if let Ok(msg) = Up::decode(&payload) {
            prop_assert_eq!(Up::decode(&msg.encode()).unwrap(), msg);
        }
    }

    /// Messages changed in their structure (wrong types, missing and extra
    /// fields, edge numbers) reach further into the decoders than bytes do.
    #[test]
    fn mutated_down_messages_round_trip_when_accepted(doc in mutated(downs(), KEYS)) {
        let payload = serde_json::to_vec(&doc).unwrap();
        if let Ok(msg) = Down::decode(&payload) {
            let again = Down::decode(&msg.encode()).unwrap();
            prop_assert_eq!(&again, &msg);
            prop_assert_eq!(again.encode(), msg.encode());
        }
    }

    #[test]
    fn mutated_up_messages_round_trip_when_accepted(doc in mutated(ups(), KEYS)) {
        let payload = serde_json::to_vec(&doc).unwrap();
        if let Ok(msg) = Up::decode(&payload) {
            let again = Up::decode(&msg.encode()).unwrap();
            prop_assert_eq!(&again, &msg);
            prop_assert_eq!(again.encode(), msg.encode());
        }
    }

    /// Module chunk frames: arbitrary bytes split or fail; the data of a
    /// frame that splits is the frame's tail.
    #[test]
    fn module_frames_split_or_fail_cleanly(payload in bytes_near(frames())) {
        if let Ok((header, data)) = ModuleChunk::decode(&payload) {
            prop_assert!(payload.ends_with(data));
            let frame = header.encode(data);
            let (again, data2) = ModuleChunk::decode(&frame).unwrap();
            prop_assert_eq!(again, header);
            prop_assert_eq!(data2, data);
        }
    }

    /// Any header with any data survives the frame.
    #[test]
    fn module_frames_round_trip(
        id in any::<u64>(), offset in any::<u64>(), total in any::<u64>(),
        digest in fuzz::text(), error in proptest::option::of(fuzz::text()),
        data in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let header = ModuleChunk { id, digest, offset, total, error };
        let frame = header.encode(&data);
        let (back, rest) = ModuleChunk::decode(&frame).unwrap();
        prop_assert_eq!(back, header);
        prop_assert_eq!(rest, &data[..]);
    }
}

#[test]
fn messages_over_the_limit_are_refused_before_parsing() {
    let mut big = serde_json::to_vec(&json!({"type": "logs", "id": 1, "text": ""})).unwrap();
    big.splice(
        big.len() - 2..big.len() - 2,
        std::iter::repeat_n(b'x', MAX_MESSAGE_BYTES),
    );
    assert!(matches!(Up::decode(&big), Err(DecodeError::TooLarge(_))));
    assert!(matches!(Down::decode(&big), Err(DecodeError::TooLarge(_))));
    assert!(matches!(
        ModuleChunk::decode(&big),
        Err(DecodeError::TooLarge(_))
    ));
}

const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// `n × 10^exp` rounded up, exactly, or `None` past u64.
fn decimal(n: u128, exp: i32) -> Option<u64> {
    let v = if exp >= 0 {
        n.checked_mul(10u128.pow(exp as u32))?
    } else {
        n.div_ceil(10u128.pow(exp.unsigned_abs()))
    };
    u64::try_from(v).ok()
}

proptest! {
    #![proptest_config(config(512))]

    /// No text makes the quantity parser panic; what it refuses, it refuses
    /// with one of its three reasons, and milli-units are never below units.
    #[test]
    fn quantities_parse_or_fail_cleanly(text in prop_oneof![
        fuzz::text(),
        "[+-]?[0-9]{0,25}(\\.[0-9]{0,12})?([eEinumkKMGTP]{0,2}[-+]?[0-9]{0,4})?",
    ]) {
        let q = Quantity(text.clone());
        let units = q.to_units();
        let milli = q.to_milli();
        if let (Ok(u), Ok(m)) = (&units, &milli) {
            // units = ceil(x), milli = ceil(1000 x): 1000(u - 1) < milli <= 1000 u.
            prop_assert!(u128::from(*m) <= u128::from(*u) * 1000, "{text}: {u} units, {m} milli");
            prop_assert!(*u == 0 || u128::from(*m) > (u128::from(*u) - 1) * 1000, "{text}: {u} units, {m} milli");
        }
        if units == Err(QuantityError::Syntax) {
            prop_assert_eq!(milli, Err(QuantityError::Syntax));
        }
    }

    /// Whole numbers with a decimal suffix are exact, in units and milli-units.
    #[test]
    fn decimal_quantities_are_exact(n in 0u64..=u64::from(u32::MAX), s in 0usize..DECIMAL.len()) {
        let (suffix, exp) = DECIMAL[s];
        let q = Quantity(format!("{n}{suffix}"));
        match decimal(u128::from(n), exp) {
            Some(want) => prop_assert_eq!(q.to_units(), Ok(want), "{}", q.0),
            None => prop_assert_eq!(q.to_units(), Err(QuantityError::Overflow), "{}", q.0),
        }
        match decimal(u128::from(n), exp + 3) {
            Some(want) => prop_assert_eq!(q.to_milli(), Ok(want), "{}", q.0),
            None => prop_assert_eq!(q.to_milli(), Err(QuantityError::Overflow), "{}", q.0),
        }
    }

    /// Decimal fractions are exact too: `a.bcd` cores are `abcd` millicores.
    #[test]
    fn fractions_are_exact(a in 0u64..100_000, b in 0u64..1000, zeros in 0usize..4) {
        let q = Quantity(format!("{a}.{b:03}{}", "0".repeat(zeros)));
        prop_assert_eq!(q.to_milli(), Ok(a * 1000 + b), "{}", q.0);
        prop_assert_eq!(q.to_units(), Ok(a + u64::from(b > 0)), "{}", q.0);
    }

    /// Binary suffixes are powers of two, up to the top of u64.
    #[test]
    fn binary_quantities_are_exact(n in 0u64..=u64::from(u32::MAX), s in 0usize..BINARY.len()) {
        let (suffix, shift) = BINARY[s];
        let q = Quantity(format!("{n}{suffix}"));
        let want = u64::try_from(u128::from(n) << shift).ok();
        match want {
            Some(w) => prop_assert_eq!(q.to_units(), Ok(w), "{}", q.0),
            None => prop_assert_eq!(q.to_units(), Err(QuantityError::Overflow), "{}", q.0),
        }
    }

    /// Negative quantities are refused as negative, whatever their form.
    #[test]
    fn negative_quantities_are_refused(n in 1u64..u64::MAX, s in 0usize..DECIMAL.len()) {
        let q = Quantity(format!("-{n}{}", DECIMAL[s].0));
        prop_assert_eq!(q.to_units(), Err(QuantityError::Negative));
        prop_assert_eq!(q.to_milli(), Err(QuantityError::Negative));
    }
}

fn label_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,20}[a-zA-Z0-9])?"
}

fn label_key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}"),
        label_name(),
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name,
        })
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let values = || prop::collection::vec(label_name(), 1..4);
    let op = prop_oneof![
        values().prop_map(Op::In),
        values().prop_map(Op::NotIn),
        Just(Op::Exists),
        Just(Op::DoesNotExist),
        // `key=` selects an empty value.
        Just(Op::In(vec![String::new()])),
    ];
    (label_key(), op).prop_map(|(key, op)| Requirement { key, op })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![label_key(), Just("app".to_string())],
        prop_oneof![label_name(), Just(String::new())],
        0..4,
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// `?labelSelector=` from anyone: parsed or refused, never a panic, and a
    /// refusal says what was wrong.
    #[test]
    fn label_selectors_parse_or_say_why(text in prop_oneof![
        fuzz::text(),
        "[a-z!=, ()]{0,30}",
        "([a-z]{1,3}(=|==|!=| in | notin )?[a-z(),]{0,6},?){0,4}",
    ]) {
        match Selector::parse(&text) {
            Ok(sel) => {
                // What parses prints as a selector that parses to the same.
                let printed = sel.to_string();
                prop_assert_eq!(Selector::parse(&printed), Ok(sel), "{:?} printed as {:?}", text, printed);
            }
            Err(e) => prop_assert!(
                e.contains("selector") || e.contains("requirement"),
                "{:?}: {}", text, e
            ),
        }
    }

    /// Selectors print and parse back to themselves, and match the same labels.
    #[test]
    fn label_selectors_round_trip(reqs in prop::collection::vec(requirement(), 0..5), l in labels()) {
        let sel = Selector(reqs);
        let back = Selector::parse(&sel.to_string()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.matches(&l), sel.matches(&l));
        prop_assert_eq!(&back, &sel);
    }

    /// The structured form (workload specs) converts with errors naming the
    /// field, and matches as its requirements do.
    #[test]
    fn structured_selectors_convert_or_name_the_field(doc in mutated(vec![json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                             {"key": "legacy", "operator": "DoesNotExist"}],
    })], &["matchLabels", "matchExpressions", "key", "operator", "values", "In", "NotIn", "Exists", "DoesNotExist"]),
        l in labels()) {
        let Ok(ls) = serde_json::from_value::<LabelSelector>(doc) else { return Ok(()) };
        match ls.to_selector() {
            Ok(sel) => {
                let direct = ls.match_labels.iter().all(|(k, v)| l.get(k) == Some(v));
                prop_assert!(!sel.matches(&l) || direct);
            }
            Err(e) => prop_assert!(e.starts_with("matchExpressions["), "{}", e),
        }
    }
}

fn pod_manifests() -> Vec<Value> {
    let mut spec = desired_pod("web")["spec"].clone();
    spec.as_object_mut().unwrap().remove("nodeName");
    vec![
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": spec}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
               "spec": {"containers": [{"name": "main", "image": "hello:v1"}]}}),
    ]
}

fn names_a_field(e: &FieldError) -> bool {
    // A cause names a path, or (for a field missing at the top) the message
    // names it in backquotes, as serde does; an unknown field may be called "".
    !e.field.is_empty()
        || e.message.contains('`')
        || (e.reason == "FieldValueUnknown" && e.message == "unknown field \"\"")
}

proptest! {
    #![proptest_config(config(256))]

    /// Pods as users send them: strict decoding and validation accept or
    /// refuse with causes that name the field, and never panic. An accepted
    /// pod encodes to a document that is accepted again, unchanged.
    #[test]
    fn pods_decode_and_validate_or_name_the_field(doc in mutated(pod_manifests(), spoke_api::fuzz::OBJECT_KEYS)) {
        // The hub refuses a body that is not an object before this.
        prop_assume!(doc.is_object());
        match decode_strict::<spoke_api::Pod>(doc.clone()) {
            Ok(pod) => {
                let errs = spoke_api::validation::validate_pod(&pod);
                for e in &errs {
                    prop_assert!(!e.field.is_empty(), "{:?} for {}", e, doc);
                }
                let again: spoke_api::Pod = decode_strict(serde_json::to_value(&pod).unwrap())
                    .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                prop_assert_eq!(&again, &pod);
                prop_assert_eq!(spoke_api::validation::validate_pod(&again), errs);
            }
            Err(causes) => {
                prop_assert!(!causes.is_empty());
                for e in &causes {
                    prop_assert!(names_a_field(e), "{:?} for {}", e, doc);
                }
            }
        }
    }
}
