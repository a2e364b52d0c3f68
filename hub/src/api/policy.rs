//! Per-namespace admission of pods: LimitRange defaults and bounds, then
//! ResourceQuota. Applied to every pod created, by a client or by a
//! controller, in [`super::create_object`].
//!
//! Quota checks and the create they allow must not interleave with another
//! create in the same namespace, or two pods could both fit the last slot:
//! [`QuotaGate`] serialises them. One hub owns the store (redb), so a lock
//! in this process is enough; an etcd backend would need the quota's own
//! resourceVersion as the lock instead.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spoke_api::core::Pod;
use spoke_api::policy::{LimitRange, ResourceQuota, amount};
use spoke_api::quantity::Quantity;

use super::Error;
use crate::store::{self, Store};

/// Serialises quota-checked creates.
pub static QUOTA_GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `250m`, `2`: how Kubernetes prints cpu.
fn cpu_text(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// `64Mi`, `1Gi`, `1000`: how Kubernetes prints memory.
fn memory_text(bytes: u64) -> String {
    for (unit, size) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

fn text(resource: &str, v: u64) -> String {
    if resource.ends_with("cpu") {
        cpu_text(v)
    } else if resource.ends_with("memory") {
        memory_text(v)
    } else {
        v.to_string()
    }
}

fn parse(map: &BTreeMap<String, Quantity>, res: &str) -> Option<u64> {
    map.get(res).and_then(|q| amount(res, q).ok())
}

/// Fills defaults from the namespace's LimitRanges into `pod` and checks
/// their minima and maxima.
pub fn apply_limit_ranges(pod: &mut Pod, ranges: &[LimitRange]) -> Result<(), Error> {
    let forbid = |msg: String| {
        Error::Forbidden(format!(
            "pods \"{}\" is forbidden: {msg}",
            pod.metadata.name
        ))
    };
    for range in ranges {
        for item in &range.spec.limits {
            if item.type_ != "Container" {
                continue;
            }
            for c in &mut pod.spec.containers {
                let r = &mut c.resources;
                for (res, q) in &item.default {
                    r.limits.entry(res.clone()).or_insert_with(|| q.clone());
                }
                for (res, q) in &item.default_request {
                    r.requests.entry(res.clone()).or_insert_with(|| q.clone());
                }
                // Kubernetes: a limit without a request is also the request.
                for (res, q) in r.limits.clone() {
                    r.requests.entry(res).or_insert(q);
                }
            }
        }
    }
    for range in ranges {
        for item in &range.spec.limits {
            let per_pod = item.type_ == "Pod";
            let mut totals: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for c in &pod.spec.containers {
                for res in ["cpu", "memory"] {
                    let req = parse(&c.resources.requests, res);
                    let lim = parse(&c.resources.limits, res);
                    let t = totals.entry(res).or_default();
                    t.0 += req.unwrap_or(0);
                    t.1 += lim.unwrap_or(0);
                    if per_pod {
                        continue;
                    }
                    if let Some(max) = parse(&item.max, res) {
                        match lim {
                            None => {
                                return Err(forbid(format!(
                                    "maximum {res} usage per Container is {}. No limit is specified",
                                    text(res, max)
                                )));
                            }
                            Some(l) if l > max => {
                                return Err(forbid(format!(
                                    "maximum {res} usage per Container is {}, but limit is {}",
                                    text(res, max),
                                    text(res, l)
                                )));
                            }
                            _ => {}
                        }
                    }
                    if let Some(min) = parse(&item.min, res)
                        && req.unwrap_or(0) < min
                    {
                        return Err(forbid(format!(
                            "minimum {res} usage per Container is {}, but request is {}",
                            text(res, min),
                            text(res, req.unwrap_or(0))
                        )));
                    }
                }
            }
            if per_pod {
                for (res, (req, lim)) in totals {
                    if let Some(max) = parse(&item.max, res)
                        && lim > max
                    {
                        return Err(forbid(format!(
                            "maximum {res} usage per Pod is {}, but limit is {}",
                            text(res, max),
                            text(res, lim)
                        )));
                    }
                    if let Some(min) = parse(&item.min, res)
                        && req < min
                    {
                        return Err(forbid(format!(
                            "minimum {res} usage per Pod is {}, but request is {}",
                            text(res, min),
                            text(res, req)
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What one pod counts against a quota, per quota resource name.
fn pod_usage(pod: &Pod) -> Result<BTreeMap<&'static str, u64>, String> {
    let mut u: BTreeMap<&'static str, u64> = BTreeMap::new();
    u.insert("pods", 1);
    for c in &pod.spec.containers {
        for (res, which, map) in [
            ("cpu", "requests", &c.resources.requests),
            ("memory", "requests", &c.resources.requests),
            ("cpu", "limits", &c.resources.limits),
            ("memory", "limits", &c.resources.limits),
        ] {
            let Some(q) = map.get(res) else { continue };
            let v = amount(res, q)?;
            let key: &'static str = match (which, res) {
                ("requests", "cpu") => "requests.cpu",
                ("requests", _) => "requests.memory",
                ("limits", "cpu") => "limits.cpu",
                _ => "limits.memory",
            };
            *u.entry(key).or_default() += v;
        }
    }
    for (short, long) in [("cpu", "requests.cpu"), ("memory", "requests.memory")] {
        let v = u.get(long).copied();
        if let Some(v) = v {
            u.insert(short, v);
        }
    }
    Ok(u)
}

fn counts(pod: &Value) -> bool {
    !matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Usage of the namespace's pods that still count (not finished).
fn namespace_usage(pods: &[Value]) -> BTreeMap<&'static str, u64> {
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    for p in pods.iter().filter(|p| counts(p)) {
        let Ok(pod) = serde_json::from_value::<Pod>(p.clone()) else {
            continue;
        };
        if let Ok(u) = pod_usage(&pod) {
            for (k, v) in u {
                *total.entry(k).or_default() += v;
            }
        }
    }
    total
}

/// Checks a new pod against every quota of its namespace; the refusal
/// names the quota and what it would exceed, as Kubernetes words it.
pub fn check_quotas(pod: &Pod, quotas: &[ResourceQuota], pods: &[Value]) -> Result<(), Error> {
    if quotas.is_empty() {
        return Ok(());
    }
    let forbid = |msg: String| {
        Error::Forbidden(format!(
            "pods \"{}\" is forbidden: {msg}",
            pod.metadata.name
        ))
    };
    let wanted = pod_usage(pod).map_err(|e| forbid(format!("bad quantity {e}")))?;
    let used = namespace_usage(pods);
    for quota in quotas {
        let qname = &quota.metadata.name;
        let mut missing = Vec::new();
        let (mut requested, mut usage, mut limited) = (Vec::new(), Vec::new(), Vec::new());
        for (res, hard) in &quota.spec.hard {
            let Ok(hard) = amount(res, hard) else {
                continue;
            };
            let Some(&want) = wanted.get(res.as_str()) else {
                if res != "pods" {
                    missing.push(res.clone());
                }
                continue;
            };
            let have = used.get(res.as_str()).copied().unwrap_or(0);
            if have + want > hard {
                requested.push(format!("{res}={}", text(res, want)));
                usage.push(format!("{res}={}", text(res, have)));
                limited.push(format!("{res}={}", text(res, hard)));
            }
        }
        if !missing.is_empty() {
            return Err(forbid(format!(
                "failed quota: {qname}: must specify {}",
                missing.join(",")
            )));
        }
        if !requested.is_empty() {
            return Err(forbid(format!(
                "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                requested.join(","),
                usage.join(","),
                limited.join(",")
            )));
        }
    }
    Ok(())
}

/// Runs LimitRange and ResourceQuota admission for a pod about to be
/// created in `namespace`; returns the pod with defaults applied.
pub async fn admit_pod(store: &Store, namespace: &str, value: Value) -> Result<Value, Error> {
    let (ranges, _) = store
        .list(&store::prefix("limitranges", Some(namespace)))
        .await?;
    let (quotas, _) = store
        .list(&store::prefix("resourcequotas", Some(namespace)))
        .await?;
    if ranges.is_empty() && quotas.is_empty() {
        return Ok(value);
    }
    let decode = |e: serde_json::Error| Error::Internal(format!("stored policy object: {e}"));
    let ranges: Vec<LimitRange> = ranges
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(decode)?;
    let quotas: Vec<ResourceQuota> = quotas
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(decode)?;
    let mut pod: Pod = serde_json::from_value(value.clone())
        .map_err(|e| Error::Internal(format!("admitted pod: {e}")))?;
    apply_limit_ranges(&mut pod, &ranges)?;
    if !quotas.is_empty() {
        let (pods, _) = store.list(&store::prefix("pods", Some(namespace))).await?;
        check_quotas(&pod, &quotas, &pods)?;
    }
    let mut out = value;
    out["spec"] = serde_json::to_value(&pod.spec).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(out)
}

/// Writes each quota's `status.hard` and `status.used` from the pods that
/// count now (the quota controller's job, run with the other controllers).
pub async fn refresh_quota_status(store: &Store) -> Result<(), store::Error> {
    let (quotas, _) = store.list(&store::prefix("resourcequotas", None)).await?;
    for q in quotas {
        let Ok(quota) = serde_json::from_value::<ResourceQuota>(q.clone()) else {
            continue;
        };
        let ns = quota.metadata.namespace.clone().unwrap_or_default();
        let (pods, _) = store.list(&store::prefix("pods", Some(&ns))).await?;
        let usage = namespace_usage(&pods);
        let used: BTreeMap<&String, String> = quota
            .spec
            .hard
            .keys()
            .map(|res| {
                let v = usage.get(res.as_str()).copied().unwrap_or(0);
                (res, text(res, v))
            })
            .collect();
        let status = json!({"hard": quota.spec.hard, "used": used});
        if q.get("status") == Some(&status) {
            continue;
        }
        let key = store::key("resourcequotas", Some(&ns), &quota.metadata.name);
        let r = store
            .modify(&key, |cur| {
                let mut next = cur.clone();
                next["status"] = status.clone();
                Some(next)
            })
            .await;
        match r {
            Ok(_) | Err(store::Error::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoke_api::validation::decode_strict;

    fn pod(resources: Value) -> Pod {
        decode_strict(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "m", "image": "x:1", "resources": resources}]}}))
        .unwrap()
    }

    fn range(item: Value) -> LimitRange {
        decode_strict(json!({"metadata": {"name": "limits"}, "spec": {"limits": [item]}})).unwrap()
    }

    #[test]
    fn limit_ranges_default_then_bound() {
        let lr = range(
            json!({"type": "Container", "default": {"memory": "64Mi", "cpu": "500m"},
            "defaultRequest": {"cpu": "100m"}, "max": {"memory": "128Mi"}}),
        );
        let mut p = pod(json!({}));
        apply_limit_ranges(&mut p, std::slice::from_ref(&lr)).unwrap();
        let r = &p.spec.containers[0].resources;
        assert_eq!(r.limits["memory"].0, "64Mi");
        assert_eq!(r.requests["cpu"].0, "100m");
        assert_eq!(
            r.requests["memory"].0, "64Mi",
            "the limit is also the request"
        );
        let mut big = pod(json!({"limits": {"memory": "1Gi"}}));
        let err = apply_limit_ranges(&mut big, &[lr]).unwrap_err().to_string();
        assert_eq!(
            err,
            "pods \"p\" is forbidden: maximum memory usage per Container is 128Mi, but limit is 1Gi"
        );
    }

    #[test]
    fn quotas_name_the_quota_and_what_exceeds_it() {
        let q: ResourceQuota = decode_strict(json!({"metadata": {"name": "compute"},
            "spec": {"hard": {"pods": "2", "requests.memory": "100Mi"}}}))
        .unwrap();
        let existing = json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "m", "image": "x:1", "resources": {"requests": {"memory": "64Mi"}}}]},
            "status": {"phase": "Running"}});
        let finished = json!({"metadata": {"name": "b"}, "spec": {"containers": [
            {"name": "m", "image": "x:1", "resources": {"requests": {"memory": "64Mi"}}}]},
            "status": {"phase": "Succeeded"}});
        let small = pod(json!({"requests": {"memory": "32Mi"}}));
        check_quotas(
            &small,
            std::slice::from_ref(&q),
            &[existing.clone(), finished.clone()],
        )
        .unwrap();
        let large = pod(json!({"requests": {"memory": "64Mi"}}));
        let err = check_quotas(
            &large,
            std::slice::from_ref(&q),
            &[existing.clone(), finished],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "pods \"p\" is forbidden: exceeded quota: compute, requested: requests.memory=64Mi, used: requests.memory=64Mi, limited: requests.memory=100Mi"
        );
        let bare = pod(json!({}));
        let err = check_quotas(&bare, &[q], &[existing])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("failed quota: compute: must specify requests.memory"),
            "{err}"
        );
    }
}
