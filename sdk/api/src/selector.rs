//! Label selectors, as Kubernetes writes them: the string form of
//! `?labelSelector=` and `spoke get -l` (`app=web,tier!=db,env in (a,b),
//! !legacy`), and the structured `LabelSelector` of workload specs
//! (`matchLabels` + `matchExpressions`). Both become one list of
//! [`Requirement`]s, matched the same way.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `spec.selector` of a workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One entry of `matchExpressions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What a requirement asks of one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// One term of a selector; a selector matches when every term does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

/// A parsed selector: all requirements must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match &self.op {
            Op::In(values) => got.is_some_and(|v| values.contains(v)),
            // Kubernetes: `x notin (a)` and `x!=a` also match objects without x.
            Op::NotIn(values) => !got.is_some_and(|v| values.contains(v)),
            Op::Exists => got.is_some(),
            Op::DoesNotExist => got.is_none(),
        }
    }
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the string form. Errors say which term and why.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for term in split_terms(text)? {
            out.push(parse_term(&term)?);
        }
        Ok(Selector(out))
    }
}

impl LabelSelector {
    /// The selector as requirements; fails on an unknown operator or on
    /// values that contradict it (`Exists` with values, `In` without).
    pub fn to_selector(&self) -> Result<Selector, String> {
        let mut out: Vec<Requirement> = self
            .match_labels
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            })
            .collect();
        for (i, e) in self.match_expressions.iter().enumerate() {
            let op = match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}].values: must be non-empty for operator {}",
                        e.operator
                    ));
                }
                "Exists" | "DoesNotExist" if !e.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}].values: must be empty for operator {}",
                        e.operator
                    ));
                }
                "In" => Op::In(e.values.clone()),
                "NotIn" => Op::NotIn(e.values.clone()),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator: \"{other}\" is not one of In, NotIn, Exists, DoesNotExist"
                    ));
                }
            };
            out.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Ok(Selector(out))
    }

    /// Whether the selector has no terms (Kubernetes: matches nothing for
    /// workloads, which is why validation refuses it there).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .0
            .iter()
            .map(|r| match &r.op {
                Op::In(v) if v.len() == 1 => format!("{}={}", r.key, v[0]),
                Op::In(v) => format!("{} in ({})", r.key, v.join(",")),
                Op::NotIn(v) if v.len() == 1 => format!("{}!={}", r.key, v[0]),
                Op::NotIn(v) => format!("{} notin ({})", r.key, v.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(text: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced \")\" in selector \"{text}\""))?;
                cur.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced \"(\" in selector \"{text}\""));
    }
    terms.push(cur);
    let terms: Vec<String> = terms.into_iter().map(|t| t.trim().to_string()).collect();
    if terms.len() == 1 && terms[0].is_empty() {
        return Ok(Vec::new());
    }
    if let Some(empty) = terms.iter().position(String::is_empty) {
        return Err(format!(
            "empty term at position {} in selector \"{text}\"",
            empty + 1
        ));
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let bad = |why: &str| format!("unable to parse requirement \"{term}\": {why}");
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        check_key(key).map_err(|e| bad(&e))?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::DoesNotExist,
        });
    }
    for (sym, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k).map_err(|e| bad(&e))?;
            check_value(v).map_err(|e| bad(&e))?;
            let values = vec![v.to_string()];
            return Ok(Requirement {
                key: k.into(),
                op: if negate {
                    Op::NotIn(values)
                } else {
                    Op::In(values)
                },
            });
        }
    }
    // `key in (a,b)` / `key notin (a,b)`: the key is the first word.
    let mut words = term.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        check_key(key).map_err(|e| bad(&e))?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::Exists,
        });
    }
    let (negate, list) = if let Some(l) = rest.strip_prefix("notin") {
        (true, l)
    } else if let Some(l) = rest.strip_prefix("in") {
        (false, l)
    } else {
        return Err(bad("expected one of =, ==, !=, in, notin"));
    };
    let list = list.trim();
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| bad("values must be in parentheses: key in (a,b)"))?;
    check_key(key).map_err(|e| bad(&e))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(bad("needs at least one value"));
    }
    for v in &values {
        check_value(v).map_err(|e| bad(&e))?;
    }
    Ok(Requirement {
        key: key.into(),
        op: if negate {
            Op::NotIn(values)
        } else {
            Op::In(values)
        },
    })
}

/// A label key: optional DNS prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
pub fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
    {
        return Err(format!(
            "key \"{key}\": the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
        ));
    }
    if name.is_empty() {
        return Err(format!("key \"{key}\": the name part must not be empty"));
    }
    check_name_part(name).map_err(|e| format!("key \"{key}\": {e}"))
}

/// A label value: empty, or like a key's name part.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|e| format!("value \"{value}\": {e}"))
}

fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = s.as_bytes();
    if !bytes.iter().all(|b| ok_char(*b))
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return Err(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_selectors_match_as_kubernetes_does() {
        let l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("spoke.dev/site", "farm-1"),
        ]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("env in (prod,staging)", true),
            ("env in (dev)", false),
            ("env notin (dev, staging)", true),
            ("missing notin (a)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("spoke.dev/site=farm-1,app=web", true),
            ("app=web, env in (prod), !legacy", true),
            ("app=web,env=dev", false),
        ];
        for (sel, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn bad_selectors_say_which_term() {
        for (sel, needle) in [
            ("app=web,", "empty term"),
            ("env in prod", "parentheses"),
            ("env in ()", "at least one value"),
            ("env between (a)", "expected one of"),
            ("bad key=x", "key \"bad key\""),
            ("-app=x", "must consist of"),
            ("env in (a", "unbalanced"),
        ] {
            let err = Selector::parse(sel).unwrap_err();
            assert!(err.contains(needle), "{sel}: {err}");
        }
    }

    #[test]
    fn structured_selectors_convert_and_check_operators() {
        let ls = LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            match_expressions: vec![LabelSelectorRequirement {
                key: "env".into(),
                operator: "NotIn".into(),
                values: vec!["dev".into()],
            }],
        };
        let s = ls.to_selector().unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev")])));
        assert_eq!(s.to_string(), "app=web,env!=dev");
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Exists".into(),
                values: vec!["y".into()],
            }],
            ..Default::default()
        };
        assert!(bad.to_selector().unwrap_err().contains("must be empty"));
    }
}
