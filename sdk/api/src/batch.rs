//! `batch/v1` kinds: Job and CronJob.

use serde::{Deserialize, Serialize};

use crate::apps::validate_selector_and_template;
use crate::core::{Condition, PodTemplateSpec};
use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::validation::{FieldError, validate_meta, validate_pod_spec};

/// Runs pods to completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: JobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Pods running at once; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    /// Successful pods needed; defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<i32>,
    /// Failed pods tolerated before the Job fails; defaults to 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Set by the hub (`controller-uid`) unless `manualSelector` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_selector: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default)]
    pub active: i32,
    #[serde(default)]
    pub succeeded: i32,
    #[serde(default)]
    pub failed: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<i32>,
}

/// Makes Jobs on a schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CronJobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CronJobStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    /// Five-field cron syntax (`*/5 * * * *`) or `@hourly`-style macros.
    #[serde(default)]
    pub schedule: String,
    /// IANA time zone name; defaults to the hub's local time (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// `Allow` (default), `Forbid` or `Replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    #[serde(default)]
    pub job_template: JobTemplateSpec,
    /// Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_jobs_history_limit: Option<i32>,
    /// Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs_history_limit: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: JobSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CronJobStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<crate::event::ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
}

fn check_min(v: Option<i64>, min: i64, field: String, errs: &mut Vec<FieldError>) {
    if let Some(n) = v
        && n < min
    {
        errs.push(FieldError::invalid(
            field,
            format!("must be greater than or equal to {min} (got {n})"),
        ));
    }
}

impl JobSpec {
    fn validate(&self, at: &str, errs: &mut Vec<FieldError>) {
        let f = |name: &str| format!("{at}.{name}");
        check_min(self.parallelism.map(i64::from), 0, f("parallelism"), errs);
        check_min(self.completions.map(i64::from), 0, f("completions"), errs);
        check_min(
            self.backoff_limit.map(i64::from),
            0,
            f("backoffLimit"),
            errs,
        );
        check_min(
            self.active_deadline_seconds,
            1,
            f("activeDeadlineSeconds"),
            errs,
        );
        check_min(
            self.ttl_seconds_after_finished.map(i64::from),
            0,
            f("ttlSecondsAfterFinished"),
            errs,
        );
        match &self.selector {
            Some(sel) if self.manual_selector == Some(true) => {
                validate_selector_and_template(sel, &self.template, at, errs)
            }
            _ => validate_pod_spec(&self.template.spec, &f("template.spec"), errs),
        }
        match self.template.spec.restart_policy.as_deref() {
            Some("OnFailure" | "Never") => {}
            None => errs.push(FieldError::required(f("template.spec.restartPolicy"))),
            Some(other) => errs.push(FieldError::new(
                f("template.spec.restartPolicy"),
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"OnFailure\", \"Never\""
                ),
            )),
        }
    }
}

impl Job {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        self.spec.validate("spec", &mut errs);
        errs
    }
}

impl CronJob {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        // Job names are the CronJob's name plus an 11-character suffix.
        if self.metadata.name.len() > 52 {
            errs.push(FieldError::invalid(
                "metadata.name",
                "must be no more than 52 characters",
            ));
        }
        let s = &self.spec;
        if s.schedule.trim().is_empty() {
            errs.push(FieldError::required("spec.schedule"));
        } else if let Err(e) = crate::cron::Schedule::parse(&s.schedule) {
            errs.push(FieldError::invalid("spec.schedule", e));
        }
        if let Some(tz) = &s.time_zone
            && let Err(e) = crate::cron::fixed_offset(tz)
        {
            errs.push(FieldError::invalid("spec.timeZone", e));
        }
        if let Some(p) = &s.concurrency_policy
            && !["Allow", "Forbid", "Replace"].contains(&p.as_str())
        {
            errs.push(FieldError::new(
                "spec.concurrencyPolicy",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: \"{p}\": supported values: \"Allow\", \"Forbid\", \"Replace\""
                ),
            ));
        }
        check_min(
            s.starting_deadline_seconds,
            0,
            "spec.startingDeadlineSeconds".into(),
            &mut errs,
        );
        for (name, v) in [
            (
                "successfulJobsHistoryLimit",
                s.successful_jobs_history_limit,
            ),
            ("failedJobsHistoryLimit", s.failed_jobs_history_limit),
        ] {
            check_min(v.map(i64::from), 0, format!("spec.{name}"), &mut errs);
        }
        s.job_template
            .spec
            .validate("spec.jobTemplate.spec", &mut errs);
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::decode_strict;
    use serde_json::json;

    fn template(restart: &str) -> serde_json::Value {
        json!({"spec": {"restartPolicy": restart, "containers": [{"name": "w", "image": "w:1"}]}})
    }

    #[test]
    fn jobs_need_a_finite_restart_policy() {
        let ok: Job = decode_strict(json!({"metadata": {"name": "j"},
            "spec": {"completions": 3, "parallelism": 2, "template": template("Never")}}))
        .unwrap();
        assert_eq!(ok.validate(), vec![]);
        let bad: Job = decode_strict(json!({"metadata": {"name": "j"},
            "spec": {"completions": -1, "template": template("Always")}}))
        .unwrap();
        let fields: Vec<String> = bad.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["spec.completions", "spec.template.spec.restartPolicy"]
        );
    }

    #[test]
    fn cronjobs_check_schedule_and_policy() {
        let cj: CronJob = decode_strict(json!({"metadata": {"name": "report"},
            "spec": {"schedule": "61 * * * *", "concurrencyPolicy": "Sometimes",
                     "jobTemplate": {"spec": {"template": template("OnFailure")}}}}))
        .unwrap();
        let fields: Vec<String> = cj.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.schedule", "spec.concurrencyPolicy"]);
    }

    #[test]
    fn cronjob_time_zones_are_checked_at_admission() {
        let cj = |tz: &str| -> CronJob {
            decode_strict(json!({"metadata": {"name": "c"}, "spec": {
                "schedule": "0 9 * * *", "timeZone": tz,
                "jobTemplate": {"spec": {"template": template("Never")}}}}))
            .unwrap()
        };
        assert_eq!(cj("+02:00").validate(), vec![]);
        let errs = cj("Europe/Paris").validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.timeZone");
    }
}
