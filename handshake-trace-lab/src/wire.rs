//! The MySQL client/server protocol as the lab's server and client speak it, on the
//! tracer's own implementation (`handshake_trace::protocol`: framing, capability
//! flags, error codes, the greeting and login layouts, payload builders). What is
//! the lab's alone: what its server offers and its client sends, SHA-1 and
//! `mysql_native_password` (the tracer never computes them). Pure functions, no I/O
//! except [`random_scramble`]; the socket code lives elsewhere.
//!
//! Every parser works on untrusted bytes and returns `None` instead of panicking:
//! the lab server faces real clients and hand-made test inputs.

use std::io::Read;

use handshake_trace::protocol::builders::{self, GreetingSpec, LoginSpec};
pub use handshake_trace::protocol::errors::{
    ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ER_NOT_SUPPORTED_AUTH_MODE, ER_UNKNOWN_COM_ERROR,
};
/// A payload framed as a complete packet (4-byte header) with sequence id `seq`;
/// payloads of [`MAX_PAYLOAD`] bytes or more become several packets with consecutive ids.
pub use handshake_trace::protocol::frame as packet;
use handshake_trace::protocol::layout::{GreetingLayout, LoginLayout};
use handshake_trace::protocol::{
    client_kind, push_packet, ClientKind, Login, Payload, Text, CLIENT_CONNECT_WITH_DB, CLIENT_FOUND_ROWS,
    CLIENT_LONG_FLAG, CLIENT_LONG_PASSWORD, CLIENT_MULTI_RESULTS, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION, CLIENT_TRANSACTIONS, PROTOCOL_V10, SERVER_STATUS_AUTOCOMMIT,
};
pub use handshake_trace::protocol::{split_packets, MAX_PAYLOAD};

/// Capabilities the lab server advertises. No SSL, CONNECT_ATTRS,
/// DEPRECATE_EOF or COMPRESS, so clients use the plain classic exchange.
/// LONG_PASSWORD doubles as MariaDB's CLIENT_MYSQL bit, which keeps MariaDB
/// clients from reading extended capabilities out of the reserved bytes.
pub const SERVER_CAPABILITIES: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH;

/// Capabilities the lab's scripted client sends (plus CONNECT_WITH_DB when it names a database).
pub const LAB_CLIENT_CAPABILITIES: u32 =
    CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_LONG_PASSWORD | CLIENT_TRANSACTIONS;

/// The only auth plugin the lab implements.
pub const NATIVE_PASSWORD_PLUGIN: &str = "mysql_native_password";
/// utf8_general_ci, the collation id advertised and sent by the lab.
pub const CHARSET_UTF8_GENERAL_CI: u8 = 33;

/// Command byte of COM_QUIT (first payload byte of a command packet).
pub const COM_QUIT: u8 = 0x01;
/// Command byte of COM_INIT_DB (`USE db`).
pub const COM_INIT_DB: u8 = 0x02;
/// Command byte of COM_QUERY; the SQL text follows.
pub const COM_QUERY: u8 = 0x03;
/// Command byte of COM_PING.
pub const COM_PING: u8 = 0x0e;

// ---------------------------------------------------------------- SHA-1

/// SHA-1 (FIPS 180-4), implemented here to keep the dependency list short.
/// Only used for `mysql_native_password`, which is defined in terms of SHA-1.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476, 0xc3d2_e1f0];
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        sha1_block(&mut h, block);
    }
    // Padding: 0x80, zeros, then the bit length big-endian in the last 8 bytes;
    // one extra block when fewer than 9 bytes are left in the current one.
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        sha1_block(&mut h, block);
    }
    let mut out = [0u8; 20];
    for (o, word) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// One 64-byte block of the SHA-1 compression function.
fn sha1_block(h: &mut [u32; 5], block: &[u8]) {
    let mut w = [0u32; 80];
    for (wi, c) in w.iter_mut().zip(block.chunks_exact(4)) {
        *wi = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *h;
    for (i, &wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
            20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
            _ => (b ^ c ^ d, 0xca62_c1d6),
        };
        let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(wi);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
        *hi = hi.wrapping_add(v);
    }
}

// ------------------------------------------------ mysql_native_password

