//! What a request asks to do, read from its method, path and query alone
//! (never its body): verb, resource, namespace, name, as Kubernetes' request
//! info does, so that authorization and the audit log need no knowledge of
//! the kinds served.

/// The attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for non-resource paths the lower-case method.
    pub verb: String,
    /// API group (`""` for the core group, `spoke.dev`, `apps`, ...).
    pub group: String,
    /// Plural resource name (`pods`); empty for non-resource paths
    /// (`/version`, discovery).
    pub resource: String,
    /// `status`, `log`, `scale`, ...; empty when none.
    pub subresource: String,
    /// The namespace in the path (for `namespaces/{name}`, the name itself).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The path as sent, without the query.
    pub path: String,
    /// The decoded `fieldSelector` query parameter, if any.
    pub field_selector: Option<String>,
    /// Whether the path is API discovery (`/api`, `/apis/{group}/{version}`, `/openapi/...`).
    pub discovery: bool,
}

impl Attributes {
    /// `pods` or `pods/log`.
    pub fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Whether the verb only reads.
    pub fn is_read(&self) -> bool {
        matches!(self.verb.as_str(), "get" | "list" | "watch")
    }
}

/// Subresources of a namespace: `namespaces/{ns}/status` is about the
/// namespace, not a resource called "status" inside it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Reads a request's attributes. Path segments are percent-decoded the way
/// the router's extractors decode them, so the namespace authorized is the
/// namespace acted on.
pub fn parse(method: &str, path: &str, query: Option<&str>) -> Attributes {
    let params = query_pairs(query.unwrap_or(""));
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let watch_param = matches!(param("watch").as_deref(), Some("true" | "1"));
    let mut attrs = Attributes {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
        field_selector: param("fieldSelector"),
        ..Attributes::default()
    };
    let segments: Option<Vec<String>> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let Some(segments) = segments else {
        return attrs;
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let rest = match segments.as_slice() {
        ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _] => {
            attrs.discovery = true;
            return attrs;
        }
        ["openapi", ..] => {
            attrs.discovery = true;
            return attrs;
        }
        ["api", _version, rest @ ..] => rest,
        ["apis", group, _version, rest @ ..] => {
            attrs.group = group.to_string();
            rest
        }
        _ => return attrs,
    };
    if rest.iter().any(|s| s.is_empty()) {
        return attrs;
    }
    let (watch_prefix, mut rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        other => (false, other),
    };
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        attrs.namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    let Some(resource) = rest.first() else {
        return attrs;
    };
    attrs.resource = resource.to_string();
    attrs.name = rest.get(1).map(|s| s.to_string());
    if rest.len() > 2 {
        attrs.subresource = rest[2..].join("/");
    }
    let watch = watch_prefix || watch_param;
    attrs.verb = match (method, attrs.name.is_some()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => {
            return Attributes {
                verb: other.to_ascii_lowercase(),
                ..attrs
            };
        }
    }
    .to_string();
    attrs
}

/// `a=b&c=d%3De` as decoded pairs (`+` is a space, as in forms).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(method: &str, path: &str) -> (String, String, String, Option<String>, Option<String>) {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let r = parse(method, p, Some(q));
        let resource = r.resource_with_sub();
        (r.verb, resource, r.group, r.namespace, r.name)
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn paths_map_to_verb_resource_namespace_and_name() {
        let ns = |n: &str| Some(s(n));
        let table = [
            (
                "GET",
                "/api/v1/namespaces/prod/pods",
                ("list", "pods", "", ns("prod"), None),
            ),
            (
                "GET",
                "/api/v1/namespaces/prod/pods?watch=true",
                ("watch", "pods", "", ns("prod"), None),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/prod/pods",
                ("watch", "pods", "", ns("prod"), None),
            ),
            (
                "POST",
                "/api/v1/namespaces/prod/pods",
                ("create", "pods", "", ns("prod"), None),
            ),
            (
                "GET",
                "/api/v1/namespaces/prod/pods/a",
                ("get", "pods", "", ns("prod"), ns("a")),
            ),
            (
                "PUT",
                "/api/v1/namespaces/prod/pods/a/status",
                ("update", "pods/status", "", ns("prod"), ns("a")),
            ),
            (
                "PATCH",
                "/api/v1/namespaces/prod/pods/a",
                ("patch", "pods", "", ns("prod"), ns("a")),
            ),
            (
                "GET",
                "/api/v1/namespaces/prod/pods/a/log",
                ("get", "pods/log", "", ns("prod"), ns("a")),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/prod/pods/a",
                ("delete", "pods", "", ns("prod"), ns("a")),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/prod/pods",
                ("deletecollection", "pods", "", ns("prod"), None),
            ),
            ("GET", "/api/v1/pods", ("list", "pods", "", None, None)),
            (
                "GET",
                "/api/v1/nodes/pi-1",
                ("get", "nodes", "", None, ns("pi-1")),
            ),
            (
                "GET",
                "/api/v1/namespaces",
                ("list", "namespaces", "", None, None),
            ),
            (
                "GET",
                "/api/v1/namespaces/prod",
                ("get", "namespaces", "", ns("prod"), ns("prod")),
            ),
            (
                "PUT",
                "/api/v1/namespaces/prod/status",
                ("update", "namespaces/status", "", ns("prod"), ns("prod")),
            ),
            (
                "POST",
                "/apis/apps/v1/namespaces/prod/deployments",
                ("create", "deployments", "apps", ns("prod"), None),
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/prod/deployments/d/scale",
                ("update", "deployments/scale", "apps", ns("prod"), ns("d")),
            ),
            (
                "POST",
                "/apis/spoke.dev/v1/modules?tag=a:1",
                ("create", "modules", "spoke.dev", None, None),
            ),
            (
                "DELETE",
                "/apis/spoke.dev/v1/tokens/ci",
                ("delete", "tokens", "spoke.dev", None, ns("ci")),
            ),
            // Encoded segments are read as the router's extractors read them.
            (
                "GET",
                "/api/v1/namespaces/pro%64/pods",
                ("list", "pods", "", ns("prod"), None),
            ),
        ];
        for (method, path, (verb, resource, group, namespace, name)) in table {
            assert_eq!(
                a(method, path),
                (s(verb), s(resource), s(group), namespace, name),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn discovery_and_other_paths_are_not_resources() {
        for path in ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/openapi/v2"] {
            let r = parse("GET", path, None);
            assert!(r.discovery && r.resource.is_empty(), "{path}");
        }
        for path in [
            "/version",
            "/healthz",
            "/metrics",
            "/",
            "/api/v1/namespaces/%zz/pods",
        ] {
            let r = parse("GET", path, None);
            assert!(!r.discovery && r.resource.is_empty(), "{path}");
            assert_eq!(r.verb, "get");
        }
    }

    #[test]
    fn the_field_selector_is_decoded() {
        let r = parse(
            "GET",
            "/api/v1/pods",
            Some("fieldSelector=spec.nodeName%3Dpi-1&watch=1"),
        );
        assert_eq!(r.field_selector.as_deref(), Some("spec.nodeName=pi-1"));
        assert_eq!(r.verb, "watch");
    }
}
