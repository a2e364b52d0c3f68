//! `spoke-guest`: what a pod written in Rust needs from Spoke.
//!
//! Pods are WASI programs (`wasm32-wasip1` modules or `wasm32-wasip2`
//! components). Everything here is plain WASI underneath, so a pod that does
//! not link this crate gets the same behaviour by hand; the crate only makes
//! the conventions short to use:
//!
//! - [`config`]: read settings into a typed struct from environment variables
//!   (literal, or from a ConfigMap/Secret through `env`/`envFrom`) or from a
//!   mounted `configMap`/`secret` volume, with errors that name the variable
//!   or file.
//! - [`log`]: one JSON object per line, which `spoke logs` shows as is and
//!   log tools parse without guessing.
//! - [`shutdown`]: learn that the agent asks the pod to stop (its stdin
//!   closes) and use the grace period to finish cleanly.
//! - [`net`] and [`http`]: blocking TCP and a small HTTP/1.1 server for
//!   components that serve their `containerPort` (WASI 0.2 sockets).
//! - [`probe`]: export functions that the agent's `exec` probes call
//!   ([`export_probes!`]).
//!
//! ```no_run
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Settings {
//!     interval_seconds: u64,
//!     #[serde(default)]
//!     label: Option<String>,
//! }
//!
//! // THERMO_INTERVAL_SECONDS=5, THERMO_LABEL=barn
//! let settings: Settings = spoke_guest::config::from_env("THERMO_").unwrap();
//! spoke_guest::info!("started"; interval = settings.interval_seconds, label = settings.label);
//! ```

pub mod config;
pub mod http;
pub mod log;
pub mod net;
pub mod probe;
pub mod shutdown;

#[doc(hidden)]
#[cfg(target_os = "wasi")]
pub use wit_bindgen as __wit_bindgen;
