//! workerpool-operator: derives probes, grace periods, app-server flags and staggered startup for
//! pools of Python app-server workers, and records why workers abort.

pub mod api;
pub mod classify;
pub mod controller;
pub mod derive;
pub mod diagnose;
pub mod drift;
pub mod loghints;
pub mod policy;
pub mod ramp;
pub mod render;
pub mod status;
