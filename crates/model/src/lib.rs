//! Domain types of gabbro (projects, workflows, runs, ...) and the run state
//! machine. Pure: no I/O.
//!
//! Names are Lightning's (work order, run, step, dataclip, snapshot). Ids are
//! UUID strings (the worker chooses step and dataclip ids, stored as given),
//! timestamps are microseconds since the Unix epoch.

mod queue;
mod run_options;
mod run_state;
mod work_order;

pub use queue::{QueuePreference, queues};
pub use run_options::RunOptions;
pub use run_state::{
    ExitReason, LOST_AFTER_CLAIM, LOST_AFTER_START, RunState, Transition, TransitionError,
    check_transition,
};
pub use work_order::{WorkOrderState, work_order_state};
