//! Small pure helpers the stages share: clocks, integer-keyed hash maps, the connection table, a latency histogram.
pub mod clock;
pub mod conn_table;
pub mod histogram;
pub mod int_hash;
