//! Small pure helpers the stages share: clocks, integer-keyed hash maps, the connection table.
pub mod clock;
pub mod conn_table;
pub mod int_hash;
