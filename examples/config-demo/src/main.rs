//! config-demo: reads a ConfigMap and a Secret both ways Kubernetes offers,
//! and shows that a change to the ConfigMap reaches the running pod.
//!
//! - Environment (fixed for the life of the container): `DEMO_GREETING`
//!   from the ConfigMap, `DEMO_TOKEN` from the Secret.
//! - Files (updated in place by the agent when the object changes): the
//!   ConfigMap mounted at `/config`, the Secret at `/secret`.
//!
//! Every second it re-reads `/config` and logs the greeting when it changed.
//! The Secret's value is never logged, only its length. It exits as soon as
//! the agent asks it to stop.

use std::time::Duration;

use serde::Deserialize;

#[derive(Deserialize)]
struct Env {
    greeting: String,
    token: String,
}

#[derive(Deserialize, PartialEq)]
struct Files {
    greeting: String,
    #[serde(default)]
    color: Option<String>,
}

#[derive(Deserialize)]
struct Secret {
    api_token: String,
}

fn main() {
    let env: Env = spoke_guest::config::from_env("DEMO_").unwrap_or_else(|e| {
        spoke_guest::error!("bad settings"; error = e.to_string());
        std::process::exit(2)
    });
    spoke_guest::info!("started"; env_greeting = env.greeting, token_bytes = env.token.len());
    match spoke_guest::config::from_dir::<Secret>("/secret") {
        Ok(s) => spoke_guest::info!("secret mounted"; api_token_bytes = s.api_token.len()),
        Err(e) => spoke_guest::warn!("no secret volume"; error = e.to_string()),
    }
    let mut current: Option<Files> = None;
    loop {
        match spoke_guest::config::from_dir::<Files>("/config") {
            Ok(files) if current.as_ref() != Some(&files) => {
                spoke_guest::info!("config"; greeting = files.greeting, color = files.color);
                current = Some(files);
            }
            Ok(_) => {}
            Err(e) => spoke_guest::warn!("cannot read /config"; error = e.to_string()),
        }
        if spoke_guest::shutdown::sleep(Duration::from_secs(1)) {
            spoke_guest::info!("stopping");
            break;
        }
    }
}
