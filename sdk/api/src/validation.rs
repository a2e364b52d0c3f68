//! Validation of objects as users send them: strict decoding (types and
//! unknown fields, with the path of the field) and the rules Kubernetes
//! applies (names, labels, required fields, enums, quantities).
//!
//! Every problem is a [`FieldError`] naming the field path, so that the hub
//! can answer `422 Invalid` with `details.causes` and the CLI can print where
//! a manifest is wrong.

use serde::de::DeserializeOwned;

use crate::core::{NodeSelectorTerm, Pod, PodSpec, Taint};
use crate::meta::ObjectMeta;
use crate::module::ImageRef;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.containers[0].image`.
    pub field: String,
    /// Kubernetes' cause type: `FieldValueRequired`, `FieldValueInvalid`,
    /// `FieldValueNotSupported`, `FieldValueTypeInvalid`, `FieldValueUnknown`.
    pub reason: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
    pub fn required(field: impl Into<String>) -> Self {
        FieldError::new(field, "FieldValueRequired", "Required value")
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError::new(field, "FieldValueInvalid", message)
    }
    fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Decodes `value` into `T`, refusing wrong types and fields `T` does not
/// have. Errors name the field path.
pub fn decode_strict<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Vec<FieldError>> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        // serde_ignored writes `?` for each `Option` on the way: not a field.
        let path = path
            .to_string()
            .split('.')
            .filter(|segment| *segment != "?")
            .collect::<Vec<_>>()
            .join(".");
        let message = format!("unknown field \"{}\"", last_segment(&path));
        unknown.push(FieldError::new(path, "FieldValueUnknown", message))
    };
    let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) if unknown.is_empty() => Ok(v),
        Ok(_) => Err(unknown),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            Err(vec![FieldError::new(
                path,
                "FieldValueTypeInvalid",
                e.into_inner().to_string(),
            )])
        }
    }
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// A DNS-1123 subdomain (object names): at most 253 characters of lower-case
/// letters, digits, '-' and '.', starting and ending with a letter or digit.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| dns1123_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (got \"{name}\")"
        ))
    }
}

/// A DNS-1123 label (namespace and container names): at most 63 characters of
/// lower-case letters, digits and '-', starting and ending with a letter or digit.
pub fn dns1123_label(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters (got \"{name}\")"
        ))
    }
}

/// A label name or a non-empty label value: at most 63 alphanumeric
/// characters, '-', '_' or '.', starting and ending with an alphanumeric one.
pub fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Label keys (`[prefix/]name`) and values, as Kubernetes checks them.
fn validate_labels(meta: &ObjectMeta, errs: &mut Vec<FieldError>) {
    let name_ok = label_name;
    for (k, v) in &meta.labels {
        let key_ok = match k.split_once('/') {
            Some((prefix, name)) => dns1123_subdomain(prefix).is_ok() && name_ok(name),
            None => name_ok(k),
        };
        if !key_ok {
            errs.push(FieldError::invalid(
                format!("metadata.labels[{k}]"),
                "label keys are an optional DNS subdomain prefix and '/', then a name of at most 63 alphanumeric characters, '-', '_' or '.'",
            ));
        }
        if !(v.is_empty() || name_ok(v)) {
            errs.push(FieldError::invalid(
                format!("metadata.labels[{k}]"),
                format!("label value \"{v}\" must be at most 63 alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"),
            ));
        }
    }
    let annotation_bytes: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > 256 * 1024 {
        errs.push(FieldError::new(
            "metadata.annotations",
            "FieldValueTooLong",
            "annotations may not have more than 262144 bytes in total",
        ));
    }
}

/// Checks the metadata every object has.
pub fn validate_meta(meta: &ObjectMeta, namespaced: bool, errs: &mut Vec<FieldError>) {
    if meta.name.is_empty() && meta.generate_name.is_none() {
        errs.push(FieldError::new(
            "metadata.name",
            "FieldValueRequired",
            "name or generateName is required",
        ));
    } else if !meta.name.is_empty()
        && let Err(m) = dns1123_subdomain(&meta.name)
    {
        errs.push(FieldError::invalid("metadata.name", m));
    }
    if namespaced
        && let Some(ns) = &meta.namespace
        && let Err(m) = dns1123_label(ns)
    {
        errs.push(FieldError::invalid("metadata.namespace", m));
    }
    validate_labels(meta, errs);
}

/// Checks a pod as a user sent it.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_meta(&pod.metadata, true, &mut errs);
    validate_pod_spec(&pod.spec, "spec", &mut errs);
    errs
}

/// Checks a pod spec found at `at` (`spec` in a pod, `spec.template.spec`
/// in a Deployment), so templates are held to the rules of the pods they
/// make.
pub fn validate_pod_spec(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{at}.containers")));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let at_c = |f: &str| format!("{at}.containers[{i}].{f}");
        if c.name.is_empty() {
            errs.push(FieldError::required(at_c("name")));
        } else if let Err(m) = dns1123_label(&c.name) {
            errs.push(FieldError::invalid(at_c("name"), m));
        } else if !names.insert(c.name.as_str()) {
            errs.push(FieldError::new(
                at_c("name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{}\"", c.name),
            ));
        }
        if c.image.is_empty() {
            errs.push(FieldError::required(at_c("image")));
        } else if let Err(e) = ImageRef::parse(&c.image) {
            errs.push(FieldError::invalid(at_c("image"), e.to_string()));
        }
        for (j, e) in c.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
                errs.push(FieldError::invalid(
                    format!("{at}.containers[{i}].env[{j}].name"),
                    "must be non-empty and contain no '=' or NUL",
                ));
            }
        }
        for (which, map) in [
            ("requests", &c.resources.requests),
            ("limits", &c.resources.limits),
        ] {
            for (res, q) in map {
                let field = format!("{at}.containers[{i}].resources.{which}.{res}");
                let parsed = match res.as_str() {
                    "cpu" => q.to_milli(),
                    "memory" => q.to_units(),
                    _ => {
                        errs.push(FieldError::new(
                            field,
                            "FieldValueNotSupported",
                            format!("Unsupported value: \"{res}\": supported values: \"cpu\", \"memory\""),
                        ));
                        continue;
                    }
                };
                if let Err(e) = parsed {
                    errs.push(FieldError::invalid(field, format!("\"{}\": {e}", q.0)));
                }
            }
        }
        for (j, p) in c.ports.iter().enumerate() {
            if !(1..=65535).contains(&p.container_port) {
                errs.push(FieldError::invalid(
                    format!("{at}.containers[{i}].ports[{j}].containerPort"),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = &p.protocol
                && !["TCP", "UDP", "SCTP"].contains(&proto.as_str())
            {
                errs.push(FieldError::new(
                    format!("{at}.containers[{i}].ports[{j}].protocol"),
                    "FieldValueNotSupported",
                    format!("Unsupported value: \"{proto}\": supported values: \"TCP\", \"UDP\", \"SCTP\""),
                ));
            }
        }
        for (field, probe, thresholds_of_one) in [
            ("startupProbe", &c.startup_probe, true),
            ("livenessProbe", &c.liveness_probe, true),
            ("readinessProbe", &c.readiness_probe, false),
        ] {
            if let Some(p) = probe {
                let at_p = format!("{at}.containers[{i}].{field}");
                validate_probe(c, p, &at_p, thresholds_of_one, errs);
            }
        }
    }
    if let Some(p) = &spec.restart_policy
        && !["Always", "OnFailure", "Never"].contains(&p.as_str())
    {
        errs.push(FieldError::new(
            format!("{at}.restartPolicy"),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: \"{p}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        ));
    }
    if let Some(node) = &spec.node_name
        && let Err(m) = dns1123_subdomain(node)
    {
        errs.push(FieldError::invalid(format!("{at}.nodeName"), m));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(FieldError::invalid(
            format!("{at}.terminationGracePeriodSeconds"),
            "must be >= 0",
        ));
    }
    for (i, rule) in spec.egress.iter().enumerate() {
        if let Err(m) = crate::net::EgressRule::parse(rule) {
            errs.push(FieldError::invalid(format!("{at}.egress[{i}]"), m));
        }
    }
    validate_volumes(spec, at, errs);
    validate_volume_mounts(spec, at, errs);
    validate_affinity(spec, at, errs);
    validate_tolerations(spec, at, errs);
    validate_topology_spread(spec, at, errs);
    validate_env_sources(spec, at, errs);
}

/// One probe of container `c`, found at `at`. Liveness and startup probes
/// need `successThreshold` 1, as in Kubernetes.
fn validate_probe(
    c: &crate::core::Container,
    p: &crate::core::Probe,
    at: &str,
    success_must_be_one: bool,
    errs: &mut Vec<FieldError>,
) {
    let handlers = [
        p.exec.is_some(),
        p.tcp_socket.is_some(),
        p.http_get.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => errs.push(
            FieldError::required(at)
                .with_message("must specify a handler type: one of exec, tcpSocket, httpGet"),
        ),
        1 => {}
        _ => errs.push(FieldError::new(
            at,
            "FieldValueForbidden",
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(e) = &p.exec {
        match e.command.first() {
            None => errs.push(
                FieldError::required(format!("{at}.exec.command"))
                    .with_message("Required value: the name of an exported function"),
            ),
            Some(name) if name.is_empty() || name.contains('\0') => errs.push(FieldError::invalid(
                format!("{at}.exec.command[0]"),
                "must name an exported function",
            )),
            Some(_) => {}
        }
    }
    let port_check =
        |port: &crate::apps::IntOrString, field: String, errs: &mut Vec<FieldError>| {
            if let Err(m) = c.resolve_port(port) {
                errs.push(FieldError::invalid(field, m));
            }
        };
    if let Some(t) = &p.tcp_socket {
        port_check(&t.port, format!("{at}.tcpSocket.port"), errs);
    }
    if let Some(h) = &p.http_get {
        port_check(&h.port, format!("{at}.httpGet.port"), errs);
        if let Some(s) = &h.scheme
            && s != "HTTP"
        {
            errs.push(not_supported(format!("{at}.httpGet.scheme"), s, &["HTTP"]));
        }
        if let Some(path) = &h.path
            && (!path.starts_with('/')
                || path
                    .chars()
                    .any(|ch| ch.is_ascii_whitespace() || ch.is_ascii_control()))
        {
            errs.push(FieldError::invalid(
                format!("{at}.httpGet.path"),
                "must start with '/' and contain no spaces or control characters",
            ));
        }
        for (j, header) in h.http_headers.iter().enumerate() {
            let bad = |v: &str| v.chars().any(|ch| ch == '\r' || ch == '\n');
            if header.name.is_empty() || header.name.contains(':') || bad(&header.name) {
                errs.push(FieldError::invalid(
                    format!("{at}.httpGet.httpHeaders[{j}].name"),
                    "must be a non-empty header name",
                ));
            }
            if bad(&header.value) {
                errs.push(FieldError::invalid(
                    format!("{at}.httpGet.httpHeaders[{j}].value"),
                    "may not contain line breaks",
                ));
            }
        }
    }
    let fields = [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("periodSeconds", p.period_seconds, 1),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
    ];
    for (name, value, min) in fields {
        if let Some(v) = value
            && v < min
        {
            errs.push(FieldError::invalid(
                format!("{at}.{name}"),
                format!("must be greater than or equal to {min}"),
            ));
        }
    }
    if success_must_be_one && p.success_threshold.is_some_and(|s| s != 1) {
        errs.push(FieldError::invalid(
            format!("{at}.successThreshold"),
            "must be 1",
        ));
    }
}

/// A ConfigMap or Secret key: alphanumerics, `-`, `_`, `.`, not `.`/`..`.
fn config_key(key: &str) -> Result<(), &'static str> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
    }
}

/// Checks the object name and `items` of a `configMap`/`secret` volume at `at`.
fn validate_config_volume(
    name: &str,
    items: &[crate::core::KeyToPath],
    at: &str,
    name_field: &str,
    errs: &mut Vec<FieldError>,
) {
    if name.is_empty() {
        errs.push(FieldError::required(format!("{at}.{name_field}")));
    } else if let Err(m) = dns1123_subdomain(name) {
        errs.push(FieldError::invalid(format!("{at}.{name_field}"), m));
    }
    let mut paths = std::collections::BTreeSet::new();
    for (j, item) in items.iter().enumerate() {
        if let Err(m) = config_key(&item.key) {
            errs.push(FieldError::invalid(format!("{at}.items[{j}].key"), m));
        }
        let path = &item.path;
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\0')
            || path
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..");
        if bad {
            errs.push(FieldError::invalid(
                format!("{at}.items[{j}].path"),
                "must be a relative path without empty, '.' or '..' components",
            ));
        } else if !paths.insert(path.as_str()) {
            errs.push(FieldError::new(
                format!("{at}.items[{j}].path"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{path}\""),
            ));
        }
    }
}

/// Checks `env[].valueFrom` and `envFrom` of every container of the pod spec at `at`.
pub fn validate_env_sources(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    let check_name = |name: &str, field: String, errs: &mut Vec<FieldError>| {
        if name.is_empty() {
            errs.push(FieldError::required(field));
        } else if let Err(m) = dns1123_subdomain(name) {
            errs.push(FieldError::invalid(field, m));
        }
    };
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, e) in c.env.iter().enumerate() {
            let Some(from) = &e.value_from else { continue };
            let field = format!("{at}.containers[{i}].env[{j}].valueFrom");
            if !e.value.is_empty() {
                errs.push(FieldError::invalid(
                    format!("{at}.containers[{i}].env[{j}].value"),
                    "may not be specified when `valueFrom` is not empty",
                ));
            }
            let selector =
                match (&from.config_map_key_ref, &from.secret_key_ref) {
                    (Some(r), None) => Some(("configMapKeyRef", r)),
                    (None, Some(r)) => Some(("secretKeyRef", r)),
                    (None, None) => {
                        errs.push(FieldError::required(field.clone()).with_message(
                            "must specify one of: `configMapKeyRef` or `secretKeyRef`",
                        ));
                        None
                    }
                    (Some(_), Some(_)) => {
                        errs.push(FieldError::invalid(
                            field.clone(),
                            "may not have more than one field specified at a time",
                        ));
                        None
                    }
                };
            if let Some((which, r)) = selector {
                check_name(&r.name, format!("{field}.{which}.name"), errs);
                if let Err(m) = config_key(&r.key) {
                    errs.push(FieldError::invalid(format!("{field}.{which}.key"), m));
                }
            }
        }
        for (j, e) in c.env_from.iter().enumerate() {
            let field = format!("{at}.containers[{i}].envFrom[{j}]");
            match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), None) => check_name(&r.name, format!("{field}.configMapRef.name"), errs),
                (None, Some(r)) => check_name(&r.name, format!("{field}.secretRef.name"), errs),
                (None, None) => errs.push(
                    FieldError::required(field)
                        .with_message("must specify one of: `configMapRef` or `secretRef`"),
                ),
                (Some(_), Some(_)) => errs.push(FieldError::invalid(
                    field,
                    "may not have more than one field specified at a time",
                )),
            }
            if let Some(p) = &e.prefix
                && (p.contains('=') || p.contains('\0'))
            {
                errs.push(FieldError::invalid(
                    format!("{at}.containers[{i}].envFrom[{j}].prefix"),
                    "must contain no '=' or NUL",
                ));
            }
        }
    }
}

fn not_supported(field: String, got: &str, allowed: &[&str]) -> FieldError {
    let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    FieldError::new(
        field,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: \"{got}\": supported values: {}",
            list.join(", ")
        ),
    )
}

/// Effects a taint may have.
pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn validate_node_selector_term(term: &NodeSelectorTerm, at: &str, errs: &mut Vec<FieldError>) {
    for (i, r) in term.match_expressions.iter().enumerate() {
        let field = |f: &str| format!("{at}.matchExpressions[{i}].{f}");
        if let Err(m) = crate::selector::check_key(&r.key) {
            errs.push(FieldError::invalid(field("key"), m));
        }
        match r.operator.as_str() {
            "In" | "NotIn" if r.values.is_empty() => {
                errs.push(FieldError::required(field("values")))
            }
            "Exists" | "DoesNotExist" if !r.values.is_empty() => errs.push(FieldError::invalid(
                field("values"),
                format!("must be empty for operator {}", r.operator),
            )),
            "Gt" | "Lt" if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => {
                errs.push(FieldError::invalid(
                    field("values"),
                    format!("must be one integer for operator {}", r.operator),
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
            other => errs.push(not_supported(
                field("operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
            )),
        }
    }
}

/// Checks `affinity` of the pod spec at `at`.
pub fn validate_affinity(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    let Some(na) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
    else {
        return;
    };
    let at = format!("{at}.affinity.nodeAffinity");
    if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
        let at = format!("{at}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
        if req.node_selector_terms.is_empty() {
            errs.push(FieldError::required(at.clone()));
        }
        for (i, t) in req.node_selector_terms.iter().enumerate() {
            validate_node_selector_term(t, &format!("{at}[{i}]"), errs);
        }
    }
    for (i, p) in na
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&p.weight) {
            errs.push(FieldError::invalid(
                format!("{at}.weight"),
                "must be in the range 1-100",
            ));
        }
        validate_node_selector_term(&p.preference, &format!("{at}.preference"), errs);
    }
}

/// Checks `tolerations` of the pod spec at `at`.
pub fn validate_tolerations(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    for (i, t) in spec.tolerations.iter().enumerate() {
        let field = |f: &str| format!("{at}.tolerations[{i}].{f}");
        if !t.key.is_empty()
            && let Err(m) = crate::selector::check_key(&t.key)
        {
            errs.push(FieldError::invalid(field("key"), m));
        }
        match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" if !t.value.is_empty() => errs.push(FieldError::invalid(
                field("value"),
                "value must be empty when `operator` is 'Exists'",
            )),
            "Equal" if t.key.is_empty() => errs.push(FieldError::invalid(
                field("operator"),
                "operator must be Exists when `key` is empty",
            )),
            "Exists" | "Equal" => {}
            other => errs.push(not_supported(
                field("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !t.effect.is_empty() && !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(not_supported(field("effect"), &t.effect, &TAINT_EFFECTS));
        }
        if let Some(s) = t.toleration_seconds {
            if t.effect != "NoExecute" {
                errs.push(FieldError::invalid(
                    field("effect"),
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                ));
            } else if s < 0 {
                errs.push(FieldError::invalid(
                    field("tolerationSeconds"),
                    "must be >= 0",
                ));
            }
        }
    }
}

/// Checks `topologySpreadConstraints` of the pod spec at `at`.
pub fn validate_topology_spread(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    for (i, c) in spec.topology_spread_constraints.iter().enumerate() {
        let field = |f: &str| format!("{at}.topologySpreadConstraints[{i}].{f}");
        if c.max_skew < 1 {
            errs.push(FieldError::invalid(
                field("maxSkew"),
                "must be greater than zero",
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(field("topologyKey")));
        } else if let Err(m) = crate::selector::check_key(&c.topology_key) {
            errs.push(FieldError::invalid(field("topologyKey"), m));
        }
        if !["DoNotSchedule", "ScheduleAnyway"].contains(&c.when_unsatisfiable.as_str()) {
            errs.push(not_supported(
                field("whenUnsatisfiable"),
                &c.when_unsatisfiable,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        if let Some(sel) = &c.label_selector
            && let Err(m) = sel.to_selector()
        {
            errs.push(FieldError::invalid(field("labelSelector"), m));
        }
    }
}

/// Checks `spec.taints` of a node.
pub fn validate_taints(taints: &[Taint], at: &str, errs: &mut Vec<FieldError>) {
    for (i, t) in taints.iter().enumerate() {
        let field = |f: &str| format!("{at}.taints[{i}].{f}");
        if let Err(m) = crate::selector::check_key(&t.key) {
            errs.push(FieldError::invalid(field("key"), m));
        }
        if !t.value.is_empty()
            && let Err(m) = crate::selector::check_value(&t.value)
        {
            errs.push(FieldError::invalid(field("value"), m));
        }
        if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            errs.push(not_supported(field("effect"), &t.effect, &TAINT_EFFECTS));
        }
    }
}

/// `hostPath.type` values a Wasm guest can use: directories only.
pub const HOST_PATH_TYPES: [&str; 3] = ["", "Directory", "DirectoryOrCreate"];

/// An absolute path without `.` or `..` components, as mount paths and host
/// paths must be (no way out of a prefix by spelling).
fn clean_absolute_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    if path.contains('\0') {
        return Err("must not contain NUL");
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err("must not contain '.' or '..' components");
    }
    Ok(())
}

/// Checks `volumes` of the pod spec at `at` (e.g. `spec`).
pub fn validate_volumes(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    let mut names = std::collections::BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let field = |f: &str| format!("{at}.volumes[{i}].{f}");
        if v.name.is_empty() {
            errs.push(FieldError::required(field("name")));
        } else if let Err(m) = dns1123_label(&v.name) {
            errs.push(FieldError::invalid(field("name"), m));
        } else if !names.insert(v.name.as_str()) {
            errs.push(FieldError::new(
                field("name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{}\"", v.name),
            ));
        }
        let sources = [
            ("emptyDir", v.empty_dir.is_some()),
            ("hostPath", v.host_path.is_some()),
            ("configMap", v.config_map.is_some()),
            ("secret", v.secret.is_some()),
        ];
        let set: Vec<&str> = sources.iter().filter(|s| s.1).map(|s| s.0).collect();
        match set.as_slice() {
            [] => errs.push(
                FieldError::required(format!("{at}.volumes[{i}]")).with_message(
                    "must specify a volume type: emptyDir, hostPath, configMap or secret",
                ),
            ),
            [_] => {}
            [.., last] => errs.push(FieldError::new(
                field(last),
                "FieldValueForbidden",
                "may not specify more than 1 volume type",
            )),
        }
        if let Some(c) = &v.config_map {
            validate_config_volume(&c.name, &c.items, &field("configMap"), "name", errs);
        }
        if let Some(s) = &v.secret {
            validate_config_volume(
                &s.secret_name,
                &s.items,
                &field("secret"),
                "secretName",
                errs,
            );
        }
        if let Some(e) = &v.empty_dir
            && let Some(q) = &e.size_limit
            && let Err(err) = q.to_units()
        {
            errs.push(FieldError::invalid(
                field("emptyDir.sizeLimit"),
                format!("\"{}\": {err}", q.0),
            ));
        }
        if let Some(h) = &v.host_path {
            if h.path.is_empty() {
                errs.push(FieldError::required(field("hostPath.path")));
            } else if let Err(m) = clean_absolute_path(&h.path) {
                errs.push(FieldError::invalid(field("hostPath.path"), m));
            }
            if let Some(t) = &h.type_
                && !HOST_PATH_TYPES.contains(&t.as_str())
            {
                errs.push(FieldError::new(
                    field("hostPath.type"),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{t}\": supported values: \"\", \"Directory\", \"DirectoryOrCreate\" (Wasm guests open directories only)"
                    ),
                ));
            }
        }
    }
}

/// Checks `containers[].volumeMounts` of the pod spec at `at` against its volumes.
pub fn validate_volume_mounts(spec: &PodSpec, at: &str, errs: &mut Vec<FieldError>) {
    for (i, c) in spec.containers.iter().enumerate() {
        let mut paths = std::collections::BTreeSet::new();
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let field = |f: &str| format!("{at}.containers[{i}].volumeMounts[{j}].{f}");
            if m.name.is_empty() {
                errs.push(FieldError::required(field("name")));
            } else if !spec.volumes.iter().any(|v| v.name == m.name) {
                errs.push(FieldError::new(
                    field("name"),
                    "FieldValueNotFound",
                    format!(
                        "Not found: \"{}\" (no volume of the pod has this name)",
                        m.name
                    ),
                ));
            }
            if m.mount_path.is_empty() {
                errs.push(FieldError::required(field("mountPath")));
            } else if let Err(msg) = clean_absolute_path(&m.mount_path) {
                errs.push(FieldError::invalid(field("mountPath"), msg));
            } else if !paths.insert(m.mount_path.trim_end_matches('/')) {
                errs.push(FieldError::new(
                    field("mountPath"),
                    "FieldValueInvalid",
                    format!("\"{}\": must be unique", m.mount_path),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn config_sources_are_checked_with_their_field_paths() {
        let v = pod(json!({
            "volumes": [
                {"name": "a", "configMap": {"name": "", "items": [{"key": "k", "path": "../x"}]}},
                {"name": "b", "secret": {"secretName": "s"}, "emptyDir": {}}
            ],
            "containers": [{"name": "c", "image": "x:1",
                "env": [
                    {"name": "A", "valueFrom": {}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "bad key"}}}
                ],
                "envFrom": [{"prefix": "P_"}]}]
        }));
        let pod: Pod = decode_strict(v).unwrap();
        let fields: Vec<String> = validate_pod(&pod).into_iter().map(|e| e.field).collect();
        for want in [
            "spec.volumes[0].configMap.name",
            "spec.volumes[0].configMap.items[0].path",
            "spec.volumes[1].secret",
            "spec.containers[0].env[0].valueFrom",
            "spec.containers[0].env[1].valueFrom.secretKeyRef.key",
            "spec.containers[0].envFrom[0]",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} not in {fields:?}");
        }
    }

    #[test]
    fn egress_rules_and_port_protocols_are_checked_with_their_field_paths() {
        let v = pod(json!({
            "egress": ["10.0.0.0/8:443", "example.com:443", "[fd00::/8]:*", "10.0.0.1/8:1"],
            "containers": [{"name": "c", "image": "x:1",
                "ports": [{"containerPort": 80}, {"containerPort": 81, "protocol": "QUIC"}]}]
        }));
        let pod: Pod = decode_strict(v).unwrap();
        let errs = validate_pod(&pod);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].ports[1].protocol",
                "spec.egress[1]",
                "spec.egress[3]",
            ]
        );
        assert!(
            errs[1].message.contains("is not an IP address"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let v = pod(
            json!({"containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "Always"}]}),
        );
        let errs = decode_strict::<Pod>(v).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.containers.0.imagePullPolicy");
        assert_eq!(errs[0].reason, "FieldValueUnknown");
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        let v = pod(json!({"containers": [{"name": "a", "image": 5}]}));
        let errs = decode_strict::<Pod>(v).unwrap_err();
        assert_eq!(errs[0].field, "spec.containers[0].image");
        assert!(
            errs[0].message.contains("expected a string"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn pod_rules_name_each_field() {
        let v = pod(json!({
            "restartPolicy": "Sometimes",
            "containers": [
                {"name": "A", "image": ""},
                {"name": "b", "image": "b:1", "resources": {"limits": {"memory": "lots", "gpu": "1"}}}
            ]
        }));
        let p: Pod = decode_strict(v).unwrap();
        let fields: Vec<String> = validate_pod(&p).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[1].resources.limits.gpu",
                "spec.containers[1].resources.limits.memory",
                "spec.restartPolicy",
            ]
        );
    }

    #[test]
    fn probe_rules_name_each_field() {
        let v = pod(json!({"containers": [{"name": "a", "image": "a:1",
            "ports": [{"containerPort": 8080, "name": "http"}],
            "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": []}, "tcpSocket": {"port": 80}, "successThreshold": 2},
            "readinessProbe": {"httpGet": {"port": "web", "path": "health", "scheme": "HTTPS"},
                "timeoutSeconds": 0, "failureThreshold": 0, "initialDelaySeconds": -1}
        }, {"name": "b", "image": "b:1",
            "ports": [{"containerPort": 8080, "name": "http"}],
            "livenessProbe": {},
            "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}, "successThreshold": 3}}]}));
        let p: Pod = decode_strict(v).unwrap();
        let fields: Vec<String> = validate_pod(&p).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].livenessProbe",
                "spec.containers[0].livenessProbe.exec.command",
                "spec.containers[0].livenessProbe.successThreshold",
                "spec.containers[0].readinessProbe.httpGet.port",
                "spec.containers[0].readinessProbe.httpGet.scheme",
                "spec.containers[0].readinessProbe.httpGet.path",
                "spec.containers[0].readinessProbe.initialDelaySeconds",
                "spec.containers[0].readinessProbe.timeoutSeconds",
                "spec.containers[0].readinessProbe.failureThreshold",
                "spec.containers[1].livenessProbe",
            ]
        );
        // Fields a probe does not have are refused, not ignored.
        let v = pod(json!({"containers": [{"name": "a", "image": "a:1",
            "livenessProbe": {"grpc": {"port": 9000}}}]}));
        let errs = decode_strict::<Pod>(v).unwrap_err();
        assert_eq!(errs[0].field, "spec.containers.0.livenessProbe.grpc");
    }

    #[test]
    fn a_good_pod_passes() {
        let v = pod(json!({"containers": [{"name": "hello", "image": "hello:v1",
            "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"memory": "32Mi", "cpu": "250m"}}}]}));
        let p: Pod = decode_strict(v).unwrap();
        assert_eq!(validate_pod(&p), vec![]);
    }

    #[test]
    fn volume_rules_name_each_field() {
        let v = pod(json!({
            "volumes": [
                {"name": "cache", "emptyDir": {"sizeLimit": "lots"}},
                {"name": "cache", "emptyDir": {}},
                {"name": "none"},
                {"name": "both", "emptyDir": {}, "hostPath": {"path": "/a"}},
                {"name": "rel", "hostPath": {"path": "data/x"}},
                {"name": "up", "hostPath": {"path": "/srv/../etc", "type": "File"}},
                {"name": "empty", "hostPath": {}}
            ],
            "containers": [{"name": "a", "image": "a:1", "volumeMounts": [
                {"name": "cache", "mountPath": "/cache"},
                {"name": "nope", "mountPath": "/cache/"},
                {"name": "", "mountPath": "rel"},
                {"name": "up", "mountPath": "/x/../y"},
                {"name": "rel"}
            ]}]
        }));
        let p: Pod = decode_strict(v).unwrap();
        let errs = validate_pod(&p);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.volumes[0].emptyDir.sizeLimit",
                "spec.volumes[1].name",
                "spec.volumes[2]",
                "spec.volumes[3].hostPath",
                "spec.volumes[4].hostPath.path",
                "spec.volumes[5].hostPath.path",
                "spec.volumes[5].hostPath.type",
                "spec.volumes[6].hostPath.path",
                "spec.containers[0].volumeMounts[1].name",
                "spec.containers[0].volumeMounts[1].mountPath",
                "spec.containers[0].volumeMounts[2].name",
                "spec.containers[0].volumeMounts[2].mountPath",
                "spec.containers[0].volumeMounts[3].mountPath",
                "spec.containers[0].volumeMounts[4].mountPath",
            ],
            "{errs:#?}"
        );
        assert!(errs[5].message.contains(".."), "{}", errs[5].message);
        assert_eq!(errs[8].reason, "FieldValueNotFound");
        assert_eq!(errs[9].message, "\"/cache/\": must be unique");

        let good = pod(json!({
            "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}},
                        {"name": "data", "hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "a", "image": "a:1", "volumeMounts": [
                {"name": "cache", "mountPath": "/cache"},
                {"name": "data", "mountPath": "/data", "readOnly": true}]}]
        }));
        let p: Pod = decode_strict(good).unwrap();
        assert_eq!(validate_pod(&p), vec![]);
    }

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns1123_subdomain("hello-1.edge").is_ok());
        for bad in ["", "Hello", "-a", "a-", "a_b", &"x".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(dns1123_label(&"x".repeat(64)).is_err());
    }

    #[test]
    fn placement_rules_name_each_field() {
        let bad = pod(json!({
            "containers": [{"name": "a", "image": "a:1"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [
                        {"key": "site", "operator": "In"},
                        {"key": "cores", "operator": "Gt", "values": ["many"]},
                        {"key": "site", "operator": "Near", "values": ["x"]},
                        {"key": "site", "operator": "Exists", "values": ["x"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 0, "preference": {"matchExpressions": [{"key": "bad key!", "operator": "Exists"}]}}]}},
            "tolerations": [
                {"key": "k", "operator": "Exists", "value": "v"},
                {"operator": "Equal", "value": "v"},
                {"key": "k", "operator": "Like"},
                {"key": "k", "effect": "NoRun"},
                {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
                {"key": "k", "effect": "NoExecute", "tolerationSeconds": -1}],
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Maybe",
                 "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]
        }));
        let p: Pod = decode_strict(bad).unwrap();
        let errs = validate_pod(&p);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        let req = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions";
        let pref = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]";
        assert_eq!(
            fields,
            vec![
                format!("{req}[0].values"),
                format!("{req}[1].values"),
                format!("{req}[2].operator"),
                format!("{req}[3].values"),
                format!("{pref}.weight"),
                format!("{pref}.preference.matchExpressions[0].key"),
                "spec.tolerations[0].value".into(),
                "spec.tolerations[1].operator".into(),
                "spec.tolerations[2].operator".into(),
                "spec.tolerations[3].effect".into(),
                "spec.tolerations[4].effect".into(),
                "spec.tolerations[5].tolerationSeconds".into(),
                "spec.topologySpreadConstraints[0].maxSkew".into(),
                "spec.topologySpreadConstraints[0].topologyKey".into(),
                "spec.topologySpreadConstraints[0].whenUnsatisfiable".into(),
                "spec.topologySpreadConstraints[0].labelSelector".into(),
            ],
            "{errs:#?}"
        );
        assert_eq!(errs[2].reason, "FieldValueNotSupported");

        let good = pod(json!({
            "containers": [{"name": "a", "image": "a:1"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
                                          {"key": "cores", "operator": "Lt", "values": ["9"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 50, "preference": {"matchExpressions": [{"key": "solar", "operator": "Exists"}]}}]}},
            "tolerations": [{"operator": "Exists"},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 60}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "site",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]
        }));
        let p: Pod = decode_strict(good).unwrap();
        assert_eq!(validate_pod(&p), vec![]);
    }

    #[test]
    fn taint_rules_name_each_field() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": "", "effect": "NoSchedule"},
            {"key": "k", "value": "bad value", "effect": "NoSchedule"},
            {"key": "k", "effect": "Sometimes"},
            {"key": "dedicated", "value": "gpu", "effect": "PreferNoSchedule"}]))
        .unwrap();
        let mut errs = Vec::new();
        validate_taints(&taints, "spec", &mut errs);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.taints[0].key",
                "spec.taints[1].value",
                "spec.taints[2].effect"
            ]
        );
    }
}
