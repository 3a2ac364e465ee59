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

use crate::fit::allocation_failure;

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
}
