//! The commands: each wires capture, pipeline and output together for one use.
pub mod agent;
pub mod analyze;
pub mod doctor;
pub mod options;
pub mod server_facts;
pub mod watch;

pub use options::WatchOptions;
