//! The signals a run answers: SIGINT and SIGTERM stop it cleanly (readers
//! drained, probes detached, journeys flushed, summary written), SIGHUP is
//! logged and ignored (there is no configuration to reload, and a closed
//! terminal must not cost the summary and the OTLP flush).
//!
//! [`Signals::install`] comes first in a run, before any plugin is loaded or
//! probe attached: from then on none of the three can kill the agent, and a
//! stop requested while it is still attaching is honoured as soon as
//! attaching is done, before the ready file is written.

use std::fmt;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Why a run stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        })
    }
}

/// The handlers of SIGINT, SIGTERM and SIGHUP, installed for as long as this lives.
#[derive(Debug)]
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime with its I/O driver.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGINT or SIGTERM; a SIGHUP meanwhile is logged. Cancel-safe.
    pub async fn stop(&mut self) -> Stop {
        loop {
            tokio::select! {
                Some(()) = self.interrupt.recv() => return Stop::Interrupt,
                Some(()) = self.terminate.recv() => return Stop::Terminate,
                Some(()) = self.hangup.recv() => {
                    tracing::info!("SIGHUP ignored: nothing to reload (SIGINT or SIGTERM stop the agent)");
                }
                // Every stream ended: the runtime is shutting down; nothing more will come.
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// A stop that arrived while the thread was busy (loading, attaching),
    /// without waiting for one. Yields once so that the runtime reads the
    /// signals delivered meanwhile.
    pub async fn pending(&mut self) -> Option<Stop> {
        tokio::select! {
            biased;
            stop = self.stop() => Some(stop),
            () = tokio::task::yield_now() => None,
        }
    }
}
