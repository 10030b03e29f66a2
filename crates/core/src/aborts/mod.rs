//! Why workers die: what the operator reads of a pod, the classification of its terminations and
//! states, the hints its log gives, the aborts found on a pool's pods, the Events and logs that
//! classification asks for, and the ledger that counts each once. Pure: the controller supplies
//! pods, Events, logs and the time.

pub mod classify;
pub mod detect;
pub mod ledger;
pub mod loghints;
pub mod podview;
pub mod reads;
pub mod report;
