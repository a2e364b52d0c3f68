//! Reading manifests: files, directories or standard input, each holding
//! one or more YAML (or JSON) documents. Errors say which file, which
//! document and what is wrong.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;
use spoke_api::resource::ResourceType;

/// One object read from a manifest.
pub struct Doc {
    pub source: String,
    pub rt: &'static ResourceType,
    pub object: Value,
}

impl Doc {
    pub fn name(&self) -> String {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    /// The object's namespace, or `default_ns`.
    pub fn namespace(&self, default_ns: &str) -> String {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_ns)
            .to_string()
    }
}

fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            out.extend(entries);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads every document of every file. The outer error is for files that
/// cannot be read at all; each document is `Ok` or an error naming it.
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<Vec<Result<Doc, String>>> {
    let mut docs = Vec::new();
    for path in expand(paths)? {
        let (label, text) = if path == Path::new("-") {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            ("<stdin>".to_string(), s)
        } else {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            (path.display().to_string(), text)
        };
        docs.extend(parse(&label, &text));
    }
    Ok(docs)
}

/// Splits a text into documents and checks each names a known kind.
pub fn parse(label: &str, text: &str) -> Vec<Result<Doc, String>> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = match Value::deserialize(de) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.push(Err(format!(
                    "{label}: document {n}: YAML syntax error: {e}"
                )));
                // The parser cannot resync after a syntax error.
                break;
            }
        };
        out.push(check(label, n, value));
    }
    out
}

fn check(label: &str, n: usize, value: Value) -> Result<Doc, String> {
    let at = format!("{label}: document {n}");
    if !value.is_object() {
        return Err(format!(
            "{at}: expected an object with apiVersion, kind and metadata"
        ));
    }
    let field = |name: &str| -> Result<String, String> {
        match value.get(name) {
            None => Err(format!("{at}: missing required field \"{name}\"")),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(other) => Err(format!(
                "{at}: field \"{name}\" must be a non-empty string, not {other}"
            )),
        }
    };
    let api_version = field("apiVersion")?;
    let kind = field("kind")?;
    let rt = ResourceType::for_manifest(&api_version, &kind).ok_or_else(|| {
        format!("{at}: no kind \"{kind}\" is registered for version \"{api_version}\"")
    })?;
    Ok(Doc {
        source: at,
        rt,
        object: value,
    })
}

/// Runs `each` on every document of `files` in order. It prints the line
/// `each` returns, or `error: ...` with its error; one bad document does not
/// stop the others, and the exit code says whether any failed.
pub async fn for_each(
    files: &[PathBuf],
    mut each: impl AsyncFnMut(Doc) -> Result<String, String>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut failed = false;
    for doc in read_all(files)? {
        let result = match doc {
            Ok(doc) => each(doc).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents() {
        let docs = parse(
            "f.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        );
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].as_ref().ok().map(|d| d.rt.kind), Some("Namespace"));
    }

    #[test]
    fn errors_name_the_file_the_document_and_the_problem() {
        let e = parse("f.yaml", "apiVersion: v1\nmetadata: {name: a}\n")
            .remove(0)
            .err()
            .unwrap();
        assert_eq!(e, "f.yaml: document 1: missing required field \"kind\"");
        let e = parse("f.yaml", "kind: Pod\napiVersion: v1\nmetadata: [\n")
            .remove(0)
            .err()
            .unwrap();
        assert!(
            e.starts_with("f.yaml: document 1: YAML syntax error"),
            "{e}"
        );
        assert!(e.contains("line"), "{e}");
        let e = parse("f.yaml", "apiVersion: v1\nkind: Gadget\n")
            .remove(0)
            .err()
            .unwrap();
        assert!(e.contains("no kind \"Gadget\""), "{e}");
        let e = parse("f.yaml", "apiVersion: v1\nkind: 5\n")
            .remove(0)
            .err()
            .unwrap();
        assert!(
            e.contains("field \"kind\" must be a non-empty string"),
            "{e}"
        );
    }

    /// Aliases that expand a billion times are refused, not expanded.
    #[test]
    fn a_billion_laughs_is_an_error_not_a_hang() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, prev) in ('b'..='i').zip('a'..='h') {
            let refs = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{i}: &{i} [{refs}]\n"));
        }
        let docs = parse("laughs.yaml", &text);
        assert_eq!(docs.len(), 1);
        let e = docs[0].as_ref().err().expect("refused");
        assert!(e.starts_with("laughs.yaml: document 1: "), "{e}");
    }

    /// Properties: any text is read into documents or errors that name
    /// the file and the document, never a panic; YAML and JSON spellings
    /// of the same objects read the same.
    mod properties {
        use proptest::prelude::*;
        use serde_json::json;
        use spoke_api::fuzz::{self, config};

        use super::super::*;

        fn objects() -> Vec<Value> {
            vec![
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"app": "x"}},
                       "spec": {"containers": [{"name": "m", "image": "hello:v1",
                                                "resources": {"limits": {"cpu": "100m"}}}]}}),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                       "data": {"k": "multi\nline: value # not a comment", "n": "007"}}),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}}}),
            ]
        }

        fn yaml_stream() -> impl Strategy<Value = String> {
            prop::collection::vec((0..3usize, any::<bool>()), 1..4).prop_map(|picks| {
                picks
                    .into_iter()
                    .map(|(i, as_json)| {
                        let v = &objects()[i];
                        if as_json {
                            format!("{}\n", serde_json::to_string_pretty(v).unwrap())
                        } else {
                            serde_yaml::to_string(v).unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("---\n")
            })
        }

        fn check_labels(text: &str) -> Result<(), TestCaseError> {
            for (i, doc) in parse("f.yaml", text).into_iter().enumerate() {
                match doc {
                    Ok(d) => prop_assert!(d.source.starts_with("f.yaml: document ")),
                    Err(e) => prop_assert!(e.starts_with("f.yaml: document "), "{}: {}", i, e),
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(config(256))]

            #[test]
            fn any_text_reads_or_names_the_document(text in prop_oneof![
                fuzz::text(),
                ".{0,200}",
                "([a-z]{1,4}: (&a |\\*a |!tag |\\[|\\{|\"|'|-|[0-9.e+-]{1,4}|[a-z]{0,3})\n?( {0,4}- |---\n|\\.\\.\\.\n)?){0,12}",
            ]) {
                check_labels(&text)?;
            }

            #[test]
            fn damaged_manifests_read_or_name_the_document(
                text in yaml_stream(),
                cuts in prop::collection::vec((any::<prop::sample::Index>(), "[ \n:\\-\\[{}\"'&*!#|>a-z0-9]{0,3}"), 1..4),
            ) {
                let mut text = text;
                for (at, insert) in cuts {
                    let mut i = at.index(text.len() + 1);
                    while !text.is_char_boundary(i) {
                        i -= 1;
                    }
                    text.insert_str(i, &insert);
                }
                check_labels(&text)?;
            }

            #[test]
            fn yaml_and_json_spellings_read_the_same(text in yaml_stream()) {
                let docs = parse("f.yaml", &text);
                prop_assert!(docs.iter().all(Result::is_ok), "{:?}", docs.iter().filter_map(|d| d.as_ref().err()).collect::<Vec<_>>());
                for d in docs.into_iter().flatten() {
                    prop_assert!(objects().contains(&d.object), "{}", d.object);
                }
            }
        }
    }
}