/// The client's auth response for mysql_native_password:
/// SHA1(password) XOR SHA1(scramble ++ SHA1(SHA1(password))). Empty password -> empty response (Vec).
pub fn native_password_response(password: &str, scramble: &[u8; 20]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha1(password.as_bytes());
    let stage2 = sha1(&stage1);
    let mut salted = Vec::with_capacity(40);
    salted.extend_from_slice(scramble);
    salted.extend_from_slice(&stage2);
    let mask = sha1(&salted);
    stage1.iter().zip(mask).map(|(s, m)| s ^ m).collect()
}

/// Server-side check of a response against the plain password (the lab knows it). Empty password accepts only an empty response.
/// The comparison does not stop at the first differing byte, as a real server's would not.
pub fn native_password_check(password: &str, scramble: &[u8; 20], response: &[u8]) -> bool {
    let expected = native_password_response(password, scramble);
    expected.len() == response.len() && expected.iter().zip(response).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 20 scramble bytes from /dev/urandom (std::fs::File), each mapped into 0x21..=0x7e (printable, never NUL, as servers do).
/// NUL must be avoided because the greeting NUL-terminates scramble part 2.
pub fn random_scramble() -> std::io::Result<[u8; 20]> {
    let mut raw = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    // 94 printable values; the modulo bias is irrelevant for a teaching lab.
    Ok(raw.map(|b| 0x21 + b % 94))
}

// ------------------------------------------------------------- greeting

/// What the lab server puts in its greeting.
#[derive(Debug, Clone, Copy)]
pub struct ServerHello<'a> {
    /// Server version string, e.g. "8.0.0-handshake-trace-lab"; cut at an embedded NUL.
    pub version: &'a str,
    /// Connection (thread) id the client will see.
    pub connection_id: u32,
    /// The 20-byte challenge the client must hash the password with.
    pub scramble: &'a [u8; 20],
}

/// A complete packet (4-byte header, seq 0): HandshakeV10 with [`SERVER_CAPABILITIES`],
/// charset 33 (utf8_general_ci), status autocommit, the scramble in its two parts
/// (auth-plugin-data length 21, 10 reserved zero bytes) and "mysql_native_password".
pub fn greeting_packet(h: &ServerHello) -> Vec<u8> {
    let payload = builders::greeting(&GreetingSpec {
        server_version: h.version,
        connection_id: h.connection_id,
        scramble: h.scramble,
        capabilities: SERVER_CAPABILITIES,
        charset: CHARSET_UTF8_GENERAL_CI,
        status: SERVER_STATUS_AUTOCOMMIT,
        extended_capabilities: 0,
        auth_plugin: NATIVE_PASSWORD_PLUGIN,
    });
    packet(0, &payload)
}

/// Client side, for the lab's scripted clients (a real protocol client, so the lab can make one that stalls):
/// the scramble from a greeting payload (parts 1 and 2 joined; None if malformed),
/// including an ERR packet in place of a greeting, or a server without SECURE_CONNECTION.
pub fn greeting_scramble(payload: &[u8]) -> Option<[u8; 20]> {
    let g = GreetingLayout::of(Payload::whole(payload));
    if g.protocol != Some(PROTOCOL_V10) {
        return None;
    }
    // Part 2 is there only when everything before it is, with SECURE_CONNECTION.
    let part2 = g.scramble2?.of(payload).get(..12)?;
    // A declared length below 21 would mean a scramble shorter than 20 bytes.
    let data_len = g.auth_data_len?;
    if g.capabilities & CLIENT_PLUGIN_AUTH != 0 && data_len != 0 && data_len < 21 {
        return None;
    }
    let mut scramble = [0u8; 20];
    scramble[..8].copy_from_slice(g.scramble1.of(payload).get(..8)?);
    scramble[8..].copy_from_slice(part2);
    Some(scramble)
}

// ---------------------------------------------------------------- login

/// A HandshakeResponse41 as the server needs it: the login as the tracer decodes it
/// (user, database, plugin; empty names are None here: the client means none, or the
/// server's default), and the auth response's bytes, kept only to verify them.
/// `Debug` shows only their length, so logging a request cannot leak them.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub login: Login,
    /// Raw auth response (20 bytes for a native password, empty for no password).
    pub auth_response: Vec<u8>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("login", &self.login)
            .field("auth_response", &format_args!("<{} bytes>", self.auth_response.len()))
            .finish()
    }
}

