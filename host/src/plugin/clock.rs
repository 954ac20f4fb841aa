//! `wasi:clocks/monotonic-clock` for plugins: the host's clock, with waits that cannot
//! outlast the call.
//!
//! Epoch interruption stops a plugin only while it runs wasm. A wait on a clock (Rust's
//! `std::thread::sleep` is `subscribe-duration` then `wasi:io/poll`) blocks in the host,
//! where no epoch check runs, so `sleep(60 s)` would hold the pipeline for a minute
//! whatever the plugin's `timeout_ms`. Here every subscription is checked against the
//! deadline of the call that makes it: one that would end past it fails the call at once
//! as a timeout (it could only end in one), and one that ends before it is the ordinary
//! timer. A plugin's clock waits therefore end by its deadline, and the epoch check takes
//! over as soon as it runs wasm again. The clock itself is the host's, so a plugin that
//! measures time sees it advance.
//!
//! Nothing else a plugin can wait on blocks: its stdin is empty, its stdout and stderr
//! are memory, and it has no files or sockets.

use super::runtime::StoreState;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{
    self, Duration as WasiDuration, Instant as WasiInstant,
};

/// A plugin asked to wait on a clock past its call's deadline. Reported as a timeout.
#[derive(Debug, thiserror::Error)]
#[error("the plugin waited on a clock past its call's deadline")]
pub(super) struct WaitPastDeadline;

/// Replace the WASI monotonic clock in `linker` (which has the stock one) by [`CallClock`].
pub(super) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = monotonic_clock::add_to_linker::<StoreState, CallClockData>(linker, |state| {
        let deadline = state.deadline;
        CallClock {
            inner: state.clocks(),
            deadline,
        }
    });
    linker.allow_shadowing(false);
    added
}

struct CallClockData;

impl HasData for CallClockData {
    type Data<'a> = CallClock<'a>;
}

/// The stock clock of one store, and the deadline of its current call.
struct CallClock<'a> {
    inner: WasiClocksCtxView<'a>,
    deadline: Instant,
}

impl CallClock<'_> {
    fn check(&self, wait: Duration) -> wasmtime::Result<()> {
        match Instant::now().checked_add(wait) {
            Some(end) if end <= self.deadline => Ok(()),
            _ => Err(WaitPastDeadline.into()),
        }
    }
}

impl monotonic_clock::Host for CallClock<'_> {
    fn now(&mut self) -> wasmtime::Result<WasiInstant> {
        self.inner.now()
    }

    fn resolution(&mut self) -> wasmtime::Result<WasiInstant> {
        self.inner.resolution()
    }

    fn subscribe_instant(&mut self, when: WasiInstant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.inner.now()?;
        self.check(Duration::from_nanos(when.saturating_sub(now)))?;
        self.inner.subscribe_instant(when)
    }

    fn subscribe_duration(
        &mut self,
        duration: WasiDuration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.check(Duration::from_nanos(duration))?;
        self.inner.subscribe_duration(duration)
    }
}
