//! handshake-trace: what happened during each MySQL/MariaDB connection handshake,
//! traced from kernel tracepoints on a production server.
//!
//! Pure modules (no aya, no tokio): `events`, `render`, `tracefs`, `targets`,
//! `clock`, `privileges`. Kernel plumbing: `probes`. Orchestration: `watch`,
//! `doctor`, `lab`.
pub mod analyze;
pub mod clock;
pub mod correlate;
pub mod doctor;
pub mod events;
pub mod int_hash;
pub mod lab;
pub mod mysql;
pub mod privileges;
pub mod probes;
pub mod record;
pub mod redact;
pub mod render_handshake;
pub mod session;
pub mod stats;
pub mod targets;
pub mod tracefs;
pub mod watch;
