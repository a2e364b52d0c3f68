//! Content negotiation for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`
//! (what `kubectl get` sends): lists, single objects and watch events come
//! back as `meta.k8s.io` `Table`s with the columns of
//! [`spoke_api::table`], the same ones `spoke get` prints.

use std::time::SystemTime;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use spoke_api::resource::ResourceType;
use spoke_api::table::IncludeObject;

use super::Error;

/// A request for a Table: which version of it, and what each row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TableRequest {
    api_version: &'static str,
    include: IncludeObject,
}

/// Whether the client asked for a Table. The first media range of
/// `Accept` this hub can serve wins, as in Kubernetes: a Table, or plain
/// JSON (`application/json`, `*/*`); ranges it cannot serve (such as
/// `as=PartialObjectMetadataList`) are skipped.
pub(super) fn requested(
    headers: &HeaderMap,
    include_object: Option<&str>,
) -> Result<Option<TableRequest>, Error> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut api_version = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if !matches!(media, "application/json" | "application/*" | "*/*") {
            continue;
        }
        match (param("as"), param("g"), param("v")) {
            (None, _, _) => break,
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => {
                api_version = Some("meta.k8s.io/v1");
                break;
            }
            (Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                api_version = Some("meta.k8s.io/v1beta1");
                break;
            }
            _ => continue,
        }
    }
    let Some(api_version) = api_version else {
        return Ok(None);
    };
    let include = match include_object {
        None | Some("") => IncludeObject::default(),
        Some(s) => IncludeObject::parse(s).ok_or_else(|| {
            Error::BadRequest(format!(
                "includeObject \"{s}\" is not one of None, Metadata, Object"
            ))
        })?,
    };
    Ok(Some(TableRequest {
        api_version,
        include,
    }))
}

impl TableRequest {
    /// The Table of `items`, with the list's `metadata`.
    pub(super) fn render(&self, rt: &ResourceType, items: &[Value], metadata: Value) -> Value {
        spoke_api::table::table(
            self.api_version,
            rt.kind,
            items,
            metadata,
            self.include,
            SystemTime::now(),
        )
    }

    /// The Table of one object (a read, or a watch event).
    pub(super) fn render_one(&self, rt: &ResourceType, object: &Value) -> Value {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        self.render(
            rt,
            std::slice::from_ref(object),
            json!({"resourceVersion": rv}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str, include: Option<&str>) -> Result<Option<TableRequest>, Error> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, value.parse().unwrap());
        requested(&h, include)
    }

    #[test]
    fn kubectls_accept_header_asks_for_a_v1_table() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let t = accept(kubectl, None).unwrap().unwrap();
        assert_eq!(t.api_version, "meta.k8s.io/v1");
        assert_eq!(t.include, IncludeObject::Metadata);
        let t = accept(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            Some("Object"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.api_version, t.include),
            ("meta.k8s.io/v1beta1", IncludeObject::Object)
        );
        assert_eq!(accept("application/json", None).unwrap(), None);
        assert_eq!(
            accept(
                "application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
                None
            )
            .unwrap(),
            None
        );
        assert_eq!(
            accept(
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
                None
            )
            .unwrap(),
            None
        );
        assert!(accept(kubectl, Some("Everything")).is_err());
    }
}
