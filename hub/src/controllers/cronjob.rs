//! The CronJob controller: creates a Job from `jobTemplate` at each time
//! the five-field `schedule` names (in `timeZone`), honouring `suspend`,
//! `startingDeadlineSeconds`, `concurrencyPolicy` (Allow, Forbid, Replace)
//! and the successful/failed history limits.
//!
//! `timeZone` is limited to UTC and fixed offsets (`UTC`, `Etc/UTC`,
//! `+05:30`, `UTC-08:00`): the hub carries no time zone database.
//!
//! Time comes from [`Clock`]: the system clock, or, for tests only, the
//! RFC 3339 instant written in the file named by `SPOKE_HUB_FAKE_CLOCK_FILE`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use spoke_api::cron::{Schedule, fixed_offset};

use super::pods;
use crate::api::Error;
use crate::events::{Recorder, Type};
use crate::store::Store;

/// The environment variable that points the CronJob clock at a file
/// (test-only; see docs/controllers.md).
pub const FAKE_CLOCK_ENV: &str = "SPOKE_HUB_FAKE_CLOCK_FILE";
/// The annotation on a Job with the time it was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Where the CronJob controller reads the time.
#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// Test-only: the instant written in this file.
    File(PathBuf),
}

impl Clock {
    /// The system clock, unless [`FAKE_CLOCK_ENV`] names a file.
    pub fn from_env() -> Clock {
        match std::env::var_os(FAKE_CLOCK_ENV) {
            Some(p) if !p.is_empty() => {
                tracing::warn!(file = ?p, "CronJobs run on a fake clock (test-only)");
                Clock::File(p.into())
            }
            _ => Clock::System,
        }
    }

    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::File(p) => std::fs::read_to_string(p)
                .ok()
                .and_then(|s| humantime::parse_rfc3339(s.trim()).ok())
                .unwrap_or_else(SystemTime::now),
        }
    }

    pub fn is_fake(&self) -> bool {
        matches!(self, Clock::File(_))
    }
}

/// Civil date and time of a Unix minute: (month, day, weekday with Sunday
/// 0, hour, minute).
fn civil(minute: i64) -> (u32, u32, u32, u32, u32) {
    let days = minute.div_euclid(1440);
    let m = minute.rem_euclid(1440);
    // Days to civil date (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday.
    (month, day, weekday, (m / 60) as u32, (m % 60) as u32)
}

fn fires(s: &Schedule, minute: i64, offset_min: i64) -> bool {
    let (mo, d, wd, h, mi) = civil(minute + offset_min);
    s.matches(mo, d, wd, h, mi)
}

/// How far a search for a schedule time looks: a year and a day.
const HORIZON_MIN: i64 = 366 * 24 * 60 + 1440;

fn unix_minute(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() / 60) as i64,
        Err(e) => -((e.duration().as_secs() as i64 + 59) / 60),
    }
}

fn at_minute(m: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs((m.max(0) * 60) as u64)
}

/// The latest time in `(after, now]` that the schedule names, if any.
pub fn latest_between(
    s: &Schedule,
    offset_min: i64,
    after: SystemTime,
    now: SystemTime,
) -> Option<SystemTime> {
    let lo = unix_minute(after);
    let mut m = unix_minute(now);
    let floor = lo.max(m - HORIZON_MIN);
    while m > floor {
        if fires(s, m, offset_min) {
            return Some(at_minute(m));
        }
        m -= 1;
    }
    None
}

/// The first time after `now` that the schedule names.
pub fn next_after(s: &Schedule, offset_min: i64, now: SystemTime) -> Option<SystemTime> {
    let start = unix_minute(now) + 1;
    (start..start + HORIZON_MIN)
        .find(|m| fires(s, *m, offset_min))
        .map(at_minute)
}

fn job_state(job: &Value) -> Option<&str> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .and_then(|c| c["type"].as_str())
}

