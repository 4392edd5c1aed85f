//! The agent's exporters, each a [`crate::pipeline::Sink`] or fed by one: Prometheus
//! metrics (metrics.rs) served over HTTP (http.rs), the top-K failing clients
//! (top_clients.rs), the log of abnormal handshakes (abnormal_log.rs), the flight
//! recorder (flight.rs), and the agent's own CPU and memory (process.rs). `commands/agent.rs` wires them to the live loop.
//! Like `capture/` and `commands/`, this stage touches tokio (http.rs) and /proc
//! (process.rs, /proc/self only); the rest is pure and unit-tested.
pub mod abnormal_log;
pub mod files;
pub mod flight;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod process;
pub mod otlp;
pub mod top_clients;
pub mod web_config;
#[cfg(test)]
mod tests;

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, Mutex},
};

use anyhow::Result;

use crate::{correlate::Handshake, pipeline::Sink};

/// What the agent does with probes (port checks, health checks) beyond counting them
/// in the metrics (`--probes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentProbes {
    /// Kept out of /top, the flight recorder and the abnormal log.
    #[default]
    Hide,
    /// Treated as any handshake there (a port check is a client_closed/client_reset).
    Show,
}

/// A sink that never sees probes: /top, the flight recorder and the abnormal log
/// under `--probes hide` (probes are counted, never alarmed).
pub struct WithoutProbes(pub Box<dyn Sink>);

impl Sink for WithoutProbes {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        if h.probe().is_some() {
            return Ok(());
        }
        self.0.handshake(h)
    }
    fn rollup(&mut self) -> Result<()> {
        self.0.rollup()
    }
    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
    fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }
}

/// The sink feeding the top-K (shared with the HTTP server, which reads it).
pub struct TopSink(pub Arc<Mutex<top_clients::TopClients>>);

impl Sink for TopSink {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        if let Ok(mut top) = self.0.lock() {
            top.record(h, h.accept_ns + h.total_ns());
        }
        Ok(())
    }
}

/// The sink telling the flight recorder of finished handshakes (the agent's observer
/// feeds it the raw records).
pub struct FlightSink(pub Rc<RefCell<flight::FlightRecorder>>);

impl Sink for FlightSink {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        self.0.borrow_mut().handshake(h);
        Ok(())
    }
}
