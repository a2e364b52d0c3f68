//! `-o jsonpath=TEMPLATE`: kubectl's JSONPath templates, the common subset.
//!
//! Text outside braces is printed as is; inside braces: a path
//! (`.metadata.name`, `$.items[0]`, `.items[*].metadata.name`,
//! `.metadata.labels['app.kubernetes.io/name']`, `..image` is not
//! supported), a filter (`.status.conditions[?(@.type=="Ready")].status`),
//! a quoted string (`{"\n"}`), and `{range PATH}...{end}`. Several results
//! of one path are printed separated by spaces, as kubectl does. (The
//! JSONPath crates implement RFC 9535's `$...` expressions, not kubectl's
//! templates around them, so this small evaluator is ours.)

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b=="x")]` or `[?(@.a!="x")]`: elements whose sub-path
    /// compares as asked.
    Filter(Vec<Step>, bool, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug)]
pub struct Template(Vec<Node>);

impl Template {
    pub fn parse(template: &str) -> Result<Template, String> {
        let mut tokens = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    tokens.push(Token::Text(rest.to_string()));
                    rest = "";
                }
                Some(i) => {
                    if i > 0 {
                        tokens.push(Token::Text(rest[..i].to_string()));
                    }
                    let end = closing_brace(&rest[i..])
                        .ok_or_else(|| format!("unclosed action in template {template:?}"))?;
                    tokens.push(Token::Action(rest[i + 1..i + end].trim().to_string()));
                    rest = &rest[i + end + 1..];
                }
            }
        }
        let mut iter = tokens.into_iter();
        let nodes = parse_nodes(&mut iter, false)?;
        Ok(Template(nodes))
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> Result<String, String> {
        let mut out = String::new();
        render(&self.0, root, &mut out)?;
        Ok(out)
    }
}

enum Token {
    Text(String),
    Action(String),
}

/// Where the `}` closing the `{` at the start of `s` is (quotes skipped).
fn closing_brace(s: &str) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '}') => return Some(i),
            _ => {}
        }
        escaped = false;
    }
    None
}

fn parse_nodes(
    tokens: &mut impl Iterator<Item = Token>,
    in_range: bool,
) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    while let Some(t) = tokens.next() {
        match t {
            Token::Text(s) => nodes.push(Node::Text(s)),
            Token::Action(a) if a == "end" => {
                if in_range {
                    return Ok(nodes);
                }
                return Err("{end} without {range}".into());
            }
            Token::Action(a) => {
                if let Some(path) = a.strip_prefix("range ") {
                    let steps = parse_path(path.trim())?;
                    let body = parse_nodes(tokens, true)?;
                    nodes.push(Node::Range(steps, body));
                } else if let Some(text) = quoted(&a) {
                    nodes.push(Node::Text(text));
                } else {
                    nodes.push(Node::Path(parse_path(&a)?));
                }
            }
        }
    }
    if in_range {
        return Err("{range} without {end}".into());
    }
    Ok(nodes)
}

/// A quoted string with `\n`, `\t`, `\\` and `\"` escapes.
fn quoted(s: &str) -> Option<String> {
    let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let p = path.strip_prefix('$').unwrap_or(path);
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    return Err(format!("recursive descent (..) is not supported: {path}"));
                }
                // `\.` keeps a dot in a key (`labels.app\.kubernetes\.io/name`).
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let close =
                    find_bracket(&chars, i).ok_or_else(|| format!("unclosed [ in {path}"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                steps.push(parse_bracket(inner.trim(), path)?);
                i = close + 1;
            }
            c if steps.is_empty() && i == 0 => {
                // `{metadata.name}` without the leading dot.
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let _ = c;
                steps.push(Step::Field(chars[start..i].iter().collect()));
            }
            c => return Err(format!("unexpected {c:?} in {path}")),
        }
    }
    Ok(steps)
}

fn find_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut quote = None;
    for (j, c) in chars.iter().enumerate().skip(open + 1) {
        match (quote, *c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(*c),
            (None, ']') => return Some(j),
            _ => {}
        }
    }
    None
}

