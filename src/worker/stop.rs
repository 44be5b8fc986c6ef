//! A stop request to the worker (SIGTERM, as Kubernetes and the local runtime send it, or
//! SIGINT): the handler only records it; the worker then ends the agent's process group and
//! pushes nothing. I/O: the signal disposition and process groups.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Handles SIGTERM and SIGINT from now on (without this, the worker would die mid-push, or,
/// as PID 1 of a container, ignore SIGTERM altogether).
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler does nothing but an atomic store.
        if let Err(e) = unsafe { nix::sys::signal::sigaction(signal, &action) } {
            tracing::warn!("cannot handle {signal}: {e}");
        }
    }
}

/// Whether the worker was asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Ends the process group `pgid`: SIGTERM, then SIGKILL after `grace` if anything is left.
pub fn end_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if killpg(group, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(group, Signal::SIGKILL);
}
