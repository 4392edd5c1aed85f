//! MySQL/MariaDB wire protocol for the connection phase: reassembling packets
//! from traced syscall buffers and decoding the handshake packets in them.
//!
//! Pure and total: no I/O, and every decoder accepts arbitrary bytes without
//! panicking. Secrets (the greeting's scramble, the login's auth response,
//! AuthSwitchRequest plugin data, AuthMoreData) are never copied into decoded
//! values: only their lengths are kept.
mod tls;

pub use tls::is_tls_handshake_record;

use std::fmt;

pub const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
pub const CLIENT_FOUND_ROWS: u32 = 0x0000_0002;
pub const CLIENT_LONG_FLAG: u32 = 0x0000_0004;
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
pub const CLIENT_NO_SCHEMA: u32 = 0x0000_0010;
pub const CLIENT_COMPRESS: u32 = 0x0000_0020;
pub const CLIENT_ODBC: u32 = 0x0000_0040;
pub const CLIENT_LOCAL_FILES: u32 = 0x0000_0080;
pub const CLIENT_IGNORE_SPACE: u32 = 0x0000_0100;
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
pub const CLIENT_INTERACTIVE: u32 = 0x0000_0400;
pub const CLIENT_SSL: u32 = 0x0000_0800;
pub const CLIENT_IGNORE_SIGPIPE: u32 = 0x0000_1000;
pub const CLIENT_TRANSACTIONS: u32 = 0x0000_2000;
pub const CLIENT_RESERVED: u32 = 0x0000_4000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
pub const CLIENT_MULTI_STATEMENTS: u32 = 0x0001_0000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
pub const CLIENT_PS_MULTI_RESULTS: u32 = 0x0004_0000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
pub const CLIENT_CONNECT_ATTRS: u32 = 0x0010_0000;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 0x0040_0000;
pub const CLIENT_SESSION_TRACK: u32 = 0x0080_0000;
pub const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 0x0200_0000;
pub const CLIENT_ZSTD_COMPRESSION: u32 = 0x0400_0000;
pub const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;
pub const CLIENT_MULTI_FACTOR_AUTH: u32 = 0x1000_0000;
/// MySQL 8: CLIENT_CAPABILITY_EXTENSION; MariaDB: CLIENT_PROGRESS_OBSOLETE.
pub const CLIENT_CAPABILITY_EXTENSION: u32 = 0x2000_0000;
pub const CLIENT_SSL_VERIFY_SERVER_CERT: u32 = 0x4000_0000;
pub const CLIENT_REMEMBER_OPTIONS: u32 = 0x8000_0000;

/// Protocol version byte that starts a HandshakeV10 greeting.
pub const PROTOCOL_V10: u8 = 0x0a;

/// Display names, ordered by bit.
const CAPABILITY_NAMES: [(u32, &str); 32] = [
    (CLIENT_LONG_PASSWORD, "LONG_PASSWORD"),
    (CLIENT_FOUND_ROWS, "FOUND_ROWS"),
    (CLIENT_LONG_FLAG, "LONG_FLAG"),
    (CLIENT_CONNECT_WITH_DB, "CONNECT_WITH_DB"),
    (CLIENT_NO_SCHEMA, "NO_SCHEMA"),
    (CLIENT_COMPRESS, "COMPRESS"),
    (CLIENT_ODBC, "ODBC"),
    (CLIENT_LOCAL_FILES, "LOCAL_FILES"),
    (CLIENT_IGNORE_SPACE, "IGNORE_SPACE"),
    (CLIENT_PROTOCOL_41, "PROTOCOL_41"),
    (CLIENT_INTERACTIVE, "INTERACTIVE"),
    (CLIENT_SSL, "SSL"),
    (CLIENT_IGNORE_SIGPIPE, "IGNORE_SIGPIPE"),
    (CLIENT_TRANSACTIONS, "TRANSACTIONS"),
    (CLIENT_RESERVED, "RESERVED"),
    (CLIENT_SECURE_CONNECTION, "SECURE_CONNECTION"),
    (CLIENT_MULTI_STATEMENTS, "MULTI_STATEMENTS"),
    (CLIENT_MULTI_RESULTS, "MULTI_RESULTS"),
    (CLIENT_PS_MULTI_RESULTS, "PS_MULTI_RESULTS"),
    (CLIENT_PLUGIN_AUTH, "PLUGIN_AUTH"),
    (CLIENT_CONNECT_ATTRS, "CONNECT_ATTRS"),
    (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "PLUGIN_AUTH_LENENC_CLIENT_DATA"),
    (CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS, "CAN_HANDLE_EXPIRED_PASSWORDS"),
    (CLIENT_SESSION_TRACK, "SESSION_TRACK"),
    (CLIENT_DEPRECATE_EOF, "DEPRECATE_EOF"),
    (CLIENT_OPTIONAL_RESULTSET_METADATA, "OPTIONAL_RESULTSET_METADATA"),
    (CLIENT_ZSTD_COMPRESSION, "ZSTD_COMPRESSION"),
    (CLIENT_QUERY_ATTRIBUTES, "QUERY_ATTRIBUTES"),
    (CLIENT_MULTI_FACTOR_AUTH, "MULTI_FACTOR_AUTH"),
    (CLIENT_CAPABILITY_EXTENSION, "CAPABILITY_EXTENSION"),
    (CLIENT_SSL_VERIFY_SERVER_CERT, "SSL_VERIFY_SERVER_CERT"),
    (CLIENT_REMEMBER_OPTIONS, "REMEMBER_OPTIONS"),
];

/// Names of the capability flags set in `caps`, lowest bit first.
pub fn capability_names(caps: u32) -> Vec<&'static str> {
    CAPABILITY_NAMES.iter().filter(|(bit, _)| caps & bit != 0).map(|&(_, name)| name).collect()
}

