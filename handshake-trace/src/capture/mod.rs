//! The kernel side seen from userspace: loading and attaching the programs (aya),
//! the tracepoint layouts (tracefs), the processes to trace (/proc) and the
//! privileges tracing needs.
pub mod btf;
pub mod cgroup;
pub mod privileges;
pub mod offsets;
pub mod probes;
pub mod server_config;
pub mod set_state;
pub mod socket_io;
pub mod targets;
pub mod tracefs;
pub mod tracked;
pub mod unix;