/// One pass over every CronJob; returns when to come back at the latest.
pub async fn pass(
    store: &Store,
    rec: &Recorder,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    let mut next: Option<SystemTime> = None;
    for cj in pods::list_all(store, "cronjobs").await? {
        match reconcile(store, rec, &cj, now).await {
            Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(cronjob = pods::name(&cj), error = %e, "reconcile failed; will retry")
            }
        }
    }
    Ok(next)
}

fn job_ref(job: &Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": pods::name(job),
           "namespace": pods::namespace(job), "uid": pods::uid(job)})
}

/// Moves one CronJob one step: history, then at most one new Job.
pub async fn reconcile(
    store: &Store,
    rec: &Recorder,
    cj: &Value,
    now: SystemTime,
) -> Result<Option<SystemTime>, Error> {
    if pods::deleting(cj) {
        return Ok(None);
    }
    let ns = pods::namespace(cj);
    let all = pods::list(store, "jobs", ns).await?;
    let mut jobs: Vec<Value> = all
        .into_iter()
        .filter(|j| pods::controller_uid(j) == Some(pods::uid(cj)) && !pods::deleting(j))
        .collect();
    jobs.sort_by_key(|j| pods::time_at(j, "/metadata/creationTimestamp"));
    let mut status = cj.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }

    // History: keep the newest N finished Jobs of each outcome.
    for (outcome, field, default) in [
        ("Complete", "/spec/successfulJobsHistoryLimit", 3),
        ("Failed", "/spec/failedJobsHistoryLimit", 1),
    ] {
        let limit = cj.pointer(field).and_then(Value::as_u64).unwrap_or(default) as usize;
        let done: Vec<&Value> = jobs
            .iter()
            .filter(|j| job_state(j) == Some(outcome))
            .collect();
        for j in done.iter().take(done.len().saturating_sub(limit)) {
            delete_job(store, j).await?;
            rec.record(
                cj,
                Type::Normal,
                "SuccessfulDelete",
                &format!("Deleted job {}", pods::name(j)),
            )
            .await;
        }
        if outcome == "Complete"
            && let Some(last) = done
                .last()
                .and_then(|j| j.pointer("/status/completionTime"))
        {
            status["lastSuccessfulTime"] = last.clone();
        }
    }
    let mut active: Vec<&Value> = jobs.iter().filter(|j| job_state(j).is_none()).collect();

    let mut requeue = None;
    let suspended = cj.pointer("/spec/suspend") == Some(&json!(true));
    let schedule = Schedule::parse(
        cj.pointer("/spec/schedule")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let offset = fixed_offset(
        cj.pointer("/spec/timeZone")
            .and_then(Value::as_str)
            .unwrap_or("UTC"),
    );
    let mut created = None;
    match (schedule, offset) {
        (Err(e), _) | (_, Err(e)) => {
            rec.record(cj, Type::Warning, "InvalidSchedule", &e).await;
        }
        (Ok(_), Ok(_)) if suspended => {}
        (Ok(s), Ok(off)) => {
            let since = pods::time_at(cj, "/status/lastScheduleTime")
                .or_else(|| pods::time_at(cj, "/metadata/creationTimestamp"))
                .unwrap_or(now);
            requeue = next_after(&s, off, now);
            if let Some(t) = latest_between(&s, off, since, now) {
                let deadline = cj
                    .pointer("/spec/startingDeadlineSeconds")
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs);
                let policy = cj
                    .pointer("/spec/concurrencyPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Allow");
                if deadline.is_some_and(|d| t + d < now) {
                    rec.record(
                        cj,
                        Type::Warning,
                        "MissSchedule",
                        &format!("Missed scheduled time to start a job: {}", pods::rfc3339(t)),
                    )
                    .await;
                    status["lastScheduleTime"] = json!(pods::rfc3339(t));
                } else if policy == "Forbid" && !active.is_empty() {
                    // Not yet: the next pass after the active Job ends runs it
                    // (if still within the starting deadline).
                    rec.record(cj, Type::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
                        .await;
                } else {
                    if policy == "Replace" {
                        for j in active.drain(..) {
                            delete_job(store, j).await?;
                            rec.record(
                                cj,
                                Type::Normal,
                                "SuccessfulDelete",
                                &format!("Deleted job {}", pods::name(j)),
                            )
                            .await;
                        }
                    }
                    let job = create_job(store, cj, t).await?;
                    rec.record(
                        cj,
                        Type::Normal,
                        "SuccessfulCreate",
                        &format!("Created job {}", pods::name(&job)),
                    )
                    .await;
                    status["lastScheduleTime"] = json!(pods::rfc3339(t));
                    created = Some(job);
                }
            }
        }
    }
    let mut refs: Vec<Value> = active.iter().map(|j| job_ref(j)).collect();
    refs.extend(created.iter().map(job_ref));
    if refs.is_empty() {
        status.as_object_mut().map(|m| m.remove("active"));
    } else {
        status["active"] = json!(refs);
    }
    pods::write_status(store, "cronjobs", cj, status).await?;
    Ok(requeue)
}

