//! Small pure helpers the stages share: clocks, integer-keyed hash maps, the connection table, a latency histogram,
//! and the escaping of wire and /proc strings for terminals.
pub mod clock;
pub mod conn_table;
pub mod escape;
pub mod histogram;
pub mod int_hash;
pub mod pipe;
pub mod terminal;
