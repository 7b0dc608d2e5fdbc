//! Forwarding the plugin's `tracing` events (and caught panics) to the host's log.
//!
//! A plugin library links its own copy of `tracing`, whose global dispatcher is not the host's.
//! At the first `create` the SDK installs, in that copy, a subscriber that formats each event
//! (`"<plugin>: <message> key=value ..."`) and calls the host's `log` service: with the running
//! hook's context on the hook's thread, with a null context elsewhere (e.g. on the plugin's
//! own worker threads).
//!
//! The maximum forwarded level is `debug`; set `CLEF_PLUGIN_LOG` to `off`, `error`, `warn`,
//! `info`, `debug` or `trace` to change it. (The host applies its own filter on top.)

use std::cell::Cell;
use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};

use clef_abi::{
    ClefCtx, ClefHost, CLEF_LOG_DEBUG, CLEF_LOG_ERROR, CLEF_LOG_INFO, CLEF_LOG_TRACE, CLEF_LOG_WARN,
};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The host table and plugin name given to the first `create`; the host table outlives every
/// instance, and `log` accepts a null context.
struct Global {
    host: *const ClefHost,
    name: &'static str,
}

// SAFETY: the host table is immutable and its `log` service may be called from any thread with
// a null context; the pointer is only read.
unsafe impl Send for Global {}
// SAFETY: as above.
unsafe impl Sync for Global {}

static GLOBAL: OnceLock<Global> = OnceLock::new();

/// The plugin call running on this thread, if any.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    pub(crate) name: &'static str,
    pub(crate) host: *const ClefHost,
    pub(crate) ctx: *mut ClefCtx,
}

thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
}

/// Marks the thread as running a plugin call (for log routing and the quiet panic hook);
/// restores the previous state on drop, so nested calls are fine.
pub(crate) struct CallGuard {
    previous: Option<Current>,
}

impl CallGuard {
    pub(crate) fn enter(current: Current) -> Self {
        let previous = CURRENT.with(|c| c.replace(Some(current)));
        Self { previous }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Whether this thread is inside a plugin call.
pub(crate) fn in_plugin_call() -> bool {
    CURRENT.try_with(|c| c.get().is_some()).unwrap_or(false)
}

/// Remembers the host table and plugin name (first call wins) and installs the forwarding
/// subscriber (once).
pub(crate) fn init(host: *const ClefHost, name: &'static str) {
    let _ = GLOBAL.set(Global { host, name });
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let max = std::env::var("CLEF_PLUGIN_LOG")
            .ok()
            .and_then(|v| v.trim().parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::DEBUG);
        // Fails if the plugin (or, when linked as an rlib, the host) already set one: keep it.
        let _ = tracing::subscriber::set_global_default(HostSubscriber {
            max,
            next_span: AtomicU64::new(1),
        });
    });
}

/// Sends `"<plugin>: <message>"` to the host's log, with the current hook's context if this
/// thread is in a plugin call, else with a null context. Dropped if no host is known yet.
pub(crate) fn forward(level: i32, message: &str) {
    let (host, ctx, name) = match CURRENT.try_with(Cell::get).ok().flatten() {
        Some(current) => (current.host, current.ctx, current.name),
        None => match GLOBAL.get() {
            Some(global) => (global.host, ptr::null_mut(), global.name),
            None => return,
        },
    };
    if host.is_null() {
        return;
    }
    let line = format!("{name}: {message}").replace('\0', "\\0");
    let Ok(line) = CString::new(line) else {
        return;
    };
    // SAFETY: `host` is the table given to `create`, valid for the life of the plugin's
    // instances (and the host never unloads the library); `ctx` is either the running hook's
    // context on its own thread or null, which `log` accepts; `line` is NUL-terminated.
    unsafe { ((*host).log)(ctx, level, line.as_ptr()) }
}

fn level_code(level: &Level) -> i32 {
    match *level {
        Level::ERROR => CLEF_LOG_ERROR,
        Level::WARN => CLEF_LOG_WARN,
        Level::INFO => CLEF_LOG_INFO,
        Level::DEBUG => CLEF_LOG_DEBUG,
        Level::TRACE => CLEF_LOG_TRACE,
    }
}

/// A minimal `tracing` subscriber: events become host log lines; spans are ignored.
struct HostSubscriber {
    max: LevelFilter,
    next_span: AtomicU64,
}

impl Subscriber for HostSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = EventLine::default();
        event.record(&mut line);
        forward(level_code(event.metadata().level()), &line.finish());
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Formats an event as `message key=value key2=value2`.
#[derive(Default)]
struct EventLine {
    message: String,
    fields: String,
}

impl EventLine {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }

    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={}", field.name(), value);
        }
    }
}

impl Visit for EventLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}
