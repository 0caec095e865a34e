//! The OpenFn job runtime: compiler, sandboxed executor, adaptors.
//!
//! Entry points: [`execute`] runs a [`Plan`] and reports [`Event`]s;
//! [`cli::run`] is `gabbro run`; [`child::serve`] is the worker's child mode.

pub mod adaptors;
pub mod child;
pub mod cli;
pub mod compiler;
pub mod engine;
pub mod events;
pub mod logs;
pub mod plan;
pub mod run;

pub use events::{ChildRequest, Event, ExitReason, Limits, LogLine};
pub use plan::{Plan, PlanError};
pub use run::{RunReport, StepReport, execute};
