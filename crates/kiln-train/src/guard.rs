//! Device work whose panics become errors, without the panic printed first.
//!
//! Burn's backends report a failed allocation by panicking (cubecl's `can't allocate buffer of
//! size: N`, inside a chain of `Caused by:` lines and a backtrace section). kiln catches the panic
//! around each training step and evaluation batch and turns it into
//! [`TrainError::OutOfMemory`](crate::TrainError::OutOfMemory) with one readable line and a hint —
//! but Rust's default panic hook prints the whole panic text first, so a user saw twenty lines of
//! backend internals (and, with `RUST_BACKTRACE` set, a backtrace) before kiln's error. [`catch`]
//! silences the hook for the thread running the guarded work (and only that thread, only for that
//! time): the panic's message goes into the error, where it was raised into
//! [`Caught::location`], and nothing is printed twice.
//!
//! One exception: a panic that is not an allocation failure (a bug in the backend or in the
//! model's own code) still goes to the hook when `RUST_BACKTRACE` asks for backtraces (anything
//! but `0`), for those debugging it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use kiln_data::loader::panic_message;

use crate::TrainError;
use crate::error::RunPoint;

thread_local! {
    /// Whether this thread is inside [`catch`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic silenced on this thread was raised.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// A panic caught by [`catch`].
pub(crate) struct Caught {
    /// The panic's payload (its message, for `panic!` and `unwrap`).
    pub(crate) payload: Box<dyn Any + Send>,
    /// `file:line:column` where it was raised, when on this thread.
    pub(crate) location: Option<String>,
}

/// Runs `f`, catching a panic without the panic hook printing it (see the module docs).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    install();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    let location = LOCATION.with(|l| l.borrow_mut().take());
    result.map_err(|payload| Caught { payload, location })
}

/// Wraps the panic hook in place (once per process): a panic on a thread inside [`catch`] has its
/// location recorded and is not printed — unless it is not an allocation failure and
/// `RUST_BACKTRACE` asks for backtraces; every other panic goes to the hook that was there before.
fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                return previous(info);
            }
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LOCATION.with(|l| *l.borrow_mut() = at);
            // The message is only looked at when backtraces are asked for.
            if backtrace_requested()
                && allocation_failure(&kiln_data::loader::panic_message(info.payload())).is_none()
            {
                previous(info);
            }
        }));
    });
}

fn backtrace_requested() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}

/// A panic caught inside a training step or an evaluation batch, as an error: an allocation
/// failure (recognised by the messages of Burn's backends, see [`allocation_failure`]) becomes
/// [`TrainError::OutOfMemory`] with the batch size and a hint, anything else
/// [`TrainError::BackendPanic`] naming where (and where it was raised).
pub(crate) fn device_failure(
    caught: &Caught,
    device: &str,
    at: RunPoint,
    batch: usize,
    accumulate: usize,
) -> TrainError {
    let message = panic_message(caught.payload.as_ref());
    match allocation_failure(&message) {
        Some(message) => TrainError::OutOfMemory {
            device: device.to_string(),
            at,
            batch,
            accumulate,
            message,
        },
        None => TrainError::BackendPanic {
            device: device.to_string(),
            at,
            message,
            location: caught.location.clone(),
        },
    }
}