/// Symbolic name of a server error code seen during connection setup.
pub fn error_name(code: u16) -> Option<&'static str> {
    Some(match code {
        1040 => "ER_CON_COUNT_ERROR",
        1041 => "ER_OUT_OF_RESOURCES",
        1042 => "ER_BAD_HOST_ERROR",
        1043 => "ER_HANDSHAKE_ERROR",
        1044 => "ER_DBACCESS_DENIED_ERROR",
        1045 => "ER_ACCESS_DENIED_ERROR",
        1047 => "ER_UNKNOWN_COM_ERROR",
        1049 => "ER_BAD_DB_ERROR",
        1053 => "ER_SERVER_SHUTDOWN",
        1129 => "ER_HOST_IS_BLOCKED",
        1130 => "ER_HOST_NOT_PRIVILEGED",
        1152 => "ER_ABORTING_CONNECTION",
        1153 => "ER_NET_PACKET_TOO_LARGE",
        1156 => "ER_NET_PACKETS_OUT_OF_ORDER",
        1157 => "ER_NET_UNCOMPRESS_ERROR",
        1158 => "ER_NET_READ_ERROR",
        1159 => "ER_NET_READ_INTERRUPTED",
        1160 => "ER_NET_ERROR_ON_WRITE",
        1161 => "ER_NET_WRITE_INTERRUPTED",
        1184 => "ER_NEW_ABORTING_CONNECTION",
        1203 => "ER_TOO_MANY_USER_CONNECTIONS",
        1226 => "ER_USER_LIMIT_REACHED",
        1251 => "ER_NOT_SUPPORTED_AUTH_MODE",
        1275 => "ER_SERVER_IS_IN_SECURE_AUTH_MODE",
        1698 => "ER_ACCESS_DENIED_NO_PASSWORD_ERROR",
        1820 => "ER_MUST_CHANGE_PASSWORD",
        1862 => "ER_MUST_CHANGE_PASSWORD_LOGIN",
        3118 => "ER_ACCOUNT_HAS_BEEN_LOCKED",
        3159 => "ER_SECURE_TRANSPORT_REQUIRED",
        3955 => "ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK",
        4151 => "ER_ACCOUNT_HAS_BEEN_LOCKED",
        _ => return None,
    })
}

/// True for errors that mean the credentials or the account were refused
/// (as opposed to server limits, host blocks or network failures).
pub fn is_auth_error(code: u16) -> bool {
    // 3118 / 3955: MySQL's locked account and failed-login lock; 4151: MariaDB's locked account.
    matches!(code, 1044 | 1045 | 1251 | 1275 | 1698 | 1820 | 1862 | 3118 | 3955 | 4151)
}

/// One MySQL packet: 3-byte little-endian payload length, 1-byte sequence id, payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    /// Declared payload length.
    pub len: u32,
    /// The captured prefix of the payload; shorter than `len` when truncated.
    pub payload: Vec<u8>,
    /// Some payload bytes were not captured.
    pub truncated: bool,
}

// The payload can hold a scramble or an auth response: Debug shows its size only.
impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("seq", &self.seq)
            .field("len", &self.len)
            .field("captured", &self.payload.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

enum State {
    /// Collecting the 4-byte header.
    Header { buf: [u8; 4], have: usize },
    /// Collecting the payload; `truncated` once a gap was seen (bytes after it are not kept).
    Body { seq: u8, len: u32, payload: Vec<u8>, remaining: usize, truncated: bool },
    /// A header fell into uncaptured bytes: packet boundaries are lost for good.
    Desynced,
}

impl State {
    fn header() -> Self {
        State::Header { buf: [0; 4], have: 0 }
    }
}

/// Reassembles one direction of a connection's byte stream into packets.
pub struct PacketStream {
    state: State,
}

impl Default for PacketStream {
    fn default() -> Self {
        Self::new()
    }
}

// Partial payloads may be secrets: no bytes in Debug.
impl fmt::Debug for PacketStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketStream").field("pending", &self.pending()).field("desynced", &self.is_desynced()).finish()
    }
}

impl PacketStream {
    pub fn new() -> Self {
        Self { state: State::header() }
    }

    /// Feeds one syscall's transfer: `captured` is the prefix we have, `total`
    /// the number of bytes the syscall moved. Returns the packets this completes.
    /// Captured bytes beyond `total` are ignored: they were never part of the stream.
    pub fn feed(&mut self, captured: &[u8], total: usize) -> Vec<Packet> {
        let known = &captured[..captured.len().min(total)];
        let mut out = Vec::new();
        self.feed_known(known, &mut out);
        self.feed_gap(total - known.len(), &mut out);
        out
    }

    pub fn is_desynced(&self) -> bool {
        matches!(self.state, State::Desynced)
    }

    /// Bytes received that are not yet part of a complete packet (header included).
    pub fn pending(&self) -> usize {
        match &self.state {
            State::Header { have, .. } => *have,
            State::Body { len, remaining, .. } => 4 + (*len as usize - remaining),
            State::Desynced => 0,
        }
    }

    fn feed_known(&mut self, mut data: &[u8], out: &mut Vec<Packet>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Desynced => return,
                State::Header { buf, have } => {
                    let n = (4 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == 4 {
                        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]);
                        let seq = buf[3];
                        self.start_body(seq, len, out);
                    }
                }
                State::Body { payload, remaining, truncated, .. } => {
                    let n = (*remaining).min(data.len());
                    if !*truncated {
                        payload.extend_from_slice(&data[..n]);
                    }
                    *remaining -= n;
                    data = &data[n..];
                    if *remaining == 0 {
                        self.finish(out);
                    }
                }
            }
        }
    }

    fn feed_gap(&mut self, mut gap: usize, out: &mut Vec<Packet>) {
        while gap > 0 {
            match &mut self.state {
                State::Desynced => return,
                State::Header { .. } => {
                    self.state = State::Desynced;
                    return;
                }
                State::Body { remaining, truncated, .. } => {
                    let n = (*remaining).min(gap);
                    *truncated = true;
                    *remaining -= n;
                    gap -= n;
                    if *remaining == 0 {
                        self.finish(out);
                    }
                }
            }
        }
    }

    fn start_body(&mut self, seq: u8, len: u32, out: &mut Vec<Packet>) {
        if len == 0 {
            out.push(Packet { seq, len, payload: Vec::new(), truncated: false });
            self.state = State::header();
        } else {
            // Capacity bounded by what one syscall capture can bring, not by the declared length.
            let payload = Vec::with_capacity((len as usize).min(256));
            self.state = State::Body { seq, len, payload, remaining: len as usize, truncated: false };
        }
    }

    fn finish(&mut self, out: &mut Vec<Packet>) {
        if let State::Body { seq, len, payload, truncated, .. } = std::mem::replace(&mut self.state, State::header()) {
            out.push(Packet { seq, len, payload, truncated });
        }
    }
}

/// Server → client packets during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    Greeting(Greeting),
    Ok(OkPacket),
    Err(ErrPacket),
    AuthSwitch(AuthSwitch),
    /// Extra auth exchange (e.g. caching_sha2_password, ed25519); `len` = data bytes after the 0x01.
    AuthMoreData {
        len: usize,
    },
    Other {
        first_byte: u8,
        len: u32,
    },
}

