//! The domain model, pure: the task and epic rows and their enums, the sync plan, run outcomes
//! and the retry policy, the green layer's activations and caps, roles, and every state
//! transition of a task ([`transition`]) as a function from the row and what happened to the
//! new row and the events that record it. No I/O: the store persists what this decides.

pub mod checks;
pub mod event;
pub mod green;
mod names;
pub mod order;
pub mod outcome;
pub mod plan;
pub mod role;
pub mod task;
pub mod transition;

pub use event::{EventKind, EventRow, NewEvent};
pub use green::{ActivationItem, EpicChange, EpicCount, EpicRow, EpicState};
pub use names::run_name;
pub use order::{describe_run_order, run_order};
pub use outcome::{decide, Outcome, RetryPolicy, MAX_REQUEUES};
pub use plan::{plan_sync, FileChange, SyncPlan};
pub use role::{Role, MANAGER_TRAILER};
pub use task::{
    describe_state, effective_branch, status_of, BadColumn, ClaimLimits, Counts, NewTask, Origin,
    RunningRun, TaskRow,
};
pub use transition::{Change, Refused, StopOutcome};
