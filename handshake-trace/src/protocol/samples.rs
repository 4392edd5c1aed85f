//! Reference packets for the tests of the decoder and the redactor: what MariaDB
//! 10.11 and libmariadb send, with secrets that are easy to look for.
use super::builders::{self, GreetingSpec, LoginSpec};
use super::*;

pub const SCRAMBLE1: [u8; 8] = *b"q;V&1Z^x";
pub const SCRAMBLE2: [u8; 12] = *b"7Lk]Pw@3e|Nr";
pub const AUTH_RESPONSE: [u8; 20] = [
    0x9c, 0x1f, 0x77, 0xe2, 0x05, 0xab, 0x3d, 0x61, 0xf0, 0x12, 0x8e, 0x4a, 0xd9, 0x33, 0xc7, 0x70, 0x2b, 0xee, 0x58,
    0x91,
];

/// The capabilities the `mysql` client (libmariadb) logs in with.
pub const LOGIN_CAPS: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_SESSION_TRACK;

pub const ATTRS: [(&str, &str); 7] = [
    ("_client_name", "libmariadb"),
    ("_client_version", "3.3.8"),
    ("_os", "Linux"),
    ("_pid", "48211"),
    ("_platform", "x86_64"),
    ("_server_host", "localhost"),
    ("program_name", "mysql"),
];

/// A MariaDB 10.11.14 (Debian 12) greeting, connection id 31: caps 0xf7fe lower (no
/// CLIENT_MYSQL, no SSL) and 0x81ff upper, utf8mb4_general_ci, autocommit, extended caps 0x1d.
pub fn mariadb_greeting() -> Vec<u8> {
    let scramble: [u8; 20] = [SCRAMBLE1.as_slice(), SCRAMBLE2.as_slice()].concat().try_into().unwrap();
    builders::greeting(&GreetingSpec {
        server_version: "5.5.5-10.11.14-MariaDB-0+deb12u2",
        connection_id: 31,
        scramble: &scramble,
        capabilities: 0x81ff_f7fe,
        charset: 45,
        status: SERVER_STATUS_AUTOCOMMIT,
        extended_capabilities: 0x1d,
        auth_plugin: "mysql_native_password",
    })
}

/// HandshakeResponse41 as the `mysql` client (libmariadb) sends it: user "lab",
/// database "shop", mysql_native_password, [`ATTRS`] and, when `padding` > 0, one
/// more attribute of that many bytes.
pub fn mariadb_login(caps: u32, auth: &[u8], padding: usize) -> Vec<u8> {
    let pad = "x".repeat(padding);
    let mut attrs = ATTRS.to_vec();
    if padding > 0 {
        attrs.push(("padding", &pad));
    }
    builders::login(&LoginSpec {
        capabilities: caps,
        max_packet: 0x0100_0000,
        charset: 45,
        extended_capabilities: 0x1c,
        user: "lab",
        auth_response: auth,
        database: "shop",
        auth_plugin: "mysql_native_password",
        attrs: &attrs,
    })
}

/// The SSLRequest libmariadb sends before its login.
pub fn mariadb_ssl_request() -> Vec<u8> {
    builders::ssl_request(LOGIN_CAPS | CLIENT_SSL, 0x0100_0000, 45, 0x1c)
}

/// The OK that ends a successful login.
pub fn ok_payload() -> Vec<u8> {
    builders::ok(SERVER_STATUS_AUTOCOMMIT)
}

/// A packet whose capture stopped after `keep` payload bytes.
pub fn cut_pkt(seq: u8, payload: &[u8], keep: usize) -> Packet {
    Packet { seq, len: payload.len() as u32, payload: payload[..keep].to_vec(), truncated: keep < payload.len() }
}

/// A whole packet.
pub fn pkt(seq: u8, payload: &[u8]) -> Packet {
    cut_pkt(seq, payload, payload.len())
}

/// Tiny deterministic PRNG for the fuzz tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Below `n` (0 for 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