/// Client → server packets during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPacket {
    SslRequest(SslRequest),
    Login(Login),
    /// Answer to an AuthSwitchRequest or AuthMoreData; `len` = payload length.
    AuthData {
        len: usize,
    },
    Other {
        len: u32,
    },
}

/// HandshakeV10 (the server's first packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub protocol: u8,
    /// Verbatim, including MariaDB's "5.5.5-" compatibility prefix.
    pub server_version: String,
    pub connection_id: u32,
    /// Lower and upper 16 bits combined.
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: Option<String>,
    /// Scramble bytes in both parts, without part 2's NUL terminator.
    pub scramble_len: usize,
}

/// HandshakeResponse41 or HandshakeResponse320.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub protocol41: bool,
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth_response_len: usize,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub attrs: Vec<(String, String)>,
    /// The capture ended early: fields after its end are missing or empty.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sqlstate: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch {
    pub plugin: String,
    /// Plugin data bytes, without a trailing NUL terminator when one was captured.
    pub data_len: usize,
}

/// Bounds-checked little-endian reader; every method returns None instead of overrunning.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Some(s)
    }

    /// Up to `n` bytes: fewer when the buffer ends first.
    fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.remaining());
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take_up_to(usize::MAX)
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

    /// Length-encoded integer; 0xfb (NULL) and 0xff are not integers.
    fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16().map(u64::from),
            0xfd => self.u24().map(u64::from),
            0xfe => self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            _ => None,
        }
    }

    /// Bytes up to a NUL (consumed, not returned), or to the end; the flag says whether the NUL was found.
    fn cstr(&mut self) -> (&'a [u8], bool) {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                (&rest[..i], true)
            }
            None => {
                self.pos = self.buf.len();
                (rest, false)
            }
        }
    }

    /// A NUL-terminated string field. An unterminated string that runs to the end is
    /// accepted only when the packet is complete (servers accept a missing final NUL);
    /// in a cut capture it is a partial value, so None, as when nothing is left.
    fn string_z(&mut self, cut: bool) -> Option<String> {
        if self.remaining() == 0 {
            return None;
        }
        let (s, terminated) = self.cstr();
        if !terminated && cut {
            return None;
        }
        Some(text(s))
    }

    /// A length-encoded string, only if wholly present.
    fn string_lenenc(&mut self) -> Option<String> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n).map(text)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Decodes a server → client packet. `after_greeting`: the greeting was already seen.
pub fn decode_server(p: &Packet, after_greeting: bool) -> ServerPacket {
    let Some(&first) = p.payload.first() else {
        return ServerPacket::Other { first_byte: 0, len: p.len };
    };
    match (first, after_greeting) {
        (0xff, _) => ServerPacket::Err(decode_err(&p.payload)),
        (PROTOCOL_V10, false) => ServerPacket::Greeting(decode_greeting(p)),
        (0x00, true) => ServerPacket::Ok(decode_ok(&p.payload)),
        (0xfe, true) => ServerPacket::AuthSwitch(decode_auth_switch(p)),
        (0x01, true) => ServerPacket::AuthMoreData { len: (p.len as usize).saturating_sub(1) },
        _ => ServerPacket::Other { first_byte: first, len: p.len },
    }
}

fn is_cut(p: &Packet) -> bool {
    p.truncated || p.payload.len() < p.len as usize
}

fn decode_greeting(p: &Packet) -> Greeting {
    let mut g = Greeting {
        protocol: 0,
        server_version: String::new(),
        connection_id: 0,
        capabilities: 0,
        charset: 0,
        status: 0,
        auth_plugin: None,
        scramble_len: 0,
    };
    // Fields missing at the end keep their defaults.
    let _ = greeting_fields(&mut Reader::new(&p.payload), &mut g, is_cut(p));
    g
}

fn greeting_fields(r: &mut Reader<'_>, g: &mut Greeting, cut: bool) -> Option<()> {
    g.protocol = r.u8()?;
    let (version, _) = r.cstr();
    g.server_version = text(version);
    g.connection_id = r.u32()?;
    // Only the count of scramble bytes is kept, never the bytes.
    g.scramble_len = r.take_up_to(8).len();
    r.u8()?; // filler
    g.capabilities = u32::from(r.u16()?);
    g.charset = r.u8()?;
    g.status = r.u16()?;
    g.capabilities |= u32::from(r.u16()?) << 16;
    let data_len = usize::from(r.u8()?);
    // 6 reserved bytes, then 4 that MariaDB uses for its extended capabilities.
    r.take(10)?;
    if g.capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let part2 = r.take_up_to(13.max(data_len.saturating_sub(8)));
        let nul = usize::from(part2.last() == Some(&0));
        g.scramble_len += part2.len() - nul;
    }
    if g.capabilities & CLIENT_PLUGIN_AUTH != 0 {
        g.auth_plugin = r.string_z(cut);
    }
    Some(())
}

fn decode_ok(payload: &[u8]) -> OkPacket {
    let mut ok = OkPacket { affected_rows: 0, last_insert_id: 0, status: 0, warnings: 0 };
    let _ = ok_fields(&mut Reader::new(payload), &mut ok);
    ok
}

fn ok_fields(r: &mut Reader<'_>, ok: &mut OkPacket) -> Option<()> {
    r.u8()?;
    ok.affected_rows = r.lenenc()?;
    ok.last_insert_id = r.lenenc()?;
    ok.status = r.u16()?;
    ok.warnings = r.u16()?;
    Some(())
}

fn decode_err(payload: &[u8]) -> ErrPacket {
    let mut r = Reader::new(payload);
    let _ = r.u8();
    let code = r.u16().unwrap_or(0);
    // Pre-4.1 style ERRs (also sent before the greeting by old servers) have no '#'+SQLSTATE.
    let sqlstate = if payload.get(3) == Some(&b'#') {
        let _ = r.u8();
        Some(text(r.take_up_to(5)))
    } else {
        None
    };
    ErrPacket { code, sqlstate, message: text(r.rest()) }
}

fn decode_auth_switch(p: &Packet) -> AuthSwitch {
    if p.len == 1 {
        // A bare 0xfe: the pre-plugin "switch to old password" request.
        return AuthSwitch { plugin: "mysql_old_password".to_string(), data_len: 0 };
    }
    let mut r = Reader::new(&p.payload);
    let _ = r.u8();
    let (name, terminated) = r.cstr();
    let plugin = text(name);
    if !terminated {
        return AuthSwitch { plugin, data_len: 0 };
    }
    let mut data_len = (p.len as usize).saturating_sub(r.pos);
    // Servers end the data with a NUL: not counted when we can see it.
    if data_len > 0 && p.payload.len() == p.len as usize && p.payload.last() == Some(&0) {
        data_len -= 1;
    }
    AuthSwitch { plugin, data_len }
}

