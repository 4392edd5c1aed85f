//! Every word the tool prints: handshakes as a line, a timeline or JSON, the
//! reasons for verdicts, and the summary. The stages before this one hand over data.
pub mod addr;
pub mod blame;
pub mod brief;
pub mod columns;
pub mod json;
pub mod names;
pub mod notice;
pub mod printer;
pub mod reason;
pub mod records;
pub mod step;
pub mod summary;
pub mod text;

pub use json::handshake_json;
pub use step::{describe_step, write_step};
pub use text::{handshake_line, handshake_timeline};
