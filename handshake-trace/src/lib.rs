//! handshake-trace: what happened during each MySQL/MariaDB connection handshake,
//! traced from kernel tracepoints on a production server.
//!
//! Data flows one way through the stages, each a folder:
//!
//! ```text
//! capture ──records──▶ events ──typed events──▶ pipeline ─▶ correlate ─▶ verdict ─▶ output
//! (aya, /proc,          (decode)                 (one per      (connection   (enums,    (text, JSON,
//!  tracefs)                                       trace)        table, state  evidence)  summary)
//!                                                                machine) ▲
//!                                                  protocol (MySQL wire) ─┘
//! recording: trace files (redacted) written beside the pipeline, replayed into it.
//! export: the agent's sinks (Prometheus metrics over HTTP, top-K clients, abnormal log).
//! commands: watch, record, analyze, doctor, agent — each wires the stages together.
//! ```
//!
//! Pure (no aya, no tokio, no /proc): `events`, `protocol`, `correlate`, `verdict`,
//! `output`, `pipeline`, `recording`, `support`.
pub mod capture;
pub mod commands;
pub mod config;
pub mod correlate;
pub mod events;
pub mod export;
pub mod output;
pub mod pipeline;
pub mod protocol;
pub mod recording;
pub mod support;
pub mod verdict;

#[cfg(test)]
mod testing;