fn parse_bracket(inner: &str, path: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(name) = quoted(inner) {
        return Ok(Step::Field(name));
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Ok(Step::Index(n));
    }
    if let Some(cond) = inner.strip_prefix("?(").and_then(|c| c.strip_suffix(')')) {
        let (lhs, rhs, equal) = if let Some((l, r)) = cond.split_once("!=") {
            (l, r, false)
        } else if let Some((l, r)) = cond.split_once("==") {
            (l, r, true)
        } else {
            return Err(format!(
                "filter {inner} in {path}: only == and != are supported"
            ));
        };
        let sub = lhs
            .trim()
            .strip_prefix('@')
            .ok_or_else(|| format!("filter {inner} in {path} must start with @"))?;
        let want = quoted(rhs.trim()).unwrap_or_else(|| rhs.trim().to_string());
        return Ok(Step::Filter(parse_path(sub)?, equal, want));
    }
    Err(format!("unsupported [{inner}] in {path}"))
}

fn eval<'a>(steps: &[Step], root: &'a Value) -> Result<Vec<&'a Value>, String> {
    let mut cur = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(name) => match v.get(name.as_str()) {
                    Some(x) => next.push(x),
                    None => return Err(format!("{name} is not found")),
                },
                Step::Index(n) => {
                    let arr = v.as_array().ok_or("array index on a non-array")?;
                    let i = if *n < 0 { arr.len() as i64 + n } else { *n };
                    match usize::try_from(i).ok().and_then(|i| arr.get(i)) {
                        Some(x) => next.push(x),
                        None => {
                            return Err(format!(
                                "array index out of bounds: index {n}, length {}",
                                arr.len()
                            ));
                        }
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(sub, equal, want) => {
                    for item in v.as_array().into_iter().flatten() {
                        let got = eval(sub, item)
                            .ok()
                            .and_then(|g| g.first().map(|x| text(x)));
                        if (got.as_deref() == Some(want.as_str())) == *equal {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

/// A value as kubectl prints it: strings bare, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render(nodes: &[Node], root: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Path(steps) => {
                let vals = eval(steps, root)?;
                let parts: Vec<String> = vals.into_iter().map(text).collect();
                out.push_str(&parts.join(" "));
            }
            Node::Range(steps, body) => {
                let vals = eval(steps, root)?;
                // `{range .items[*]}` walks the elements; a path to an array
                // walks the array's elements.
                let items: Vec<&Value> = match vals.as_slice() {
                    [Value::Array(a)] => a.iter().collect(),
                    _ => vals,
                };
                for item in items {
                    render(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn kubectls_common_templates() {
        let list = json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web"}},
             "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        ]});
        assert_eq!(run("{.items[*].metadata.name}", &list), "a b");
        assert_eq!(run("{.items[0].metadata.name}", &list), "a");
        assert_eq!(run("{.items[-1].metadata.name}", &list), "b");
        assert_eq!(run("{$.kind}", &list), "List");
        assert_eq!(
            run("{range .items[*]}{.metadata.name}{\"\\n\"}{end}", &list),
            "a\nb\n"
        );
        assert_eq!(
            run(
                "{.items[0].metadata.labels.app\\.kubernetes\\.io/name}",
                &list
            ),
            "web"
        );
        assert_eq!(
            run(
                "{.items[0].metadata.labels['app.kubernetes.io/name']}",
                &list
            ),
            "web"
        );
        assert_eq!(
            run(
                r#"{.items[*].status.conditions[?(@.type=="Ready")].status}"#,
                &list
            ),
            "True False"
        );
        assert_eq!(run("name={.items[1].metadata.name}!", &list), "name=b!");
        assert_eq!(
            run("{.items[0].status.conditions[0]}", &list),
            r#"{"status":"True","type":"Ready"}"#
        );
    }

    #[test]
    fn bad_templates_and_missing_fields_are_errors() {
        assert!(Template::parse("{.items").is_err());
        assert!(Template::parse("{range .items[*]}x").is_err());
        assert!(Template::parse("{end}").is_err());
        let t = Template::parse("{.spec.nope}").unwrap();
        assert_eq!(
            t.render(&json!({"spec": {}})).unwrap_err(),
            "nope is not found"
        );
    }
}
