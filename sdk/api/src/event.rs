//! `Event` (core `v1`): what happened to an object, recorded by the hub and
//! the agents, deduplicated with a count as Kubernetes does.

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::validation::{FieldError, validate_meta};

/// Points at one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
}

/// Who reported an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub involved_object: ObjectReference,
    /// Short CamelCase cause: `Scheduled`, `Pulled`, `BackOff`, ...
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub source: EventSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<String>,
    #[serde(default)]
    pub count: i32,
    /// `Normal` or `Warning`.
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Event {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        if self
            .involved_object
            .name
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            errs.push(FieldError::required("involvedObject.name"));
        }
        if !["Normal", "Warning", ""].contains(&self.type_.as_str()) {
            errs.push(FieldError::new(
                "type",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{}\": supported values: \"Normal\", \"Warning\"",
                    self.type_
                ),
            ));
        }
        if self.message.len() > 4096 {
            errs.push(FieldError::new(
                "message",
                "FieldValueTooLong",
                "may not be more than 4096 bytes",
            ));
        }
        errs
    }
}
