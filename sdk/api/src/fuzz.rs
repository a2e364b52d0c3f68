//! Generators for the property tests of every crate that reads input from
//! the network (feature `proptest`, for dev-dependencies only): arbitrary
//! JSON, and mutations of a known-good value, which reach deeper into a
//! decoder than random bytes do.
//!
//! Each property runs a fixed number of cases in `cargo test`;
//! `PROPTEST_CASES` raises it for a long run (`scripts/fuzz`).

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// A config with `cases` cases, unless `PROPTEST_CASES` says otherwise.
pub fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Text that hits the corners: empty, control characters, non-ASCII,
/// separators the parsers split on, and long runs.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9.-]{0,12}",
        2 => ".{0,16}",
        1 => "[=!,() \\\\/:.%+*-]{0,12}",
        1 => Just(String::new()),
        1 => "[a-z]{0,3}".prop_map(|s| s.repeat(100)),
    ]
}

/// Numbers at the edges of the integer types, and ordinary ones.
pub fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..1000).prop_map(Value::from),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(i64::from(i32::MAX) + 1),
            Just(i64::from(i32::MIN) - 1)
        ]
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

/// Any JSON value, at most a few levels deep; object keys are often ones
/// that `keys` lists (field names the decoders know).
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        let key = prop_oneof![
            3 => proptest::sample::select(keys).prop_map(str::to_string),
            1 => text(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a JSON document.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Replace the value at a place with another (often of another type).
    Replace(Index, Value),
    /// Remove the value at a place from its object or array.
    Remove(Index),
    /// Add a field (known or not) to an object.
    Insert(Index, String, Value),
    /// Duplicate an array element.
    Repeat(Index),
}

fn mutation(keys: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        3 => proptest::sample::select(keys).prop_map(str::to_string),
        1 => text(),
    ];
    prop_oneof![
        4 => (any::<Index>(), json(keys)).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        2 => (any::<Index>(), key, json(keys)).prop_map(|(i, k, v)| Mutation::Insert(i, k, v)),
        1 => any::<Index>().prop_map(Mutation::Repeat),
    ]
}

/// One of `seeds`, changed in one to four places.
pub fn mutated(seeds: Vec<Value>, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(seeds),
        prop::collection::vec(mutation(keys), 1..5),
    )
        .prop_map(|(mut doc, mutations)| {
            for m in mutations {
                apply(&mut doc, m);
            }
            doc
        })
}

/// JSON pointers of every value in `v`, the root first.
pub fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out.reverse();
    out
}

/// Applies `m` to `doc`.
pub fn apply(doc: &mut Value, m: Mutation) {
    let places = pointers(doc);
    let pick = |i: &Index| places[i.index(places.len())].clone();
    match m {
        Mutation::Replace(i, v) => {
            if let Some(slot) = doc.pointer_mut(&pick(&i)) {
                *slot = v;
            }
        }
        Mutation::Remove(i) => {
            let at = pick(&i);
            let Some((parent, last)) = at.rsplit_once('/') else {
                return;
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            match doc.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(n) = last.parse::<usize>()
                        && n < a.len()
                    {
                        a.remove(n);
                    }
                }
                _ => {}
            }
        }
        Mutation::Insert(i, k, v) => {
            if let Some(Value::Object(m)) = doc.pointer_mut(&pick(&i)) {
                m.insert(k, v);
            }
        }
        Mutation::Repeat(i) => {
            if let Some(Value::Array(a)) = doc.pointer_mut(&pick(&i))
                && let Some(first) = a.first().cloned()
            {
                a.push(first);
            }
        }
    }
}

/// Bytes that are often almost right: `good` with bytes flipped, cut,
/// inserted or repeated; or anything at all.
pub fn bytes_near(good: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<Index>(), 0u8..4, any::<u8>());
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        3 => (proptest::sample::select(good), prop::collection::vec(edit, 1..6)).prop_map(
            |(mut b, edits)| {
                for (i, op, byte) in edits {
                    if b.is_empty() {
                        b.push(byte);
                        continue;
                    }
                    let at = i.index(b.len());
                    match op {
                        0 => b[at] = byte,
                        1 => b.truncate(at),
                        2 => b.insert(at, byte),
                        _ => {
                            let tail = b[at..].to_vec();
                            b.extend_from_slice(&tail);
                        }
                    }
                }
                b
            }
        ),
    ]
}

/// Field names of the API's object kinds, for mutations of manifests and
/// objects: a mutation that renames or adds a key picks one the decoders
/// know, so it reaches validation instead of stopping at an unknown field.
pub const OBJECT_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "spec",
    "containers",
    "image",
    "resources",
    "limits",
    "requests",
    "cpu",
    "memory",
    "restartPolicy",
    "volumes",
    "emptyDir",
    "hostPath",
    "path",
    "volumeMounts",
    "mountPath",
    "env",
    "value",
    "valueFrom",
    "configMapKeyRef",
    "key",
    "replicas",
    "selector",
    "matchLabels",
    "template",
    "strategy",
    "type",
    "rollingUpdate",
    "maxSurge",
    "maxUnavailable",
    "data",
    "binaryData",
    "stringData",
    "schedule",
    "jobTemplate",
    "completions",
    "parallelism",
    "backoffLimit",
    "tolerations",
    "operator",
    "effect",
    "nodeSelector",
    "affinity",
    "livenessProbe",
    "httpGet",
    "port",
    "exec",
    "command",
    "periodSeconds",
    "failureThreshold",
    "terminationGracePeriodSeconds",
    "hard",
    "pods",
    "sizeLimit",
    "matchExpressions",
    "values",
    "suspend",
    "concurrencyPolicy",
    "taints",
    "max",
    "min",
    "default",
    "defaultRequest",
    "involvedObject",
    "reason",
    "message",
    "count",
    "updateStrategy",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "manualSelector",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "startingDeadlineSeconds",
    "ports",
    "containerPort",
    "immutable",
];