async fn delete_job(store: &Store, job: &Value) -> Result<(), Error> {
    let rt = spoke_api::resource::ResourceType::lookup("jobs")
        .ok_or_else(|| Error::Internal("jobs are not a known kind".into()))?;
    let opts = crate::api::DeleteOptions::with_policy("Background");
    match crate::api::delete_object(
        store,
        rt,
        Some(pods::namespace(job)),
        pods::name(job),
        &opts,
    )
    .await
    {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn create_job(store: &Store, cj: &Value, at: SystemTime) -> Result<Value, Error> {
    let mut template = cj
        .pointer("/spec/jobTemplate")
        .cloned()
        .unwrap_or(json!({}));
    if !template["metadata"]["annotations"].is_object() {
        template["metadata"]["annotations"] = json!({});
    }
    template["metadata"]["annotations"][SCHEDULED_AT] = json!(pods::rfc3339(at));
    // Kubernetes names a scheduled Job by its minute since the epoch.
    let name = format!("{}-{}", pods::name(cj), unix_minute(at));
    match pods::create_owned(store, "jobs", cj, &template, pods::Name::Exact(&name), &[]).await {
        Err(Error::AlreadyExists { .. }) => store
            .get(&crate::store::key("jobs", Some(pods::namespace(cj)), &name))
            .await?
            .ok_or_else(|| Error::Internal(format!("job {name} vanished"))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn civil_dates_and_weekdays() {
        // 2026-11-30 was a Monday.
        let m = unix_minute(t("2026-11-30T18:07:00Z"));
        assert_eq!(civil(m), (11, 30, 1, 18, 7));
        assert_eq!(
            civil(unix_minute(t("2024-02-29T00:00:00Z"))),
            (2, 29, 4, 0, 0)
        );
        assert_eq!(civil(0), (1, 1, 4, 0, 0));
    }

    #[test]
    fn schedules_resolve_in_their_time_zone() {
        let s = Schedule::parse("30 9 * * 1-5").unwrap();
        let now = t("2026-11-30T12:00:00Z"); // Monday
        assert_eq!(
            latest_between(&s, 0, t("2026-11-29T00:00:00Z"), now),
            Some(t("2026-11-30T09:30:00Z"))
        );
        // 09:30 at +05:30 is 04:00 UTC.
        assert_eq!(
            latest_between(&s, 330, t("2026-11-29T00:00:00Z"), now),
            Some(t("2026-11-30T04:00:00Z"))
        );
        // Nothing since the last run.
        assert_eq!(latest_between(&s, 0, t("2026-11-30T09:30:00Z"), now), None);
        assert_eq!(next_after(&s, 0, now), Some(t("2026-12-01T09:30:00Z")));
        let fri = t("2026-12-04T10:00:00Z");
        assert_eq!(next_after(&s, 0, fri), Some(t("2026-12-07T09:30:00Z")));
    }
}
