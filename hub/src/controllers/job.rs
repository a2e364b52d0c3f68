//! The Job controller: runs pods from the template until `completions` of
//! them succeed, at most `parallelism` at a time; fails the Job when more
//! than `backoffLimit` pods failed or it ran past `activeDeadlineSeconds`;
//! `suspend` stops its pods; `ttlSecondsAfterFinished` deletes a finished
//! Job (and, through the garbage collector, its pods).
//!
//! Counts come from the Job's pods (finished pods are kept, as in
//! Kubernetes, so their logs can be read) and never go down: a finished pod
//! deleted by hand still counts.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{pods, replicaset};
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::Store;

/// Pod counts of one Job.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    pub active: i32,
    pub succeeded: i32,
    pub failed: i32,
}

/// What the Job's spec asks, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub completions: i32,
    pub parallelism: i32,
    pub backoff_limit: i32,
    pub active_deadline: Option<Duration>,
    pub suspend: bool,
}

/// One step for a Job that has not finished.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Finished: the condition type (`Complete`/`Failed`), reason, message.
    Finish(&'static str, &'static str, &'static str),
    /// Start this many pods.
    Create(i32),
    /// Stop this many active pods.
    Delete(i32),
    Nothing,
}

/// The pure decision for a running Job.
pub fn plan(spec: &Spec, c: &Counts, started: Option<SystemTime>, now: SystemTime) -> Step {
    if c.succeeded >= spec.completions {
        return Step::Finish("Complete", "Completed", "Job completed");
    }
    if c.failed > spec.backoff_limit {
        return Step::Finish(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
    }
    if let (Some(dl), Some(t)) = (spec.active_deadline, started)
        && t + dl <= now
        && !spec.suspend
    {
        return Step::Finish(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        );
    }
    let want = if spec.suspend {
        0
    } else {
        spec.parallelism.min(spec.completions - c.succeeded).max(0)
    };
    match c.active.cmp(&want) {
        std::cmp::Ordering::Less => Step::Create(want - c.active),
        std::cmp::Ordering::Greater => Step::Delete(c.active - want),
        std::cmp::Ordering::Equal => Step::Nothing,
    }
}

fn spec_of(job: &Value) -> Spec {
    let i = |p: &str, d: i64| job.pointer(p).and_then(Value::as_i64).unwrap_or(d) as i32;
    Spec {
        completions: i("/spec/completions", 1),
        parallelism: i("/spec/parallelism", 1),
        backoff_limit: i("/spec/backoffLimit", 6),
        active_deadline: job
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_u64)
            .map(Duration::from_secs),
        suspend: job.pointer("/spec/suspend") == Some(&json!(true)),
    }
}

fn finished(job: &Value) -> Option<SystemTime> {
    let done = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")?;
    pods::time_at(done, "/lastTransitionTime")
        .or_else(|| pods::time_at(job, "/status/completionTime"))
        .or(Some(SystemTime::UNIX_EPOCH))
}

/// One pass over every Job; returns when to come back at the latest.
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let mut next: Option<SystemTime> = None;
    for job in pods::list_all(store, "jobs").await? {
        match reconcile(store, rec, &job, now).await {
            Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = pods::name(&job), error = %e, "reconcile failed; will retry")
            }
        }
    }
    Ok(next)
}

fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let fresh = json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now});
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(c) if c["status"] == status => {}
        Some(c) => *c = fresh,
        None => conds.push(fresh),
    }
}

