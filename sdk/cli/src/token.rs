//! `spoke token create|list|revoke`: bearer tokens for people, CI and nodes.

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use clap::Subcommand;
use spoke_api::auth::{Role, TOKENS_PATH, Token};
use spoke_client::Client;

#[derive(Subcommand)]
pub enum Command {
    /// Create a token and print it (once: the hub keeps only its hash).
    Create {
        /// Its name: a DNS label such as ci or alice. A node token is named
        /// like its node.
        name: String,
        /// admin, edit, view, or node (for a board's agent).
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
        /// Lifetime, such as 30m, 24h or 90d (default: no expiry).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it is refused from the next request on.
    Revoke { name: String },
}

/// Runs a token command. `namespace` is the `-n` given on the command line
/// only (not the context's): a token is cluster-wide unless asked otherwise.
pub async fn run(client: &Client, command: Command, namespace: Option<&str>) -> anyhow::Result<()> {
    match command {
        Command::Create { name, role, ttl } => {
            let ttl = ttl.map(|d| d.as_secs().max(1));
            let request = Token::new(&name, role, namespace, ttl);
            let created: Token = serde_json::from_value(
                client
                    .create(TOKENS_PATH, &serde_json::to_value(request)?)
                    .await?,
            )?;
            let secret = created
                .status
                .and_then(|s| s.token)
                .ok_or_else(|| anyhow!("the hub answered without the token"))?;
            println!("{secret}");
            eprintln!(
                "token \"{name}\" created ({}); it is shown only now",
                scope(&created.spec.role, created.spec.namespace.as_deref())
            );
        }
        Command::List => {
            let list: spoke_api::meta::List<Token> = client.get(TOKENS_PATH).await?;
            let now = SystemTime::now();
            let mut rows = vec![
                ["NAME", "ROLE", "NAMESPACE", "EXPIRES", "AGE"]
                    .map(String::from)
                    .to_vec(),
            ];
            for t in list.items {
                let expires = t.status.and_then(|s| s.expiration_timestamp);
                rows.push(vec![
                    t.metadata.name,
                    t.spec.role.to_string(),
                    t.spec.namespace.unwrap_or_else(|| "<all>".into()),
                    expires
                        .as_deref()
                        .map_or("<never>".into(), |e| until(e, now)),
                    spoke_api::table::age(t.metadata.creation_timestamp.as_deref(), now),
                ]);
            }
            print!("{}", crate::get::align(&rows));
        }
        Command::Revoke { name } => {
            client
                .delete(&format!("{TOKENS_PATH}/{name}"), None)
                .await
                .map_err(|e| match e.code() {
                    Some(404) => anyhow!("tokens \"{name}\" not found"),
                    _ => e.into(),
                })?;
            println!("token \"{name}\" revoked");
        }
    }
    Ok(())
}

fn scope(role: &Role, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("role {role} in namespace {ns}"),
        None => format!("role {role}, cluster-wide"),
    }
}

/// "in 23h", or "expired" once past.
fn until(at: &str, now: SystemTime) -> String {
    match humantime::parse_rfc3339(at) {
        Ok(t) if t <= now => "expired".into(),
        Ok(t) => {
            // The same short units as AGE.
            let left = t.duration_since(now).unwrap_or_default();
            format!("in {}", spoke_api::table::human_duration(left))
        }
        Err(_) => at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_as_time_left() {
        let now = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(until("2026-01-01T05:00:00Z", now), "in 5h");
        assert_eq!(until("2026-01-01T00:00:30Z", now), "in 30s");
        assert_eq!(until("2025-12-31T00:00:00Z", now), "expired");
    }
}
