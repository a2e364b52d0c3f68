//! ResourceQuota and LimitRange (core `v1`): per-namespace limits that the
//! hub's admission applies to pods.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::quantity::Quantity;
use crate::validation::{FieldError, validate_meta};

/// Caps what the pods of a namespace may request in total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuota {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ResourceQuotaSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResourceQuotaStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaSpec {
    /// `pods`, `requests.cpu`, `requests.memory`, `limits.cpu`,
    /// `limits.memory`, and `cpu`/`memory` as short for the requests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hard: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, Quantity>,
}

/// The resources a quota can cap.
pub const QUOTA_RESOURCES: &[&str] = &[
    "pods",
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Defaults and bounds for the containers of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LimitRange {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LimitRangeSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LimitRangeSpec {
    #[serde(default)]
    pub limits: Vec<LimitRangeItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LimitRangeItem {
    /// `Container` or `Pod`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Default limits for containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default: BTreeMap<String, Quantity>,
    /// Default requests for containers that set none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_request: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min: BTreeMap<String, Quantity>,
}

/// Parses a cpu (as millicores) or memory (bytes) or pods (count) quantity.
pub fn amount(resource: &str, q: &Quantity) -> Result<u64, String> {
    let r = if resource.ends_with("cpu") {
        q.to_milli()
    } else {
        q.to_units()
    };
    r.map_err(|e| format!("\"{}\": {e}", q.0))
}

fn check_map(
    field: &str,
    map: &BTreeMap<String, Quantity>,
    allowed: &[&str],
    errs: &mut Vec<FieldError>,
) {
    for (k, v) in map {
        let f = format!("{field}[{k}]");
        if !allowed.contains(&k.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            errs.push(FieldError::new(
                f,
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{k}\": supported values: {}",
                    list.join(", ")
                ),
            ));
        } else if let Err(e) = amount(k, v) {
            errs.push(FieldError::invalid(f, e));
        }
    }
}

impl ResourceQuota {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        check_map("spec.hard", &self.spec.hard, QUOTA_RESOURCES, &mut errs);
        errs
    }
}

impl LimitRange {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        const RES: &[&str] = &["cpu", "memory"];
        for (i, item) in self.spec.limits.iter().enumerate() {
            let at = format!("spec.limits[{i}]");
            match item.type_.as_str() {
                "Container" => {}
                "Pod" if item.default.is_empty() && item.default_request.is_empty() => {}
                "Pod" => errs.push(FieldError::new(
                    format!("{at}.default"),
                    "FieldValueForbidden",
                    "may not be specified when `type` is 'Pod'",
                )),
                other => errs.push(FieldError::new(
                    format!("{at}.type"),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Container\", \"Pod\""
                    ),
                )),
            }
            for (name, map) in [
                ("default", &item.default),
                ("defaultRequest", &item.default_request),
                ("max", &item.max),
                ("min", &item.min),
            ] {
                check_map(&format!("{at}.{name}"), map, RES, &mut errs);
            }
            for (res, min) in &item.min {
                if let (Some(max), Ok(lo)) = (item.max.get(res), amount(res, min))
                    && amount(res, max).is_ok_and(|hi| hi < lo)
                {
                    errs.push(FieldError::invalid(
                        format!("{at}.min[{res}]"),
                        format!("min value {} is greater than max value {}", min.0, max.0),
                    ));
                }
            }
        }
        errs
    }
}
