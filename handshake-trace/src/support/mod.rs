//! Small pure helpers the stages share: clocks and integer-keyed hash maps.
pub mod clock;
pub mod int_hash;