/// The line of a backend's panic message that says an allocation failed, made readable; `None`
/// when nothing in it is about memory. cubecl (Burn's GPU backends) says
/// `can't allocate buffer of size: N` for one tensor larger than any buffer the device allows
/// (wgpu's binding limit: 128 MiB on Mesa's lavapipe) and `out of device memory allocating N
/// bytes` when the device is full; the message chains several `Caused by:` lines around it.
pub(crate) fn allocation_failure(message: &str) -> Option<String> {
    const MARKERS: [&str; 7] = [
        "can't allocate buffer",
        "out of device memory",
        "out of memory",
        "outofmemory",
        "out_of_memory",
        "memory allocation",
        "failed to allocate",
    ];
    let line = message.lines().map(str::trim).find(|line| {
        let lower = line.to_ascii_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    })?;
    let too_big = line
        .strip_prefix("can't allocate buffer of size: ")
        .and_then(|n| n.trim().parse::<u64>().ok());
    Some(match too_big {
        Some(bytes) => format!(
            "one tensor needs a buffer of {:.1} MiB ({bytes} bytes), more than the device allows in one buffer",
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value passes through; a panic comes back with its message and this file as location;
    /// nesting restores the outer state; a panic after `catch` is not recorded.
    #[test]
    fn catches_with_location_and_restores_the_thread_state() {
        assert_eq!(catch(|| 7).ok(), Some(7));
        let Err(caught) = catch::<u8>(|| panic!("boom {}", 1)) else {
            panic!("the panic was not caught");
        };
        assert_eq!(
            kiln_data::loader::panic_message(caught.payload.as_ref()),
            "boom 1"
        );
        let at = caught.location.unwrap_or_default();
        assert!(at.contains("guard.rs:"), "{at}");
        let nested = catch(|| {
            let inner = catch::<()>(|| panic!("inner"));
            assert!(inner.is_err());
            GUARDED.with(Cell::get)
        });
        assert_eq!(nested.ok(), Some(true), "the outer catch is still guarded");
        assert!(!GUARDED.with(Cell::get));
    }

    /// The allocation failures Burn's GPU backends raise as panics (cubecl 0.11's wording, inside
    /// its chain of causes), and any other panic, become errors naming where, the OOM one with
    /// the batch size and the fix. The wgpu message is the one `tests/backends.rs` provokes on
    /// lavapipe; the CUDA one is `IoError::OutOfMemory`'s text in cubecl-runtime 0.11.3.
    #[test]
    fn a_panic_in_the_backend_becomes_an_error_and_oom_gets_a_hint() {
        let caught = |message: String, location: Option<&str>| Caught {
            payload: Box::new(message),
            location: location.map(str::to_string),
        };
        let too_big = caught(
            "Error while reading data: use `try_into_scalar` instead to catch the error at runtime: Execution(An error happened during execution\nCaused by:\n  Several failures at once\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 135266304\nNo backtrace available)".to_string(),
            Some("burn-tensor/src/tensor/api/base.rs:1:1"),
        );
        let at = RunPoint::Training { epoch: 3, step: 17 };
        let msg = device_failure(&too_big, "Wgpu", at, 256, 1).to_string();
        assert_eq!(
            msg.lines().next(),
            Some(
                "out of memory on Wgpu at epoch 3, step 17 (batch_size 256): one tensor needs a buffer of 129.0 MiB (135266304 bytes), more than the device allows in one buffer"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("lower train.batch_size (e.g. 128)") && msg.contains("train.accumulate = 2"),
            "{msg}"
        );
        // An allocation failure's location is the backend's, of no use to the user.
        assert!(!msg.contains("base.rs"), "{msg}");
        let full = caught(
            "An IO error happened\nCaused by:\n  out of device memory allocating 2147483648 bytes\n"
                .to_string(),
            None,
        );
        let msg = device_failure(&full, "Cuda(0)", RunPoint::Evaluation { batch: 4 }, 1000, 1).to_string();
        assert!(
            msg.starts_with(
                "out of memory on Cuda(0) at evaluation batch 4 (batch_size 1000): out of device memory allocating 2147483648 bytes\n"
            ) && msg.contains("lower the batch size (e.g. 500;")
                && msg.contains("evaluation on its own can use a smaller one")
                && !msg.contains("accumulate"),
            "{msg}"
        );
        let other = caught("index out of bounds".into(), None);
        let msg = device_failure(&other, "Flex", RunPoint::Training { epoch: 1, step: 2 }, 8, 1).to_string();
        assert_eq!(
            msg,
            "the backend failed on Flex at epoch 1, step 2: index out of bounds"
        );
        // Where it was raised, when the guard saw it (the hook printed nothing).
        let located = caught("index out of bounds".into(), Some("src/model.rs:42:9"));
        let msg = device_failure(&located, "flex", RunPoint::Evaluation { batch: 1 }, 8, 1).to_string();
        assert_eq!(
            msg,
            "the backend failed on flex at evaluation batch 1: index out of bounds\n  panicked at src/model.rs:42:9 (RUST_BACKTRACE=1 prints the panic with its backtrace)"
        );
    }
}
