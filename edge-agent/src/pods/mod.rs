//! Pods on this node: the pure lifecycle, the supervisor around it, status shapes and logs.

pub mod lifecycle;
pub mod logs;
pub mod status;
mod supervisor;

pub use supervisor::{Change, Settings, Supervisor};
