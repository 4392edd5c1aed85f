//! Every word the tool prints: handshakes as a line, a timeline or JSON, and the summary.
pub mod handshake;
pub mod histogram;
