//! The teaching lab for `connect_timeout`: a MySQL-protocol server that waits for the
//! login the old way (alarm + EINTR) or the modern way (poll), a scripted client that
//! can be late or frozen, a slow DNS server, a throwaway MariaDB, and the scenarios
//! that run them traced live and explain what happened.
pub mod cgroup;
pub mod client;
pub mod dns;
pub mod mariadb;
pub mod scenarios;
pub mod server;
pub mod wire;

pub use scenarios::{list, run, LabOptions, ServerKind, CONNECT_TIMEOUT_S, SCENARIOS};