/// Decodes a client → server packet. `expecting_login`: this is the client's
/// first packet (seq 1) or the first after TLS.
pub fn decode_client(p: &Packet, expecting_login: bool) -> ClientPacket {
    if !expecting_login {
        return ClientPacket::AuthData { len: p.len as usize };
    }
    let mut r = Reader::new(&p.payload);
    let Some(caps16) = r.u16() else {
        return ClientPacket::Other { len: p.len };
    };
    let caps16 = u32::from(caps16);
    if caps16 & CLIENT_PROTOCOL_41 != 0 {
        // Fixed part: caps 4, max_packet 4, charset 1, filler 23.
        if p.len < 32 {
            return ClientPacket::Other { len: p.len };
        }
        if p.len == 32 && caps16 & CLIENT_SSL != 0 {
            // The filler is not checked: MariaDB clients put extended capabilities in its last 4 bytes.
            let mut r = Reader::new(&p.payload);
            return match (r.u32(), r.u32(), r.u8()) {
                (Some(capabilities), Some(max_packet), Some(charset)) => {
                    ClientPacket::SslRequest(SslRequest { capabilities, max_packet, charset })
                }
                _ => ClientPacket::Other { len: p.len },
            };
        }
        let mut login = empty_login(p, true, caps16);
        let _ = login41_fields(&mut Reader::new(&p.payload), &mut login);
        ClientPacket::Login(login)
    } else {
        // Pre-4.1 SSL request: caps 2 + max_packet 3, nothing else.
        if p.len == 5 && caps16 & CLIENT_SSL != 0 {
            return match r.u24() {
                Some(max_packet) => {
                    ClientPacket::SslRequest(SslRequest { capabilities: caps16, max_packet, charset: 0 })
                }
                None => ClientPacket::Other { len: p.len },
            };
        }
        // caps 2, max_packet 3, at least the user's NUL.
        if p.len < 6 {
            return ClientPacket::Other { len: p.len };
        }
        let mut login = empty_login(p, false, caps16);
        let _ = login320_fields(&mut r, &mut login, p.len as usize);
        ClientPacket::Login(login)
    }
}

fn empty_login(p: &Packet, protocol41: bool, capabilities: u32) -> Login {
    Login {
        protocol41,
        capabilities,
        max_packet: 0,
        charset: 0,
        user: String::new(),
        auth_response_len: 0,
        database: None,
        auth_plugin: None,
        attrs: Vec::new(),
        truncated: is_cut(p),
    }
}

fn login41_fields(r: &mut Reader<'_>, login: &mut Login) -> Option<()> {
    let cut = login.truncated;
    login.capabilities = r.u32()?;
    login.max_packet = r.u32()?;
    login.charset = r.u8()?;
    r.take(23)?;
    login.user = r.string_z(cut)?;
    let caps = login.capabilities;
    // Only the auth response's length is kept; its bytes are skipped.
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        let n = r.lenenc()?;
        login.auth_response_len = saturating_usize(n);
        r.take(usize::try_from(n).ok()?)?;
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let n = usize::from(r.u8()?);
        login.auth_response_len = n;
        r.take(n)?;
    } else {
        let (auth, terminated) = r.cstr();
        login.auth_response_len = auth.len();
        if !terminated {
            return None;
        }
    }
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        login.database = Some(r.string_z(cut)?);
    }
    if caps & CLIENT_PLUGIN_AUTH != 0 {
        login.auth_plugin = Some(r.string_z(cut)?);
    }
    if caps & CLIENT_CONNECT_ATTRS != 0 {
        let total = r.lenenc()?;
        // Only pairs wholly inside both the declared block and the capture are kept.
        let mut block = Reader::new(r.take_up_to(saturating_usize(total)));
        while block.remaining() > 0 {
            let key = block.string_lenenc()?;
            let value = block.string_lenenc()?;
            login.attrs.push((key, value));
        }
    }
    Some(())
}