/// Parse a HandshakeResponse41 payload (without the 4-byte header) with the tracer's
/// login layout, strictly: None for anything malformed (too short, no PROTOCOL_41, an
/// auth response longer than the packet, a missing NUL) — the server then answers
/// ER_HANDSHAKE_ERROR. Connection attributes are not checked. Never panics.
///
/// One leniency, as MySQL's own server has: with PLUGIN_AUTH, a packet that
/// ends right before the plugin name parses with `auth_plugin: None`; a name
/// that starts but has no NUL is still malformed.
pub fn parse_login(payload: &[u8]) -> Option<LoginRequest> {
    let p = Payload::whole(payload);
    let l = LoginLayout::as_server_reads(p, true);
    let caps = l.capabilities;
    let whole = |t: Option<Text>| t.is_some_and(|t| t.terminated);
    let malformed = caps & CLIENT_PROTOCOL_41 == 0
        || !whole(l.user)
        || !l.auth_response.is_some_and(|a| a.whole)
        || (caps & CLIENT_CONNECT_WITH_DB != 0 && !whole(l.database))
        // Absent (nothing left) is fine; started is not.
        || (l.auth_plugin.is_some() && !whole(l.auth_plugin));
    if malformed {
        return None;
    }
    let mut login = Login::from_layout(&l, p);
    login.database = login.database.filter(|d| !d.is_empty());
    login.auth_plugin = login.auth_plugin.filter(|d| !d.is_empty());
    Some(LoginRequest { login, auth_response: l.auth_response?.span.of(payload).to_vec() })
}

/// True if the payload is an SSLRequest (a login's fixed part alone, with CLIENT_SSL),
/// by the tracer's rule — the lab refuses TLS.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    matches!(client_kind(Payload::whole(payload), true), ClientKind::SslRequest { .. })
}

/// Client side: a HandshakeResponse41 packet (header included, seq 1) with [`LAB_CLIENT_CAPABILITIES`]
/// (| CONNECT_WITH_DB when database is Some), max packet 16 MiB, charset 33, user, 1-byte-length
/// native password response, database, "mysql_native_password".
pub fn login_packet(user: &str, password: &str, scramble: &[u8; 20], database: Option<&str>) -> Vec<u8> {
    let mut caps = LAB_CLIENT_CAPABILITIES;
    if database.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    // Always 0 or 20 bytes, so the 1-byte length cannot overflow.
    let auth = native_password_response(password, scramble);
    let payload = builders::login(&LoginSpec {
        capabilities: caps,
        max_packet: 16 << 20,
        charset: CHARSET_UTF8_GENERAL_CI,
        extended_capabilities: 0,
        user,
        auth_response: &auth,
        database: database.unwrap_or(""),
        auth_plugin: NATIVE_PASSWORD_PLUGIN,
        attrs: &[],
    });
    packet(1, &payload)
}

// -------------------------------------------------------- server replies

/// OK packet: 0x00, affected 0, last id 0, status 0x0002, warnings 0.
pub fn ok_packet(seq: u8) -> Vec<u8> {
    packet(seq, &builders::ok(SERVER_STATUS_AUTOCOMMIT))
}

/// ERR packet: 0xff, code LE, '#', 5-char state, message.
/// A `sqlstate` that is not exactly 5 ASCII characters is replaced by the generic "HY000".
pub fn err_packet(seq: u8, code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    packet(seq, &builders::err(code, sqlstate, message))
}

/// A text result set of one column and some rows, as consecutive packets starting at
/// `first_seq`: column count, one VAR_STRING ColumnDefinition41 named `column`, EOF,
/// each row (NULL for None), EOF (no DEPRECATE_EOF, so result sets still use them).
pub fn result_set(first_seq: u8, column: &str, rows: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = first_seq;
    let eof = builders::eof(SERVER_STATUS_AUTOCOMMIT);
    push_packet(&mut out, &mut seq, &[1]);
    push_packet(&mut out, &mut seq, &builders::column_definition(column, CHARSET_UTF8_GENERAL_CI));
    push_packet(&mut out, &mut seq, &eof);
    for row in rows {
        push_packet(&mut out, &mut seq, &builders::text_row(&[row.as_deref()]));
    }
    push_packet(&mut out, &mut seq, &eof);
    out
}

#[cfg(test)]
mod tests;