/// Moves one Job one step.
pub async fn reconcile(
    store: &Store,
    rec: &Recorder,
    job: &Value,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    if pods::deleting(job) {
        return Ok(None);
    }
    if let Some(done) = finished(job) {
        let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_u64)
        else {
            return Ok(None);
        };
        let at = done + Duration::from_secs(ttl);
        if at > now {
            return Ok(Some(at));
        }
        tracing::info!(
            job = pods::name(job),
            "ttlSecondsAfterFinished passed: deleting"
        );
        pods::delete(store, "jobs", job).await?;
        return Ok(None);
    }
    let ns = pods::namespace(job);
    let candidates = pods::list(store, "pods", ns).await?;
    let owned = pods::claim(store, "pods", job, candidates).await?;
    let phase = |p: &Value| {
        p.pointer("/status/phase")
            .and_then(Value::as_str)
            .map(String::from)
    };
    let active: Vec<&Value> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let old = job.get("status").cloned().unwrap_or(json!({}));
    let old_i = |f: &str| old.get(f).and_then(Value::as_i64).unwrap_or(0) as i32;
    let counted = |want: &str| {
        owned
            .iter()
            .filter(|p| phase(p).as_deref() == Some(want))
            .count() as i32
    };
    let counts = Counts {
        active: active.len() as i32,
        succeeded: counted("Succeeded").max(old_i("succeeded")),
        failed: counted("Failed").max(old_i("failed")),
    };
    let spec = spec_of(job);
    let stamp = pods::rfc3339(now);
    let mut status = json!({
        "active": counts.active,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "ready": active.iter().filter(|p| pods::is_ready(p)).count(),
    });
    let mut conditions: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut started = pods::time_at(job, "/status/startTime");
    if spec.suspend {
        set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            &stamp,
        );
    } else {
        if conditions
            .iter()
            .any(|c| c["type"] == "Suspended" && c["status"] == "True")
        {
            set_condition(
                &mut conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                &stamp,
            );
            // As in Kubernetes, the deadline counts from the resume.
            started = Some(now);
        }
        started = started.or(Some(now));
    }
    if let Some(t) = started {
        status["startTime"] = json!(pods::rfc3339(t));
    }
    let mut requeue = None;
    match plan(&spec, &counts, started, now) {
        Step::Finish(type_, reason, message) => {
            for p in &active {
                pods::delete(store, "pods", p).await?;
            }
            status["active"] = json!(0);
            set_condition(&mut conditions, type_, "True", reason, message, &stamp);
            if type_ == "Complete" {
                status["completionTime"] = json!(stamp);
                rec.record(job, Type::Normal, "Completed", message).await;
            } else {
                rec.record(job, Type::Warning, reason, message).await;
            }
            if let Some(ttl) = job
                .pointer("/spec/ttlSecondsAfterFinished")
                .and_then(Value::as_u64)
            {
                requeue = Some(now + Duration::from_secs(ttl));
            }
        }
        Step::Create(n) => {
            pods::create_from_template(store, rec, job, n as u32).await?;
        }
        Step::Delete(n) => {
            let mut victims = active.clone();
            victims.sort_by(|a, b| replicaset::deletion_order(a, b));
            for p in victims.into_iter().take(n as usize) {
                pods::delete(store, "pods", p).await?;
                rec.record(
                    job,
                    Type::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", pods::name(p)),
                )
                .await;
            }
        }
        Step::Nothing => {}
    }
    if let (Some(dl), Some(t), None) = (spec.active_deadline, started, requeue) {
        requeue = Some(t + dl);
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    pods::write_status(store, "jobs", job, status).await?;
    Ok(requeue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_steps() {
        let spec = Spec {
            completions: 3,
            parallelism: 2,
            backoff_limit: 1,
            active_deadline: Some(Duration::from_secs(60)),
            suspend: false,
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = |active, succeeded, failed| Counts {
            active,
            succeeded,
            failed,
        };
        let cases = [
            (spec, c(0, 0, 0), t0, Step::Create(2)),
            (spec, c(2, 0, 0), t0, Step::Nothing),
            (spec, c(1, 1, 0), t0, Step::Create(1)),
            // One left to do: one pod, not two.
            (spec, c(0, 2, 0), t0, Step::Create(1)),
            (spec, c(2, 2, 0), t0, Step::Delete(1)),
            (
                spec,
                c(0, 3, 0),
                t0,
                Step::Finish("Complete", "Completed", "Job completed"),
            ),
            (spec, c(1, 0, 1), t0, Step::Create(1)),
            (
                spec,
                c(1, 0, 2),
                t0,
                Step::Finish(
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            ),
            (
                spec,
                c(2, 0, 0),
                t0 + Duration::from_secs(60),
                Step::Finish(
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
            ),
            (
                Spec {
                    suspend: true,
                    ..spec
                },
                c(2, 0, 0),
                t0,
                Step::Delete(2),
            ),
        ];
        for (i, (s, counts, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(plan(&s, &counts, Some(t0), now), want, "case {i}");
        }
    }
}
