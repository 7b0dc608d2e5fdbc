//! Where clef's parallel work runs: rayon's global pool.
//!
//! [`NativeMlp`](crate::NativeMlp) and [`Optimizer::step`](crate::Optimizer::step) cut their
//! work into two tasks with `rayon::join`. Called from a thread outside the pool, every such
//! call injects a job into the pool and blocks until a worker has run it, which costs tens of
//! microseconds on a virtual machine; called from a pool thread, a join is a cheap work-stealing
//! push. [`install`] runs a whole loop (a trial, a benchmark) on a pool thread so that only the
//! cheap kind happens.

/// Runs `f` on a thread of rayon's current pool: on the calling thread if it already is one (or
/// if the pool has a single thread), else on a worker, the caller blocking until it returns.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        f()
    } else {
        rayon::join(f, || ()).0
    }
}
