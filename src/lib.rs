//! workerpool-operator: derives probes, grace periods, app-server flags and staggered startup for
//! pools of Python app-server workers, and records why workers abort.

pub mod api;
pub mod derive;
pub mod policy;
pub mod render;
pub mod drift;
pub mod ramp;
pub mod status;
