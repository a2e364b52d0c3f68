//! Spoke's API types: the Kubernetes-shaped objects the hub serves, and the
//! messages the hub and the edge agents exchange over MQTT.
//!
//! This crate does no IO, so that the hub, the agent, the client, the CLI and
//! tests all agree on one definition of every shape and cannot drift apart.

pub mod apps;
pub mod auth;
pub mod batch;
pub mod broker;
pub mod config;
pub mod core;
pub mod cron;
pub mod data;
pub mod event;
#[cfg(feature = "proptest")]
pub mod fuzz;
pub mod meta;
pub mod module;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod table;
pub mod validation;

pub use crate::core::{Container, Node, Pod, PodSpec, PodStatus};
pub use crate::meta::{ObjectMeta, Status};
