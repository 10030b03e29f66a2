//! workerpool-operator: derives probes, grace periods, app-server flags and staggered startup for
//! pools of Python app-server workers, and records why workers abort.
//!
//! Pure modules (no client, no clock): `policy`, `derive`, `ramp`, `rollout`, `status`, `drift`, `classify`,
//! `loghints`, `managed_fields`, `aborts`, `observe`, `podview`, `watched`. The I/O edge is `controller`; `render` and `diagnose` back the offline commands.

pub mod aborts;
pub mod api;
pub mod classify;
pub mod controller;
pub mod derive;
pub mod diagnose;
pub mod drift;
pub mod loghints;
pub mod managed_fields;
pub mod observe;
pub mod podview;
pub mod policy;
pub mod ramp;
pub mod render;
pub mod rollout;
pub mod sandbox;
pub mod status;
pub mod watched;
