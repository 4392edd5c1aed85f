//! The MySQL client/server protocol as far as the lab needs it: packet
//! building and parsing, SHA-1 and `mysql_native_password`. Pure functions,
//! no I/O except [`random_scramble`]; the socket code lives elsewhere.
//!
//! Every parser works on untrusted bytes and returns `None`/`Err` instead of
//! panicking: the lab server faces real clients and hand-made test inputs.

use std::io::Read;

/// Client/server capability flags used here (values from the MySQL protocol docs).
pub const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
/// Return "found" rather than "affected" rows.
pub const CLIENT_FOUND_ROWS: u32 = 0x0000_0002;
/// Longer column flags in ColumnDefinition.
pub const CLIENT_LONG_FLAG: u32 = 0x0000_0004;
/// A database name follows the auth response in the login.
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
/// The 4.1 protocol; the lab speaks nothing older.
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
/// TLS: set in an SSLRequest, never advertised by the lab.
pub const CLIENT_SSL: u32 = 0x0000_0800;
/// Status flags in OK/EOF packets.
pub const CLIENT_TRANSACTIONS: u32 = 0x0000_2000;
/// Length-prefixed (1 byte) auth response.
pub const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
/// The client handles multiple result sets.
pub const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
/// Auth plugin names in greeting and login.
pub const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
/// Connection attributes at the end of the login.
pub const CLIENT_CONNECT_ATTRS: u32 = 0x0010_0000;
/// Length-encoded-integer-prefixed auth response.
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;

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
pub const LAB_CLIENT_CAPABILITIES: u32 = CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_LONG_PASSWORD
    | CLIENT_TRANSACTIONS;

/// The only auth plugin the lab implements.
pub const NATIVE_PASSWORD_PLUGIN: &str = "mysql_native_password";
/// utf8_general_ci, the collation id advertised and sent by the lab.
pub const CHARSET_UTF8_GENERAL_CI: u8 = 33;
/// SERVER_STATUS_AUTOCOMMIT, the only status bit the lab ever reports.
pub const STATUS_AUTOCOMMIT: u16 = 0x0002;
/// Largest payload of one packet; longer payloads continue in the next packet.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;

/// Command byte of COM_QUIT (first payload byte of a command packet).
pub const COM_QUIT: u8 = 0x01;
/// Command byte of COM_INIT_DB (`USE db`).
pub const COM_INIT_DB: u8 = 0x02;
/// Command byte of COM_QUERY; the SQL text follows.
pub const COM_QUERY: u8 = 0x03;
/// Command byte of COM_PING.
pub const COM_PING: u8 = 0x0e;

/// ER_HANDSHAKE_ERROR ("Bad handshake"), SQLSTATE 08S01.
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
/// ER_ACCESS_DENIED_ERROR ("Access denied for user ..."), SQLSTATE 28000.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// ER_NOT_SUPPORTED_AUTH_MODE, for clients insisting on another plugin; SQLSTATE 08004.
pub const ER_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
/// ER_UNKNOWN_COM_ERROR, for commands the lab does not implement; SQLSTATE 08S01.
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;

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
        let t = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(wi);
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
    expected.len() == response.len()
        && expected.iter().zip(response).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 20 scramble bytes from /dev/urandom (std::fs::File), each mapped into 0x21..=0x7e (printable, never NUL, as servers do).
/// NUL must be avoided because the greeting NUL-terminates scramble part 2.
pub fn random_scramble() -> std::io::Result<[u8; 20]> {
    let mut raw = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    // 94 printable values; the modulo bias is irrelevant for a teaching lab.
    Ok(raw.map(|b| 0x21 + b % 94))
}

// ------------------------------------------------------- byte building

/// Append one packet (or, past [`MAX_PAYLOAD`], the chain of packets the
/// protocol requires) to `out`, advancing `seq` once per physical packet.
fn push_packet(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(*seq);
        *seq = seq.wrapping_add(1);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        // A payload of exactly k*MAX_PAYLOAD ends with an empty packet.
        if n < MAX_PAYLOAD {
            break;
        }
    }
}

