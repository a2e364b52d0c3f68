//! Pods on this node: the pure lifecycle, the supervisor around it, status shapes, logs and volumes.

pub mod config;
pub mod lifecycle;
pub mod logs;
pub mod probe;
pub mod status;
mod supervisor;
pub mod volumes;

pub use supervisor::{Change, LogRequest, Settings, Supervisor};
