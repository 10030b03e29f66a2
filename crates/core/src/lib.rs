//! workerpool-operator: derives probes, grace periods, app-server flags and staggered startup for
//! pools of Python app-server workers, and records why workers abort.
//!
//! Two pure domains, no client and no clock: [`pool`] (validate, settle, derive, ramp, gates) and
//! [`aborts`] (pod view, classification, log hints, detection, ledger); [`status`] turns both into
//! the pool's status, and [`decide`] turns one reconcile's observations into everything it does.
//! The I/O edge is [`controller`]: it observes, asks [`decide`] and acts; [`render`] and [`diagnose`] back the offline
//! commands, and [`yaml`] prints what they print. The simulated cluster is a crate of its own, `workerpool-sandbox`.

pub mod aborts;
pub mod api;
pub mod controller;
pub mod decide;
pub mod diagnose;
pub mod plugin;
pub mod pool;
pub mod render;
pub mod status;
pub mod yaml;