/// Frame a payload as a complete packet (4-byte header) with sequence id `seq`;
/// payloads of [`MAX_PAYLOAD`] bytes or more become several packets with consecutive ids.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let mut seq = seq;
    push_packet(&mut out, &mut seq, payload);
    out
}

/// Append a length-encoded integer.
fn push_lenenc_int(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(n as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Append a length-encoded string.
fn push_lenenc_bytes(out: &mut Vec<u8>, s: &[u8]) {
    push_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Append a NUL-terminated string, cut at an embedded NUL so the field stays parseable.
fn push_cstr(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.extend_from_slice(&bytes[..end]);
    out.push(0);
}

// --------------------------------------------------------- byte reading

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<u32> {
        self.take(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Bytes up to a NUL, consuming the NUL; None if there is none.
    fn cstr(&mut self) -> Option<&'a [u8]> {
        let nul = self.buf.iter().position(|&b| b == 0)?;
        let s = self.take(nul)?;
        self.take(1)?;
        Some(s)
    }

    /// A length-encoded integer; 0xfb (NULL) and 0xff are not integers.
    fn lenenc_int(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16().map(u64::from),
            0xfd => self.u24().map(u64::from),
            0xfe => self.take(8).map(|b| {
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                u64::from_le_bytes(le)
            }),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Client-chosen names are decoded leniently: a non-UTF-8 user name should
/// reach the access check (and be refused there), not look like a bad packet.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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

/// A complete packet (4-byte header, seq 0): HandshakeV10 with protocol 10, the version NUL-terminated, connection id, scramble part 1 (8 bytes) + filler 0, capability lower 16 bits, charset 33 (utf8_general_ci), status 0x0002 (autocommit), capability upper 16 bits, auth-plugin-data length 21, 10 reserved zero bytes, scramble part 2 (12 bytes) + NUL, "mysql_native_password" NUL.
pub fn greeting_packet(h: &ServerHello) -> Vec<u8> {
    let mut p = Vec::with_capacity(96);
    p.push(10);
    push_cstr(&mut p, h.version);
    p.extend_from_slice(&h.connection_id.to_le_bytes());
    p.extend_from_slice(&h.scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(SERVER_CAPABILITIES as u16).to_le_bytes());
    p.push(CHARSET_UTF8_GENERAL_CI);
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&((SERVER_CAPABILITIES >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&h.scramble[8..]);
    p.push(0);
    push_cstr(&mut p, NATIVE_PASSWORD_PLUGIN);
    packet(0, &p)
}

/// Client side, for the lab's scripted clients (a real protocol client, so the lab can make one that stalls):
/// the scramble from a greeting payload (parts 1 and 2 joined; None if malformed),
/// including an ERR packet in place of a greeting, or a server without SECURE_CONNECTION.
pub fn greeting_scramble(payload: &[u8]) -> Option<[u8; 20]> {
    let mut r = Reader::new(payload);
    if r.u8()? != 10 {
        return None;
    }
    r.cstr()?; // version
    r.u32()?; // connection id
    let part1 = r.take(8)?;
    r.u8()?; // filler
    let cap_lo = r.u16()?;
    r.u8()?; // charset
    r.u16()?; // status
    let cap_hi = r.u16()?;
    let caps = u32::from(cap_lo) | (u32::from(cap_hi) << 16);
    let data_len = r.u8()?;
    r.take(10)?; // reserved
    if caps & CLIENT_SECURE_CONNECTION == 0 {
        return None;
    }
    // A declared length below 21 would mean a scramble shorter than 20 bytes.
    if caps & CLIENT_PLUGIN_AUTH != 0 && data_len != 0 && data_len < 21 {
        return None;
    }
    let part2 = r.take(12)?;
    let mut scramble = [0u8; 20];
    scramble[..8].copy_from_slice(part1);
    scramble[8..].copy_from_slice(part2);
    Some(scramble)
}

// ---------------------------------------------------------------- login

/// What the server needs from a HandshakeResponse41 (the auth response is kept only to verify it; never print it).
/// `Debug` shows only the auth response's length, so logging a request cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// The client's capability flags as sent.
    pub capabilities: u32,
    /// User name (lossy UTF-8).
    pub user: String,
    /// Raw auth response (20 bytes for a native password, empty for no password).
    pub auth_response: Vec<u8>,
    /// Initial database; None when not requested or empty.
    pub database: Option<String>,
    /// Auth plugin the client used; None when absent or empty (the client means the server default).
    pub auth_plugin: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("capabilities", &format_args!("{:#010x}", self.capabilities))
            .field("user", &self.user)
            .field("auth_response", &format_args!("<{} bytes>", self.auth_response.len()))
            .field("database", &self.database)
            .field("auth_plugin", &self.auth_plugin)
            .finish()
    }
}

/// Parse a HandshakeResponse41 payload (without the 4-byte header). Handle the auth response encodings: PLUGIN_AUTH_LENENC_CLIENT_DATA (lenenc length), SECURE_CONNECTION (1-byte length), else NUL-terminated; then database if CONNECT_WITH_DB; then plugin name if PLUGIN_AUTH; ignore connect attributes. Return None for anything malformed (too short, no PROTOCOL_41, missing NULs) — the server then answers ER_HANDSHAKE_ERROR. Must never panic on any input.
///
/// One leniency, as MySQL's own server has: with PLUGIN_AUTH, a packet that
/// ends right before the plugin name parses with `auth_plugin: None`; a name
/// that starts but has no NUL is still malformed.
pub fn parse_login(payload: &[u8]) -> Option<LoginRequest> {
    let mut r = Reader::new(payload);
    let capabilities = r.u32()?;
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        return None;
    }
    r.u32()?; // max packet size
    r.u8()?; // charset
    r.take(23)?; // filler (MariaDB keeps extended capabilities in its tail)
    let user = lossy(r.cstr()?);
    let auth_response = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let len = usize::try_from(r.lenenc_int()?).ok()?;
        r.take(len)?
    } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let len = r.u8()?;
        r.take(usize::from(len))?
    } else {
        r.cstr()?
    }
    .to_vec();
    let database = if capabilities & CLIENT_CONNECT_WITH_DB != 0 {
        Some(r.cstr()?).filter(|d| !d.is_empty()).map(lossy)
    } else {
        None
    };
    let auth_plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
        Some(r.cstr()?).filter(|p| !p.is_empty()).map(lossy)
    } else {
        None
    };
    // Anything left (connection attributes) is deliberately ignored.
    Some(LoginRequest { capabilities, user, auth_response, database, auth_plugin })
}