fn login320_fields(r: &mut Reader<'_>, login: &mut Login, declared: usize) -> Option<()> {
    let cut = login.truncated;
    login.max_packet = r.u24()?;
    login.user = r.string_z(cut)?;
    if login.capabilities & CLIENT_CONNECT_WITH_DB != 0 {
        // Auth response NUL-terminated, then the database.
        let (auth, terminated) = r.cstr();
        login.auth_response_len = auth.len();
        if !terminated {
            return None;
        }
        login.database = Some(r.string_z(cut)?);
    } else {
        // Auth response runs to the end of the packet, maybe NUL-terminated.
        let start = r.pos;
        let rest = r.rest();
        login.auth_response_len = match rest.iter().position(|&b| b == 0) {
            Some(i) => i,
            None if cut => declared.saturating_sub(start),
            None => rest.len(),
        };
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header + payload, as on the wire.
    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        v.extend_from_slice(payload);
        v
    }

    fn pkt(seq: u8, payload: &[u8]) -> Packet {
        Packet { seq, len: payload.len() as u32, payload: payload.to_vec(), truncated: false }
    }

    /// A packet whose capture stopped after `keep` payload bytes.
    fn cut_pkt(seq: u8, payload: &[u8], keep: usize) -> Packet {
        Packet { seq, len: payload.len() as u32, payload: payload[..keep].to_vec(), truncated: keep < payload.len() }
    }

    fn lenenc_str(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 0xfb);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }

    const SCRAMBLE1: &[u8; 8] = b"q;V&1Z^x";
    const SCRAMBLE2: &[u8; 12] = b"7Lk]Pw@3e|Nr";
    const AUTH_RESPONSE: [u8; 20] = [
        0x9c, 0x1f, 0x77, 0xe2, 0x05, 0xab, 0x3d, 0x61, 0xf0, 0x12, 0x8e, 0x4a, 0xd9, 0x33, 0xc7, 0x70, 0x2b, 0xee,
        0x58, 0x91,
    ];

    /// A MariaDB 10.11.14 (Debian 12) greeting, connection id 31.
    fn mariadb_greeting() -> Vec<u8> {
        let mut g = vec![0x0a];
        g.extend_from_slice(b"5.5.5-10.11.14-MariaDB-0+deb12u2\0");
        g.extend_from_slice(&31u32.to_le_bytes());
        g.extend_from_slice(SCRAMBLE1);
        g.push(0); // filler
        g.extend_from_slice(&[0xfe, 0xf7]); // caps lower 0xf7fe (no CLIENT_MYSQL, no SSL)
        g.push(45); // utf8mb4_general_ci
        g.extend_from_slice(&[0x02, 0x00]); // SERVER_STATUS_AUTOCOMMIT
        g.extend_from_slice(&[0xff, 0x81]); // caps upper 0x81ff
        g.push(21); // auth plugin data length
        g.extend_from_slice(&[0; 6]);
        g.extend_from_slice(&[0x1d, 0x00, 0x00, 0x00]); // MariaDB extended caps
        g.extend_from_slice(SCRAMBLE2);
        g.push(0);
        g.extend_from_slice(b"mysql_native_password\0");
        g
    }

    const LOGIN_CAPS: u32 = CLIENT_LONG_PASSWORD
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

    const ATTRS: [(&str, &str); 7] = [
        ("_client_name", "libmariadb"),
        ("_client_version", "3.3.8"),
        ("_os", "Linux"),
        ("_pid", "48211"),
        ("_platform", "x86_64"),
        ("_server_host", "localhost"),
        ("program_name", "mysql"),
    ];

    /// HandshakeResponse41 as the `mysql` client (libmariadb) sends it.
    fn mariadb_login(caps: u32) -> Vec<u8> {
        let mut l = Vec::new();
        l.extend_from_slice(&caps.to_le_bytes());
        l.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        l.push(45);
        l.extend_from_slice(&[0; 19]);
        l.extend_from_slice(&[0x1c, 0x00, 0x00, 0x00]); // MariaDB extended caps in the filler
        l.extend_from_slice(b"lab\0");
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 || caps & CLIENT_SECURE_CONNECTION != 0 {
            l.push(20);
            l.extend_from_slice(&AUTH_RESPONSE);
        } else {
            l.extend_from_slice(&AUTH_RESPONSE);
            l.push(0);
        }
        l.extend_from_slice(b"shop\0");
        l.extend_from_slice(b"mysql_native_password\0");
        let mut attrs = Vec::new();
        for (k, v) in ATTRS {
            lenenc_str(&mut attrs, k);
            lenenc_str(&mut attrs, v);
        }
        l.push(attrs.len() as u8);
        l.extend_from_slice(&attrs);
        l
    }

    fn login_of(c: ClientPacket) -> Login {
        match c {
            ClientPacket::Login(l) => l,
            other => panic!("not a login: {other:?}"),
        }
    }

    #[test]
    fn greeting_mariadb_10_11() {
        let p = pkt(0, &mariadb_greeting());
        let ServerPacket::Greeting(g) = decode_server(&p, false) else { panic!("not a greeting") };
        assert_eq!(g.protocol, 10);
        assert_eq!(g.server_version, "5.5.5-10.11.14-MariaDB-0+deb12u2");
        assert_eq!(g.connection_id, 31);
        assert_eq!(g.capabilities, 0x81ff_f7fe);
        assert_eq!(g.charset, 45);
        assert_eq!(g.status, 2);
        assert_eq!(g.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(g.scramble_len, 20);
        assert!(!format!("{g:?}").contains("7Lk]Pw"));
        // After the greeting, 0x0a is not a greeting any more.
        assert!(matches!(decode_server(&p, true), ServerPacket::Other { first_byte: 0x0a, .. }));
    }

    #[test]
    fn greeting_old_server_without_plugin_auth() {
        // MySQL 5.1 style: no PLUGIN_AUTH, data length byte 0, part 2 = 12 bytes + NUL.
        let mut g = vec![0x0a];
        g.extend_from_slice(b"5.1.73\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(SCRAMBLE1);
        g.push(0);
        g.extend_from_slice(&((CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION) as u16).to_le_bytes());
        g.push(8);
        g.extend_from_slice(&[0x02, 0x00]);
        g.extend_from_slice(&[0, 0]);
        g.push(0);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(SCRAMBLE2);
        g.push(0);
        let ServerPacket::Greeting(g) = decode_server(&pkt(0, &g), false) else { panic!() };
        assert_eq!(g.server_version, "5.1.73");
        assert_eq!(g.capabilities, CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION);
        assert_eq!(g.auth_plugin, None);
        assert_eq!(g.scramble_len, 20);
    }

    #[test]
    fn login41_with_db_plugin_and_attrs() {
        let bytes = mariadb_login(LOGIN_CAPS);
        let l = login_of(decode_client(&pkt(1, &bytes), true));
        assert!(l.protocol41);
        assert_eq!(l.capabilities, LOGIN_CAPS);
        assert_eq!(l.max_packet, 0x0100_0000);
        assert_eq!(l.charset, 45);
        assert_eq!(l.user, "lab");
        assert_eq!(l.auth_response_len, 20);
        assert_eq!(l.database.as_deref(), Some("shop"));
        assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
        let expected: Vec<(String, String)> = ATTRS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(l.attrs, expected);
        assert!(l.attrs.contains(&("_client_name".into(), "libmariadb".into())));
        assert!(l.attrs.contains(&("program_name".into(), "mysql".into())));
        assert!(!l.truncated);
    }

    #[test]
    fn login41_auth_length_byte_and_nul_terminated() {
        let caps = LOGIN_CAPS & !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let l = login_of(decode_client(&pkt(1, &mariadb_login(caps)), true));
        assert_eq!((l.auth_response_len, l.database.as_deref(), l.attrs.len()), (20, Some("shop"), 7));

        // Neither flag: the auth response is NUL-terminated (AUTH_RESPONSE has no zero byte).
        let caps = caps & !CLIENT_SECURE_CONNECTION;
        let l = login_of(decode_client(&pkt(1, &mariadb_login(caps)), true));
        assert_eq!(l.auth_response_len, 20);
        assert_eq!(l.database.as_deref(), Some("shop"));
        assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
    }

    #[test]
    fn login41_without_optional_fields() {
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
        let mut b = Vec::new();
        b.extend_from_slice(&caps.to_le_bytes());
        b.extend_from_slice(&0xffffffu32.to_le_bytes());
        b.push(8);
        b.extend_from_slice(&[0; 23]);
        b.extend_from_slice(b"root\0");
        b.push(0); // empty password
        let l = login_of(decode_client(&pkt(1, &b), true));
        assert_eq!(l.user, "root");
        assert_eq!(l.auth_response_len, 0);
        assert_eq!((l.database, l.auth_plugin, l.attrs.len(), l.truncated), (None, None, 0, false));
    }

    #[test]
    fn login_debug_never_shows_auth_response() {
        let bytes = mariadb_login(LOGIN_CAPS);
        let c = decode_client(&pkt(1, &bytes), true);
        let dbg = format!("{c:?}");
        let pretty = format!("{c:#?}");
        let hex: String = AUTH_RESPONSE.iter().map(|b| format!("{b:02x}")).collect();
        for s in [&dbg, &pretty] {
            assert!(!s.contains(&format!("{:?}", &AUTH_RESPONSE[..])));
            assert!(!s.contains(&format!("{:?}", &AUTH_RESPONSE[..4])));
            assert!(!s.contains(&hex));
            assert!(!s.contains(&String::from_utf8_lossy(&AUTH_RESPONSE[..]).into_owned()));
        }
        assert!(dbg.contains("auth_response_len: 20"));
        // The raw packet's Debug does not show the payload either.
        let pdbg = format!("{:?}", pkt(1, &bytes));
        assert!(!pdbg.contains("156, 31, 119"), "{pdbg}");
    }

    #[test]
    fn login41_truncated_capture_keeps_complete_fields() {
        let bytes = mariadb_login(LOGIN_CAPS);
        let plugin_end = bytes.windows(22).position(|w| w == b"mysql_native_password\0").unwrap() + 22;
        // Cut inside the attributes, after the _client_name pair and 3 bytes into the next key.
        let keep = plugin_end + 1 + 1 + 12 + 1 + 10 + 3;
        let l = login_of(decode_client(&cut_pkt(1, &bytes, keep), true));
        assert!(l.truncated);
        assert_eq!(l.user, "lab");
        assert_eq!(l.auth_response_len, 20);
        assert_eq!(l.database.as_deref(), Some("shop"));
        assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(l.attrs, vec![("_client_name".to_string(), "libmariadb".to_string())]);

        // Cut inside the database name: no partial name.
        let db_at = bytes.windows(5).position(|w| w == b"shop\0").unwrap();
        let l = login_of(decode_client(&cut_pkt(1, &bytes, db_at + 2), true));
        assert!(l.truncated);
        assert_eq!((l.user.as_str(), l.auth_response_len), ("lab", 20));
        assert_eq!((l.database, l.auth_plugin), (None, None));

        // Cut inside the auth response: its declared length is still known.
        let l = login_of(decode_client(&cut_pkt(1, &bytes, 32 + 4 + 1 + 5), true));
        assert_eq!((l.auth_response_len, l.truncated, l.database), (20, true, None));

        // Every cut point decodes as a truncated login.
        for keep in 2..bytes.len() {
            let l = login_of(decode_client(&cut_pkt(1, &bytes, keep), true));
            assert!(l.truncated, "keep {keep}");
        }
    }

    #[test]
    fn login320() {
        // 4.0-era client: caps u16, max_packet u24, user, 8-byte scramble + NUL, db.
        let caps = CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_CONNECT_WITH_DB | CLIENT_TRANSACTIONS;
        let mut b = Vec::new();
        b.extend_from_slice(&(caps as u16).to_le_bytes());
        b.extend_from_slice(&[0xff, 0xff, 0xff]);
        b.extend_from_slice(b"lab\0");
        b.extend_from_slice(b"HQ[ZS^AO\0");
        b.extend_from_slice(b"test\0");
        let l = login_of(decode_client(&pkt(1, &b), true));
        assert!(!l.protocol41);
        assert_eq!(l.capabilities, caps);
        assert_eq!(l.max_packet, 0xffffff);
        assert_eq!(l.charset, 0);
        assert_eq!(l.user, "lab");
        assert_eq!(l.auth_response_len, 8);
        assert_eq!(l.database.as_deref(), Some("test"));
        assert_eq!((l.auth_plugin, l.attrs.len(), l.truncated), (None, 0, false));

        // Without CONNECT_WITH_DB the auth response is the rest of the packet.
        let caps = CLIENT_LONG_PASSWORD | CLIENT_TRANSACTIONS;
        let mut b = Vec::new();
        b.extend_from_slice(&(caps as u16).to_le_bytes());
        b.extend_from_slice(&[0x00, 0x00, 0x01]);
        b.extend_from_slice(b"bob\0HQ[ZS^AO");
        let l = login_of(decode_client(&pkt(1, &b), true));
        assert_eq!((l.user.as_str(), l.auth_response_len, l.database), ("bob", 8, None));
        assert_eq!(l.max_packet, 0x010000);
    }

    #[test]
    fn ssl_request() {
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SSL
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        let mut b = Vec::new();
        b.extend_from_slice(&caps.to_le_bytes());
        b.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        b.push(45);
        b.extend_from_slice(&[0; 23]);
        assert_eq!(b.len(), 32);
        assert_eq!(
            decode_client(&pkt(1, &b), true),
            ClientPacket::SslRequest(SslRequest { capabilities: caps, max_packet: 0x0100_0000, charset: 45 })
        );
        // The same 32 bytes without CLIENT_SSL are a (user-less) login, not an SSL request.
        b[1] &= !0x08;
        assert!(matches!(decode_client(&pkt(1, &b), true), ClientPacket::Login(_)));
        // A full login that has CLIENT_SSL set is still a login.
        let l = login_of(decode_client(&pkt(2, &mariadb_login(LOGIN_CAPS | CLIENT_SSL)), true));
        assert_eq!(l.user, "lab");
    }

    #[test]
    fn client_packets_after_login_are_auth_data() {
        assert_eq!(decode_client(&pkt(3, &AUTH_RESPONSE), false), ClientPacket::AuthData { len: 20 });
        assert_eq!(decode_client(&pkt(1, &[]), true), ClientPacket::Other { len: 0 });
        assert_eq!(decode_client(&pkt(1, &[0x00, 0x02, 0, 0]), true), ClientPacket::Other { len: 4 });
    }

    #[test]
    fn ok_packet() {
        let p = pkt(2, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(
            decode_server(&p, true),
            ServerPacket::Ok(OkPacket { affected_rows: 0, last_insert_id: 0, status: 2, warnings: 0 })
        );
        // Multi-byte length-encoded integers.
        let p = pkt(2, &[0x00, 0xfc, 0x10, 0x27, 0xfd, 0x01, 0x00, 0x01, 0x03, 0x40, 0x01, 0x00]);
        assert_eq!(
            decode_server(&p, true),
            ServerPacket::Ok(OkPacket { affected_rows: 10_000, last_insert_id: 0x010001, status: 0x4003, warnings: 1 })
        );
        // Before the greeting, 0x00 is nothing we know.
        assert!(matches!(decode_server(&p, false), ServerPacket::Other { first_byte: 0, .. }));
    }

    #[test]
    fn err_with_sqlstate() {
        let msg = "Access denied for user 'lab'@'localhost' (using password: YES)";
        let mut b = vec![0xff, 0x15, 0x04, b'#'];
        b.extend_from_slice(b"28000");
        b.extend_from_slice(msg.as_bytes());
        let ServerPacket::Err(e) = decode_server(&pkt(2, &b), true) else { panic!() };
        assert_eq!(e, ErrPacket { code: 1045, sqlstate: Some("28000".into()), message: msg.into() });
        assert_eq!(error_name(e.code), Some("ER_ACCESS_DENIED_ERROR"));
        assert!(is_auth_error(e.code));
    }

    #[test]
    fn err_before_greeting() {
        // Old servers: no SQLSTATE marker before the greeting.
        let mut b = vec![0xff, 0x10, 0x04];
        b.extend_from_slice(b"Too many connections");
        let ServerPacket::Err(e) = decode_server(&pkt(0, &b), false) else { panic!() };
        assert_eq!(e, ErrPacket { code: 1040, sqlstate: None, message: "Too many connections".into() });
        assert_eq!(error_name(1040), Some("ER_CON_COUNT_ERROR"));
        assert!(!is_auth_error(1040));

        // Some servers do send one.
        let msg = "Host '10.0.0.9' is blocked because of many connection errors";
        let mut b = vec![0xff, 0x69, 0x04, b'#'];
        b.extend_from_slice(b"HY000");
        b.extend_from_slice(msg.as_bytes());
        let ServerPacket::Err(e) = decode_server(&pkt(0, &b), false) else { panic!() };
        assert_eq!(e, ErrPacket { code: 1129, sqlstate: Some("HY000".into()), message: msg.into() });
        assert_eq!(error_name(1129), Some("ER_HOST_IS_BLOCKED"));
    }

    #[test]
    fn auth_switch() {
        let mut b = vec![0xfe];
        b.extend_from_slice(b"caching_sha2_password\0");
        b.extend_from_slice(SCRAMBLE1);
        b.extend_from_slice(SCRAMBLE2);
        b.push(0);
        let s = decode_server(&pkt(2, &b), true);
        assert_eq!(s, ServerPacket::AuthSwitch(AuthSwitch { plugin: "caching_sha2_password".into(), data_len: 20 }));
        assert!(!format!("{s:?}").contains("q;V&"));

        // Old "use old password" switch: 0xfe alone.
        assert_eq!(
            decode_server(&pkt(2, &[0xfe]), true),
            ServerPacket::AuthSwitch(AuthSwitch { plugin: "mysql_old_password".into(), data_len: 0 })
        );
        // Before the greeting 0xfe is not an auth switch.
        assert!(matches!(decode_server(&pkt(0, &[0xfe]), false), ServerPacket::Other { first_byte: 0xfe, len: 1 }));
    }

    #[test]
    fn auth_more_data() {
        // caching_sha2_password "perform full authentication".
        assert_eq!(decode_server(&pkt(4, &[0x01, 0x04]), true), ServerPacket::AuthMoreData { len: 1 });
        assert!(matches!(decode_server(&pkt(4, &[0x01, 0x04]), false), ServerPacket::Other { first_byte: 1, len: 2 }));
        assert_eq!(decode_server(&pkt(4, &[]), true), ServerPacket::Other { first_byte: 0, len: 0 });
    }

    #[test]
    fn error_names_and_auth_errors() {
        let named = [
            (1043, "ER_HANDSHAKE_ERROR"),
            (1044, "ER_DBACCESS_DENIED_ERROR"),
            (1049, "ER_BAD_DB_ERROR"),
            (1130, "ER_HOST_NOT_PRIVILEGED"),
            (1152, "ER_ABORTING_CONNECTION"),
            (1158, "ER_NET_READ_ERROR"),
            (1159, "ER_NET_READ_INTERRUPTED"),
            (1160, "ER_NET_ERROR_ON_WRITE"),
            (1161, "ER_NET_WRITE_INTERRUPTED"),
            (1184, "ER_NEW_ABORTING_CONNECTION"),
            (1203, "ER_TOO_MANY_USER_CONNECTIONS"),
            (1226, "ER_USER_LIMIT_REACHED"),
            (1251, "ER_NOT_SUPPORTED_AUTH_MODE"),
            (1275, "ER_SERVER_IS_IN_SECURE_AUTH_MODE"),
            (1698, "ER_ACCESS_DENIED_NO_PASSWORD_ERROR"),
            (1820, "ER_MUST_CHANGE_PASSWORD"),
            (1862, "ER_MUST_CHANGE_PASSWORD_LOGIN"),
            (3159, "ER_SECURE_TRANSPORT_REQUIRED"),
            (4151, "ER_ACCOUNT_HAS_BEEN_LOCKED"),
        ];
        for (code, name) in named {
            assert_eq!(error_name(code), Some(name), "{code}");
        }
        assert_eq!(error_name(1064), None);
        for code in [1044, 1045, 1698, 1251, 1275, 1820, 1862, 4151] {
            assert!(is_auth_error(code), "{code}");
        }
        for code in [1040, 1043, 1049, 1129, 1130, 1158, 1203, 3159, 0] {
            assert!(!is_auth_error(code), "{code}");
        }
    }

    #[test]
    fn capability_flag_names() {
        assert_eq!(capability_names(CLIENT_SSL | CLIENT_PROTOCOL_41), vec!["PROTOCOL_41", "SSL"]);
        assert!(capability_names(0).is_empty());
        let all = capability_names(u32::MAX);
        assert_eq!(all.len(), 32);
        assert_eq!(&all[..3], &["LONG_PASSWORD", "FOUND_ROWS", "LONG_FLAG"]);
        assert_eq!(all[15], "SECURE_CONNECTION");
        assert_eq!(all[24], "DEPRECATE_EOF");
        assert_eq!(
            capability_names(CLIENT_DEPRECATE_EOF | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_WITH_DB),
            vec!["CONNECT_WITH_DB", "PLUGIN_AUTH", "DEPRECATE_EOF"]
        );
        // The table is in bit order, one entry per bit.
        for (i, (bit, _)) in CAPABILITY_NAMES.iter().enumerate() {
            assert_eq!(*bit, 1u32 << i);
        }
    }

    #[test]
    fn stream_header_and_body_in_two_feeds() {
        // MariaDB reads the 4-byte header, then the body.
        let f = frame(1, &mariadb_login(LOGIN_CAPS));
        let mut s = PacketStream::new();
        assert!(s.feed(&f[..4], 4).is_empty());
        assert_eq!(s.pending(), 4);
        let got = s.feed(&f[4..], f.len() - 4);
        assert_eq!(got, vec![pkt(1, &f[4..])]);
        assert_eq!(s.pending(), 0);
        assert!(!s.is_desynced());
    }

    #[test]
    fn stream_two_packets_in_one_feed() {
        let mut bytes = frame(2, &[0x01, 0x04]);
        bytes.extend(frame(3, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]));
        let mut s = PacketStream::default();
        let got = s.feed(&bytes, bytes.len());
        assert_eq!(got, vec![pkt(2, &[0x01, 0x04]), pkt(3, &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00])]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn stream_byte_by_byte_and_empty_packet() {
        let mut bytes = frame(0, &mariadb_greeting());
        bytes.extend(frame(1, &[]));
        bytes.extend(frame(2, b"abc"));
        let mut s = PacketStream::new();
        let mut got = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            got.extend(s.feed(std::slice::from_ref(b), 1));
            assert!(s.pending() <= i + 1);
        }
        assert_eq!(got, vec![pkt(0, &mariadb_greeting()), pkt(1, &[]), pkt(2, b"abc")]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn stream_truncated_capture_then_next_packet() {
        let body: Vec<u8> = (0..396u32).map(|i| (i % 251) as u8).collect();
        let f = frame(1, &body);
        assert_eq!(f.len(), 400);
        let mut s = PacketStream::new();
        let got = s.feed(&f[..256], 400);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].seq, 1);
        assert_eq!(got[0].len, 396);
        assert!(got[0].truncated);
        assert_eq!(got[0].payload, &f[4..256]);
        assert!(!s.is_desynced());
        assert_eq!(s.pending(), 0);
        let next = frame(2, &[0x01, 0x03]);
        assert_eq!(s.feed(&next, next.len()), vec![pkt(2, &[0x01, 0x03])]);
    }

    #[test]
    fn stream_gap_inside_packet_spanning_feeds() {
        // A 500-byte packet read as 300 bytes (256 captured) then 204 bytes.
        let body: Vec<u8> = (0..496u32).map(|i| (i * 7) as u8).collect();
        let f = frame(1, &body);
        let mut s = PacketStream::new();
        assert!(s.feed(&f[..256], 300).is_empty());
        assert_eq!(s.pending(), 300);
        let got = s.feed(&f[300..], 200);
        assert_eq!(got.len(), 1);
        assert!(got[0].truncated);
        // Bytes after the gap are not kept, even though they were captured.
        assert_eq!(got[0].payload, &f[4..256]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn stream_desync_when_header_in_gap() {
        // One 10-byte packet, then a header somewhere in 40 uncaptured bytes.
        let first = frame(1, b"abcdef");
        let mut s = PacketStream::new();
        let got = s.feed(&first, 50);
        assert_eq!(got, vec![pkt(1, b"abcdef")]);
        assert!(s.is_desynced());
        assert_eq!(s.pending(), 0);
        assert!(s.feed(&frame(2, b"xyz"), 7).is_empty());
        assert!(s.is_desynced());

        // A header partly captured, rest in the gap.
        let mut s = PacketStream::new();
        assert!(s.feed(&[0x05, 0x00], 4).is_empty());
        assert!(s.is_desynced());
    }

    #[test]
    fn stream_ignores_bytes_beyond_total() {
        let f = frame(1, b"hello");
        let mut padded = f.clone();
        padded.extend_from_slice(&[0xaa; 20]);
        let mut s = PacketStream::new();
        assert_eq!(s.feed(&padded, f.len()), vec![pkt(1, b"hello")]);
        assert_eq!(s.pending(), 0);
    }

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

        fn below(&mut self, n: u64) -> usize {
            (self.next() % n) as usize
        }
    }

    fn decode_all(p: &Packet) {
        for flag in [false, true] {
            let _ = format!("{:?}", decode_server(p, flag));
            let _ = format!("{:?}", decode_client(p, flag));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds = [mariadb_greeting(), mariadb_login(LOGIN_CAPS), mariadb_login(0x0000_a20f), vec![0xfe], vec![0xff]];
        let mut stream = PacketStream::new();
        let mut decoded = 0usize;
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                (0..rng.below(300)).map(|_| rng.next() as u8).collect()
            } else {
                // Mutated real packets reach the deeper fields.
                let mut b = seeds[rng.below(seeds.len() as u64)].clone();
                for _ in 0..rng.below(6) {
                    if !b.is_empty() {
                        let i = rng.below(b.len() as u64);
                        b[i] = rng.next() as u8;
                    }
                }
                b
            };
            if round % 3 == 0 && !bytes.is_empty() {
                // Interesting first bytes and lenenc markers.
                const FIRST: [u8; 8] = [0x00, 0x01, 0x0a, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];
                bytes[0] = FIRST[rng.below(8)];
            }
            let declared = bytes.len() + if rng.below(4) == 0 { rng.below(1 << 24) } else { 0 };
            let keep = rng.below(bytes.len() as u64 + 1);
            let p = Packet {
                seq: rng.next() as u8,
                len: declared as u32,
                payload: bytes[..keep].to_vec(),
                truncated: keep < declared,
            };
            decode_all(&p);
            decode_all(&Packet { truncated: false, ..p.clone() });

            if stream.is_desynced() || round % 97 == 0 {
                stream = PacketStream::new();
            }
            // Mostly well-framed input so that packets complete, sometimes raw garbage.
            let input = if round % 5 == 0 { bytes.clone() } else { frame(rng.next() as u8, &bytes) };
            let captured = rng.below(input.len() as u64 + 1);
            let total = if rng.below(4) == 0 { input.len() + rng.below(600) } else { input.len() };
            for q in stream.feed(&input[..captured], total) {
                assert!(q.payload.len() <= q.len as usize);
                if !q.truncated {
                    assert_eq!(q.payload.len(), q.len as usize);
                }
                decode_all(&q);
                decoded += 1;
            }
            assert!(stream.pending() <= (1 << 24) + 3);
        }
        assert!(decoded > 0);
    }
}
