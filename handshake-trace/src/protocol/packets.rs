//! The handshake's packets as the correlator sees them, and the decoders that make
//! them from captured payloads (through the layouts in [`super::layout`]).
//!
//! Secrets (the greeting's scramble, the login's auth response, AuthSwitchRequest
//! plugin data, AuthMoreData) are never copied into decoded values: only their lengths.
use super::framing::Payload;
use super::layout::{client_kind, server_kind, AuthSwitchLayout, ClientKind, GreetingLayout, LoginLayout, ServerKind};
use super::reader::{text, Reader};
pub use super::attrs::Attrs;

/// SERVER_STATUS_AUTOCOMMIT, in OK and EOF packets.
pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;

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
    pub attrs: Attrs,
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

/// Decodes a server → client packet. `after_greeting`: the greeting was already seen.
pub fn decode_server<'a>(p: impl Into<Payload<'a>>, after_greeting: bool) -> ServerPacket {
    let p = p.into();
    let first = p.bytes.first().copied();
    match server_kind(first, after_greeting) {
        ServerKind::Err => ServerPacket::Err(ErrPacket::parse(p.bytes)),
        ServerKind::Greeting => ServerPacket::Greeting(Greeting::decode(p)),
        ServerKind::Ok => ServerPacket::Ok(OkPacket::parse(p.bytes)),
        ServerKind::AuthSwitch => ServerPacket::AuthSwitch(AuthSwitch::decode(p)),
        ServerKind::AuthMoreData => ServerPacket::AuthMoreData { len: (p.len as usize).saturating_sub(1) },
        ServerKind::Other => ServerPacket::Other { first_byte: first.unwrap_or(0), len: p.len },
    }
}

/// Decodes a client → server packet. `expecting_login`: this is the client's
/// first packet (seq 1) or the first after TLS.
pub fn decode_client<'a>(p: impl Into<Payload<'a>>, expecting_login: bool) -> ClientPacket {
    let p = p.into();
    match client_kind(p, expecting_login) {
        ClientKind::AuthData => ClientPacket::AuthData { len: p.len as usize },
        ClientKind::Other => ClientPacket::Other { len: p.len },
        ClientKind::SslRequest { protocol41 } => {
            SslRequest::parse(p.bytes, protocol41).map_or(ClientPacket::Other { len: p.len }, ClientPacket::SslRequest)
        }
        ClientKind::Login { protocol41 } => ClientPacket::Login(Login::decode(p, protocol41)),
    }
}

impl Greeting {
    fn decode(p: Payload) -> Greeting {
        let l = GreetingLayout::of(p);
        let b = p.bytes;
        let part2 = l.scramble2.map_or(0, |s| s.len() - usize::from(s.of(b).last() == Some(&0)));
        Greeting {
            protocol: l.protocol.unwrap_or(0),
            server_version: l.server_version.string(b),
            connection_id: l.connection_id.unwrap_or(0),
            capabilities: l.capabilities,
            charset: l.charset.unwrap_or(0),
            status: l.status.unwrap_or(0),
            auth_plugin: l.auth_plugin.map(|t| t.string(b)),
            // Only the count of scramble bytes is kept, never the bytes.
            scramble_len: l.scramble1.len() + part2,
        }
    }
}

impl Login {
    fn decode(p: Payload, protocol41: bool) -> Login {
        Login::from_layout(&LoginLayout::of(p, protocol41), p)
    }

    /// The login `l` found in `p`: names and lengths, never the auth response's bytes.
    pub fn from_layout(l: &LoginLayout, p: Payload) -> Login {
        let b = p.bytes;
        Login {
            protocol41: l.protocol41,
            capabilities: l.capabilities,
            max_packet: l.max_packet.unwrap_or(0),
            charset: l.charset.unwrap_or(0),
            user: l.user.map(|t| t.string(b)).unwrap_or_default(),
            // Only the auth response's length is kept; its bytes are skipped.
            auth_response_len: l.auth_response.map_or(0, |a| a.len),
            database: l.database.map(|t| t.string(b)),
            auth_plugin: l.auth_plugin.map(|t| t.string(b)),
            attrs: l.attrs.map(|s| attr_pairs(s.of(b))).unwrap_or_default(),
            truncated: p.cut,
        }
    }
}

/// Connection attributes: only pairs wholly inside both the declared block and the capture.
fn attr_pairs(block: &[u8]) -> Attrs {
    let mut r = Reader::new(block);
    // The text is at most the block's bytes (less each pair's lengths), unless invalid
    // UTF-8 is replaced: one allocation, not one per doubling.
    let mut attrs = Attrs::with_capacity(block.len());
    while !r.is_empty() {
        let Some(key) = r.lenenc_bytes() else { break };
        let Some(value) = r.lenenc_bytes() else { break };
        attrs.push(&String::from_utf8_lossy(key), &String::from_utf8_lossy(value));
    }
    attrs
}

impl SslRequest {
    /// The fixed part of a login: 4.1 (caps 4, max packet 4, charset 1) or 3.20 (caps 2, max packet 3).
    fn parse(b: &[u8], protocol41: bool) -> Option<SslRequest> {
        let mut r = Reader::new(b);
        if protocol41 {
            Some(SslRequest { capabilities: r.u32()?, max_packet: r.u32()?, charset: r.u8()? })
        } else {
            Some(SslRequest { capabilities: u32::from(r.u16()?), max_packet: r.u24()?, charset: 0 })
        }
    }
}

impl OkPacket {
    pub fn parse(payload: &[u8]) -> OkPacket {
        let mut ok = OkPacket { affected_rows: 0, last_insert_id: 0, status: 0, warnings: 0 };
        let _ = ok.fields(&mut Reader::new(payload));
        ok
    }

    fn fields(&mut self, r: &mut Reader<'_>) -> Option<()> {
        r.u8()?;
        self.affected_rows = r.lenenc()?;
        self.last_insert_id = r.lenenc()?;
        self.status = r.u16()?;
        self.warnings = r.u16()?;
        Some(())
    }
}

impl ErrPacket {
    /// An ERR payload (0xff first), however short.
    pub fn parse(payload: &[u8]) -> ErrPacket {
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
}

impl AuthSwitch {
    fn decode(p: Payload) -> AuthSwitch {
        if p.len == 1 {
            // A bare 0xfe: the pre-plugin "switch to old password" request.
            return AuthSwitch { plugin: "mysql_old_password".to_string(), data_len: 0 };
        }
        let l = AuthSwitchLayout::of(p);
        let plugin = l.plugin.string(p.bytes);
        if !l.plugin.terminated {
            return AuthSwitch { plugin, data_len: 0 };
        }
        let mut data_len = (p.len as usize).saturating_sub(l.data.start);
        // Servers end the data with a NUL: not counted when we can see it.
        if data_len > 0 && p.bytes.len() == p.len as usize && p.bytes.last() == Some(&0) {
            data_len -= 1;
        }
        AuthSwitch { plugin, data_len }
    }
}