/// True if the payload is an SSLRequest (32 bytes with CLIENT_SSL) — the lab refuses TLS.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & CLIENT_SSL != 0
}

/// Client side: a HandshakeResponse41 packet (header included, seq 1) with PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | LONG_PASSWORD | TRANSACTIONS (| CONNECT_WITH_DB when database is Some), max packet 16 MiB, charset 33, user, 1-byte-length native password response, database, "mysql_native_password".
pub fn login_packet(user: &str, password: &str, scramble: &[u8; 20], database: Option<&str>) -> Vec<u8> {
    let mut caps = LAB_CLIENT_CAPABILITIES;
    if database.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    let auth = native_password_response(password, scramble);
    let mut p = Vec::with_capacity(96);
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(CHARSET_UTF8_GENERAL_CI);
    p.extend_from_slice(&[0; 23]);
    push_cstr(&mut p, user);
    // Always 0 or 20 bytes, so the 1-byte length cannot overflow.
    p.push(auth.len() as u8);
    p.extend_from_slice(&auth);
    if let Some(db) = database {
        push_cstr(&mut p, db);
    }
    push_cstr(&mut p, NATIVE_PASSWORD_PLUGIN);
    packet(1, &p)
}

// -------------------------------------------------------- server replies

/// OK packet: 0x00, affected 0, last id 0, status 0x0002, warnings 0.
pub fn ok_packet(seq: u8) -> Vec<u8> {
    let mut p = vec![0x00, 0, 0];
    p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    packet(seq, &p)
}

/// ERR packet: 0xff, code LE, '#', 5-char state, message.
/// A `sqlstate` that is not exactly 5 ASCII characters is replaced by the generic "HY000".
pub fn err_packet(seq: u8, code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let state = if sqlstate.len() == 5 && sqlstate.is_ascii() { sqlstate } else { "HY000" };
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(0xff);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    packet(seq, &p)
}

/// EOF payload (no DEPRECATE_EOF, so result sets still use these): 0xfe, warnings 0, status 0x0002.
fn eof_payload() -> [u8; 5] {
    let s = STATUS_AUTOCOMMIT.to_le_bytes();
    [0xfe, 0, 0, s[0], s[1]]
}

/// A text result set of one column and some rows, as consecutive packets starting at `first_seq`: column count (lenenc), one ColumnDefinition41 (catalog "def", schema "", table "", org_table "", name = column, org_name = column, 0x0c, charset 33, length 255, type 0xfd VAR_STRING, flags 0, decimals 0, 2 filler), EOF, each row (lenenc string, or 0xfb for NULL), EOF. EOF = 0xfe, warnings 0, status 0x0002.
pub fn result_set(first_seq: u8, column: &str, rows: &[Option<String>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = first_seq;

    let mut count = Vec::new();
    push_lenenc_int(&mut count, 1);
    push_packet(&mut out, &mut seq, &count);

    let mut def = Vec::with_capacity(32 + 2 * column.len());
    for s in ["def", "", "", "", column, column] {
        push_lenenc_bytes(&mut def, s.as_bytes());
    }
    def.push(0x0c); // length of the fixed-size fields below
    def.extend_from_slice(&u16::from(CHARSET_UTF8_GENERAL_CI).to_le_bytes());
    def.extend_from_slice(&255u32.to_le_bytes());
    def.push(0xfd); // MYSQL_TYPE_VAR_STRING
    def.extend_from_slice(&0u16.to_le_bytes()); // flags
    def.push(0); // decimals
    def.extend_from_slice(&[0, 0]);
    push_packet(&mut out, &mut seq, &def);

    push_packet(&mut out, &mut seq, &eof_payload());
    for row in rows {
        let mut p = Vec::new();
        match row {
            Some(v) => push_lenenc_bytes(&mut p, v.as_bytes()),
            None => p.push(0xfb),
        }
        push_packet(&mut out, &mut seq, &p);
    }
    push_packet(&mut out, &mut seq, &eof_payload());
    out
}

/// Split a buffer into (seq, payload) packets; Err if a packet is incomplete. Helper for tests and the lab client.
/// Physical packets are returned as they are; a payload split at [`MAX_PAYLOAD`] is not rejoined.
pub fn split_packets(buf: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, &'static str> {
    let mut r = Reader::new(buf);
    let mut packets = Vec::new();
    while !r.is_empty() {
        let len = r.u24().ok_or("incomplete packet header")?;
        let seq = r.u8().ok_or("incomplete packet header")?;
        let payload = r.take(len as usize).ok_or("incomplete packet payload")?;
        packets.push((seq, payload.to_vec()));
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Tiny deterministic PRNG for the fuzz tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 24) as u8
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const SCRAMBLE: [u8; 20] = *b"abcdefgh!#$%&()*+,-.";

    /// Payload (header stripped) of a single packet.
    fn only_payload(pkt: &[u8]) -> Vec<u8> {
        let mut p = split_packets(pkt).unwrap();
        assert_eq!(p.len(), 1);
        p.remove(0).1
    }

    fn base_login(caps: u32, user: &str) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn sha1_fips_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let nist448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(nist448.len() * 8, 448);
        assert_eq!(hex(&sha1(nist448)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(hex(&sha1(&vec![b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn sha1_padding_boundaries() {
        // Lengths around 55/56/64 take the one- vs two-block padding paths;
        // a bug there gives equal digests for different inputs or panics.
        let digests: Vec<_> = (50..=70).map(|n| sha1(&vec![b'x'; n])).collect();
        for (i, a) in digests.iter().enumerate() {
            for b in &digests[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // 64 bytes of 'a': a known value from a reference implementation.
        assert_eq!(hex(&sha1(&[b'a'; 64])), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
    }

    #[test]
    fn native_password_stage2_matches_mysql_password_hash() {
        let stage2 = sha1(&sha1(b"secret"));
        assert_eq!(hex(&stage2).to_uppercase(), "14E65567ABDB5135D0CFD9A70B3032C179A49EE7");
    }

    #[test]
    fn native_password_round_trip_and_rejections() {
        let resp = native_password_response("secret", &SCRAMBLE);
        assert_eq!(resp.len(), 20);
        assert!(native_password_check("secret", &SCRAMBLE, &resp));
        assert!(!native_password_check("Secret", &SCRAMBLE, &resp));
        assert!(!native_password_check("", &SCRAMBLE, &resp));
        for i in 0..resp.len() {
            let mut bad = resp.clone();
            bad[i] ^= 0x01;
            assert!(!native_password_check("secret", &SCRAMBLE, &bad), "byte {i}");
        }
        assert!(!native_password_check("secret", &SCRAMBLE, &resp[..19]));
        // Another scramble gives another response.
        let mut other = SCRAMBLE;
        other[19] ^= 0x01;
        assert_ne!(native_password_response("secret", &other), resp);
        assert!(!native_password_check("secret", &other, &resp));
        // The XOR undoes: response XOR SHA1(scramble ++ stage2) is SHA1(password).
        let mut salted = SCRAMBLE.to_vec();
        salted.extend_from_slice(&sha1(&sha1(b"secret")));
        let unmasked: Vec<u8> = resp.iter().zip(sha1(&salted)).map(|(r, m)| r ^ m).collect();
        assert_eq!(unmasked, sha1(b"secret"));
    }

    #[test]
    fn native_password_empty_rules() {
        assert!(native_password_response("", &SCRAMBLE).is_empty());
        assert!(native_password_check("", &SCRAMBLE, &[]));
        assert!(!native_password_check("", &SCRAMBLE, &[0]));
        assert!(!native_password_check("secret", &SCRAMBLE, &[]));
    }

    #[test]
    fn random_scramble_is_printable() {
        let a = random_scramble().unwrap();
        let b = random_scramble().unwrap();
        assert!(a.iter().chain(&b).all(|c| (0x21..=0x7e).contains(c)));
        assert_ne!(a, b, "two 20-byte draws should differ");
    }

    #[test]
    fn server_capabilities_value() {
        assert_eq!(SERVER_CAPABILITIES, 0x000a_a20f);
        assert_eq!(SERVER_CAPABILITIES & (CLIENT_SSL | CLIENT_CONNECT_ATTRS), 0);
    }

    #[test]
    fn greeting_layout() {
        let pkt = greeting_packet(&ServerHello {
            version: "8.0.0-lab",
            connection_id: 0x0102_0304,
            scramble: &SCRAMBLE,
        });
        let len = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], 0]) as usize;
        assert_eq!(len, pkt.len() - 4);
        assert_eq!(pkt[3], 0, "seq");
        let p = &pkt[4..];
        assert_eq!(greeting_scramble(p), Some(SCRAMBLE));
        assert_eq!(p[0], 10);
        assert_eq!(&p[1..11], b"8.0.0-lab\0");
        let r = &p[11..];
        assert_eq!(&r[..4], &[0x04, 0x03, 0x02, 0x01]);
        assert_eq!(&r[4..12], &SCRAMBLE[..8]);
        assert_eq!(r[12], 0);
        assert_eq!(u16::from_le_bytes([r[13], r[14]]), 0xa20f);
        assert_eq!(r[15], 33);
        assert_eq!(u16::from_le_bytes([r[16], r[17]]), 0x0002);
        assert_eq!(u16::from_le_bytes([r[18], r[19]]), 0x000a);
        assert_eq!(r[20], 21);
        assert_eq!(&r[21..31], &[0; 10]);
        assert_eq!(&r[31..43], &SCRAMBLE[8..]);
        assert_eq!(r[43], 0);
        assert_eq!(&r[44..], b"mysql_native_password\0");
    }

    #[test]
    fn greeting_scramble_rejects_malformed() {
        let pkt = greeting_packet(&ServerHello { version: "v", connection_id: 7, scramble: &SCRAMBLE });
        let p = &pkt[4..];
        // Everything up to the end of scramble part 2 is required.
        let needed = 1 + 2 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 + 12;
        for n in 0..p.len() {
            assert_eq!(greeting_scramble(&p[..n]).is_some(), n >= needed, "prefix {n}");
        }
        let err = err_packet(0, 1129, "HY000", "Host is blocked");
        assert_eq!(greeting_scramble(&err[4..]), None);
        let mut no_secure = p.to_vec();
        no_secure[1 + 2 + 4 + 8 + 1 + 1] &= !((CLIENT_SECURE_CONNECTION >> 8) as u8);
        assert_eq!(greeting_scramble(&no_secure), None);
    }

    #[test]
    fn login_packet_round_trip() {
        let pkt = login_packet("lab", "secret", &SCRAMBLE, Some("test"));
        let len = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], 0]) as usize;
        assert_eq!(len, pkt.len() - 4);
        assert_eq!(pkt[3], 1, "seq");
        let req = parse_login(&pkt[4..]).unwrap();
        assert_eq!(req.user, "lab");
        assert_eq!(req.database.as_deref(), Some("test"));
        assert_eq!(req.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));
        assert_eq!(req.capabilities, LAB_CLIENT_CAPABILITIES | CLIENT_CONNECT_WITH_DB);
        assert!(native_password_check("secret", &SCRAMBLE, &req.auth_response));
        assert!(!native_password_check("other", &SCRAMBLE, &req.auth_response));
        assert_eq!(&pkt[8..12], &0x0100_0000u32.to_le_bytes(), "max packet 16 MiB");
        assert_eq!(pkt[12], 33);
        assert!(!format!("{req:?}").contains(&format!("{:?}", req.auth_response)));

        let req = parse_login(&only_payload(&login_packet("root", "", &SCRAMBLE, None))).unwrap();
        assert_eq!(req.user, "root");
        assert_eq!(req.database, None);
        assert_eq!(req.capabilities & CLIENT_CONNECT_WITH_DB, 0);
        assert!(req.auth_response.is_empty());
        assert!(native_password_check("", &SCRAMBLE, &req.auth_response));
    }

    #[test]
    fn parse_login_lenenc_auth_with_attributes() {
        let caps = CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_CONNECT_ATTRS;
        // 300 bytes: a 1-byte length reader would misparse this.
        let auth: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut p = base_login(caps, "alice");
        p.extend_from_slice(&[0xfc, 0x2c, 0x01]);
        p.extend_from_slice(&auth);
        p.extend_from_slice(b"shop\0caching_sha2_password\0");
        // Connection attributes: total length, then key/value lenenc strings.
        let mut attrs = Vec::new();
        for s in ["_client_name", "libmariadb", "_pid", "4242"] {
            push_lenenc_bytes(&mut attrs, s.as_bytes());
        }
        push_lenenc_bytes(&mut p, &attrs);
        let req = parse_login(&p).unwrap();
        assert_eq!(req.user, "alice");
        assert_eq!(req.auth_response, auth);
        assert_eq!(req.database.as_deref(), Some("shop"));
        assert_eq!(req.auth_plugin.as_deref(), Some("caching_sha2_password"));
        assert_eq!(req.capabilities, caps);

        // PyMySQL's shape: LENENC flag set, 20-byte response, no attributes sent.
        let resp = native_password_response("pw", &SCRAMBLE);
        let mut p = base_login(caps, "bob");
        p.push(20);
        p.extend_from_slice(&resp);
        p.extend_from_slice(b"\0mysql_native_password\0");
        let req = parse_login(&p).unwrap();
        assert_eq!(req.database, None, "empty database means none");
        assert!(native_password_check("pw", &SCRAMBLE, &req.auth_response));
        assert_eq!(req.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));
    }

    #[test]
    fn parse_login_other_encodings() {
        // SECURE_CONNECTION without database.
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
        let mut p = base_login(caps, "carol");
        p.push(3);
        p.extend_from_slice(&[0, 1, 2]); // NULs inside a length-prefixed response are data
        p.extend_from_slice(b"mysql_native_password\0");
        let req = parse_login(&p).unwrap();
        assert_eq!(req.auth_response, vec![0, 1, 2]);
        assert_eq!(req.database, None);
        assert_eq!(req.auth_plugin.as_deref(), Some(NATIVE_PASSWORD_PLUGIN));

        // Pre-SECURE_CONNECTION: NUL-terminated response, no plugin.
        let caps = CLIENT_PROTOCOL_41 | CLIENT_CONNECT_WITH_DB;
        let mut p = base_login(caps, "dave");
        p.extend_from_slice(b"xyz\0db1\0");
        let req = parse_login(&p).unwrap();
        assert_eq!(req.auth_response, b"xyz");
        assert_eq!(req.database.as_deref(), Some("db1"));
        assert_eq!(req.auth_plugin, None);

        // No PROTOCOL_41.
        let mut p = base_login(CLIENT_SECURE_CONNECTION, "eve");
        p.push(0);
        assert_eq!(parse_login(&p), None);

        // Auth length beyond the packet; lenenc 0xfb/0xff are not lengths.
        let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, "f");
        p.extend_from_slice(&[20, 1, 2, 3]);
        assert_eq!(parse_login(&p), None);
        for bad in [0xfb, 0xff] {
            let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "g");
            p.push(bad);
            assert_eq!(parse_login(&p), None);
        }
        let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "h");
        p.push(0xfe);
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_login(&p), None);
    }

    #[test]
    fn parse_login_every_truncation() {
        let full = only_payload(&login_packet("lab", "secret", &SCRAMBLE, Some("test")));
        let whole = parse_login(&full).unwrap();
        let without_plugin = full.len() - NATIVE_PASSWORD_PLUGIN.len() - 1;
        for n in 0..full.len() {
            match parse_login(&full[..n]) {
                // Only the packet that ends exactly before the plugin name is complete.
                Some(req) => {
                    assert_eq!(n, without_plugin, "prefix {n} parsed");
                    assert_eq!(req, LoginRequest { auth_plugin: None, ..whole.clone() });
                }
                None => assert_ne!(n, without_plugin, "prefix {n} rejected"),
            }
        }
    }

    #[test]
    fn parsers_survive_fuzz() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let valid = only_payload(&login_packet("lab", "secret", &SCRAMBLE, Some("test")));
        let greeting = greeting_packet(&ServerHello { version: "v", connection_id: 1, scramble: &SCRAMBLE });
        let mut parsed = 0;
        for round in 0..20_000 {
            let input: Vec<u8> = match round % 4 {
                0 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
                1 => {
                    // Random tail behind a PROTOCOL_41 header, to get past the first checks.
                    let mut v = valid[..32].to_vec();
                    v[0] = rng.byte();
                    v[2] = rng.byte();
                    v[1] |= 0x02;
                    v.extend((0..rng.below(80)).map(|_| rng.byte()));
                    v
                }
                2 => {
                    let mut v = valid.clone();
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(v.len());
                        v[i] = rng.byte();
                    }
                    v
                }
                _ => {
                    let mut v = greeting.clone();
                    let i = rng.below(v.len());
                    v[i] = rng.byte();
                    v.truncate(rng.below(v.len() + 1));
                    v
                }
            };
            if parse_login(&input).is_some() {
                parsed += 1;
            }
            let _ = is_ssl_request(&input);
            let _ = greeting_scramble(&input);
            let _ = greeting_scramble(input.get(4..).unwrap_or(&[]));
            let _ = split_packets(&input);
        }
        // The mutation rounds must actually reach the success path sometimes.
        assert!(parsed > 100, "only {parsed} fuzz inputs parsed");
    }

    #[test]
    fn ssl_request_detection() {
        // An SSLRequest is just the 32-byte fixed part of a login.
        let mut p = base_login(CLIENT_PROTOCOL_41 | CLIENT_SSL, "");
        p.truncate(32);
        assert!(is_ssl_request(&p));
        assert!(!is_ssl_request(&p[..31]));
        let mut no_ssl = p.clone();
        no_ssl[1] &= !0x08;
        assert!(!is_ssl_request(&no_ssl));
        let login = only_payload(&login_packet("lab", "x", &SCRAMBLE, None));
        assert!(!is_ssl_request(&login));
        assert_eq!(parse_login(&p), None);
    }

    #[test]
    fn ok_and_err_exact_bytes() {
        assert_eq!(ok_packet(2), vec![7, 0, 0, 2, 0x00, 0, 0, 0x02, 0x00, 0, 0]);
        let mut expected = vec![22, 0, 0, 2, 0xff, 0x15, 0x04, b'#'];
        expected.extend_from_slice(b"28000");
        expected.extend_from_slice(b"Access denied");
        assert_eq!(err_packet(2, 1045, "28000", "Access denied"), expected);
        // A malformed state falls back to HY000 so the packet stays well-formed.
        let e = err_packet(0, 1, "bad", "m");
        assert_eq!(&e[8..13], b"HY000");
    }

    #[test]
    fn result_set_packets() {
        let long = "x".repeat(300);
        let rows = vec![Some("1".to_string()), None, Some(long.clone()), Some(String::new())];
        let buf = result_set(1, "@@version_comment", &rows);
        let pkts = split_packets(&buf).unwrap();
        assert_eq!(pkts.len(), 1 + 1 + 1 + rows.len() + 1);
        for (i, (seq, _)) in pkts.iter().enumerate() {
            assert_eq!(usize::from(*seq), 1 + i, "seq of packet {i}");
        }
        assert_eq!(pkts[0].1, vec![1]);

        let mut d = Reader::new(&pkts[1].1);
        let mut lenenc_str = || {
            let n = d.lenenc_int().unwrap() as usize;
            d.take(n).unwrap().to_vec()
        };
        assert_eq!(lenenc_str(), b"def");
        for _ in 0..3 {
            assert_eq!(lenenc_str(), b"");
        }
        assert_eq!(lenenc_str(), b"@@version_comment");
        assert_eq!(lenenc_str(), b"@@version_comment");
        assert_eq!(d.buf, &[0x0c, 33, 0, 255, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);

        let eof = vec![0xfe, 0, 0, 0x02, 0];
        assert_eq!(pkts[2].1, eof);
        assert_eq!(pkts[3].1, b"\x011");
        assert_eq!(pkts[4].1, vec![0xfb]);
        let mut long_row = vec![0xfc, 0x2c, 0x01];
        long_row.extend_from_slice(long.as_bytes());
        assert_eq!(pkts[5].1, long_row);
        assert_eq!(pkts[6].1, vec![0]);
        assert_eq!(pkts[7].1, eof);

        // Sequence ids wrap like a real server's.
        let pkts = split_packets(&result_set(254, "c", &[])).unwrap();
        let seqs: Vec<u8> = pkts.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![254, 255, 0, 1]);
    }

    #[test]
    fn split_packets_rejects_incomplete() {
        let mut two = ok_packet(1);
        two.extend(ok_packet(2));
        assert_eq!(split_packets(&two).unwrap().len(), 2);
        assert_eq!(split_packets(&[]).unwrap(), vec![]);
        for n in 1..two.len() {
            if n != 11 {
                assert!(split_packets(&two[..n]).is_err(), "prefix {n}");
            }
        }
        assert_eq!(split_packets(&[0, 0, 0, 9]).unwrap(), vec![(9, vec![])]);
    }

    #[test]
    fn lenenc_int_round_trip() {
        for n in [0, 250, 251, 0xffff, 0x1_0000, 0xff_ffff, 0x100_0000, u64::MAX] {
            let mut b = Vec::new();
            push_lenenc_int(&mut b, n);
            let mut r = Reader::new(&b);
            assert_eq!(r.lenenc_int(), Some(n));
            assert!(r.is_empty(), "{n} encoded with trailing bytes");
        }
    }

    #[test]
    fn oversized_payload_is_split() {
        let payload = vec![7u8; MAX_PAYLOAD + 5];
        let pkts = split_packets(&packet(3, &payload)).unwrap();
        assert_eq!(pkts.len(), 2);
        assert_eq!((pkts[0].0, pkts[0].1.len()), (3, MAX_PAYLOAD));
        assert_eq!((pkts[1].0, pkts[1].1.len()), (4, 5));
        // Exactly MAX_PAYLOAD needs a trailing empty packet.
        let pkts = split_packets(&packet(0, &payload[..MAX_PAYLOAD])).unwrap();
        assert_eq!(pkts.len(), 2);
        assert!(pkts[1].1.is_empty());
    }
}
