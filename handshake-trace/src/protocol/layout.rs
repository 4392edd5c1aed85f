//! Where the fields of the handshake packets lie: one walk per packet form, shared by
//! the decoder (which reads names and lengths from the spans), the redactor (which
//! zeroes the bytes whose role is secret) and the lab (which needs the secrets' bytes
//! to check a password, and strict completeness).
//!
//! Every walk takes the payload captured so far; see [`super::walk`] for why a prefix
//! gets the same roles as the whole.
use super::capabilities::*;
use super::framing::Payload;
use super::reader::Reader;
use super::walk::{saturating_usize, Role, Roles, Span, Text, Walker};

/// Protocol version byte that starts a HandshakeV10 greeting.
pub const PROTOCOL_V10: u8 = 0x0a;

/// What a server packet of the handshake is, by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Err,
    Greeting,
    Ok,
    AuthSwitch,
    AuthMoreData,
    Other,
}

/// `after_greeting`: the greeting was already seen (0x0a is a greeting only before it;
/// 0x00, 0xfe and 0x01 mean OK, AuthSwitch and AuthMoreData only after it).
pub fn server_kind(first: Option<u8>, after_greeting: bool) -> ServerKind {
    match (first, after_greeting) {
        (Some(0xff), _) => ServerKind::Err,
        (Some(PROTOCOL_V10), false) => ServerKind::Greeting,
        (Some(0x00), true) => ServerKind::Ok,
        (Some(0xfe), true) => ServerKind::AuthSwitch,
        (Some(0x01), true) => ServerKind::AuthMoreData,
        _ => ServerKind::Other,
    }
}

/// What a client packet of the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Anything after the login: an answer to the server's auth exchange.
    AuthData,
    /// Too short to be a login (or its first two bytes were not captured).
    Other,
    /// The fixed part of a login alone, with CLIENT_SSL: TLS follows.
    SslRequest { protocol41: bool },
    /// HandshakeResponse41 or HandshakeResponse320.
    Login { protocol41: bool },
}

/// `expecting_login`: this is the client's first packet (or the first after TLS); the
/// 16 capability bits and the declared length tell the forms apart.
pub fn client_kind(p: Payload, expecting_login: bool) -> ClientKind {
    if !expecting_login {
        return ClientKind::AuthData;
    }
    let Some(caps16) = Reader::new(p.bytes).u16() else { return ClientKind::Other };
    let caps16 = u32::from(caps16);
    let ssl = caps16 & CLIENT_SSL != 0;
    if caps16 & CLIENT_PROTOCOL_41 != 0 {
        // Fixed part: caps 4, max_packet 4, charset 1, filler 23.
        match p.len {
            0..32 => ClientKind::Other,
            32 if ssl => ClientKind::SslRequest { protocol41: true },
            _ => ClientKind::Login { protocol41: true },
        }
    } else {
        // Pre-4.1: caps 2, max_packet 3 (alone in an SSL request), then at least the user's NUL.
        match p.len {
            5 if ssl => ClientKind::SslRequest { protocol41: false },
            0..6 => ClientKind::Other,
            _ => ClientKind::Login { protocol41: false },
        }
    }
}

/// The role of each byte of a server packet's payload, as far as `p` places them.
pub fn server_roles(p: Payload, after_greeting: bool) -> Roles {
    let len = p.len as usize;
    match server_kind(p.bytes.first().copied(), after_greeting) {
        ServerKind::Err | ServerKind::Ok => Roles::from_runs(&[(len, Role::Public)]),
        ServerKind::Greeting => GreetingLayout::of(p).roles,
        ServerKind::AuthSwitch => AuthSwitchLayout::of(p).roles,
        // AuthMoreData's data, and whatever else: the decoder shows the first byte and the length.
        ServerKind::AuthMoreData | ServerKind::Other => Roles::from_runs(&[(1, Role::Public), (len, Role::Secret)]),
    }
}

/// The role of each byte of a client packet's payload, as far as `p` places them.
pub fn client_roles(p: Payload, expecting_login: bool) -> Roles {
    let len = p.len as usize;
    match client_kind(p, expecting_login) {
        ClientKind::AuthData => Roles::from_runs(&[(len, Role::Secret)]),
        // The decoder shows the length only; the capability bits decided that.
        ClientKind::Other => Roles::from_runs(&[(2, Role::Public), (len, Role::Secret)]),
        ClientKind::SslRequest { .. } => Roles::from_runs(&[(len, Role::Public)]),
        ClientKind::Login { protocol41 } => LoginLayout::of(p, protocol41).roles,
    }
}

/// HandshakeV10, the server's first packet.
#[derive(Debug, Clone, Default)]
pub struct GreetingLayout {
    pub protocol: Option<u8>,
    pub server_version: Text,
    pub connection_id: Option<u32>,
    /// Scramble part 1 as captured (8 bytes when whole).
    pub scramble1: Span,
    /// As far as captured: the lower 16 bits alone when the upper ones are missing.
    pub capabilities: u32,
    pub charset: Option<u8>,
    pub status: Option<u16>,
    /// The auth-plugin-data length byte.
    pub auth_data_len: Option<u8>,
    /// Scramble part 2 as captured, its NUL terminator included when there; None
    /// without CLIENT_SECURE_CONNECTION or when the fixed part before it is cut.
    pub scramble2: Option<Span>,
    pub auth_plugin: Option<Text>,
    pub roles: Roles,
}

impl GreetingLayout {
    pub fn of(p: Payload) -> Self {
        let mut w = Walker::new(p);
        let mut g = GreetingLayout::default();
        // Fields missing at the end keep their defaults.
        let _ = g.walk(&mut w);
        g.roles = w.roles();
        g
    }

    fn walk(&mut self, w: &mut Walker<'_>) -> Option<()> {
        self.protocol = Some(w.u8()?);
        self.server_version = w.cstr(Role::Public);
        self.connection_id = Some(w.u32()?);
        w.mark(8, Role::Secret);
        self.scramble1 = w.span_up_to(8);
        w.u8()?; // filler
        self.capabilities = u32::from(w.u16()?);
        self.charset = Some(w.u8()?);
        self.status = Some(w.u16()?);
        self.capabilities |= u32::from(w.u16()?) << 16;
        let data_len = w.u8()?;
        self.auth_data_len = Some(data_len);
        // 6 reserved bytes, then 4 that MariaDB uses for its extended capabilities.
        w.public(10)?;
        if self.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            // The decoder leaves part 2's last byte out of the count when it is the NUL
            // terminator: the declared last byte, or the last one captured.
            let n = 13.max(usize::from(data_len).saturating_sub(8));
            w.mark(n - 1, Role::SecretNulAtEnd);
            w.mark(n, Role::SecretNul);
            self.scramble2 = Some(w.span_up_to(n));
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            self.auth_plugin = w.string_z();
        }
        // Nothing after is read.
        w.rest(Role::Secret);
        Some(())
    }
}

/// An auth response as a login carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthResponse {
    /// Its bytes as captured.
    pub span: Span,
    /// Its length as the decoder reports it: declared, or counted up to its NUL.
    pub len: usize,
    /// Wholly captured (NUL-terminated, where that is its form).
    pub whole: bool,
}

/// HandshakeResponse41 or HandshakeResponse320, the client's login.
#[derive(Debug, Clone, Default)]
pub struct LoginLayout {
    pub protocol41: bool,
    /// As far as captured: the 16 bits alone when the 4.1 form's 32 are cut.
    pub capabilities: u32,
    pub max_packet: Option<u32>,
    pub charset: Option<u8>,
    pub user: Option<Text>,
    pub auth_response: Option<AuthResponse>,
    pub database: Option<Text>,
    pub auth_plugin: Option<Text>,
    /// The connection attributes block as captured, within its declared length.
    pub attrs: Option<Span>,
    pub roles: Roles,
    /// Read on past a NUL-terminated auth response, as a server does ([`LoginLayout::as_server_reads`]).
    server_view: bool,
}

impl LoginLayout {
    /// A login of the form [`client_kind`] found, as the tracer shows it: nothing after a
    /// NUL-terminated auth response is read (it may be more of the response).
    pub fn of(p: Payload, protocol41: bool) -> Self {
        Self::walk(p, protocol41, false)
    }

    /// The login as a server reads it (the lab's server): after a NUL-terminated auth
    /// response, the database (and in the 4.1 form the plugin and attributes) follow
    /// its first NUL. The roles are the tracer's.
    pub fn as_server_reads(p: Payload, protocol41: bool) -> Self {
        Self::walk(p, protocol41, true)
    }

    fn walk(p: Payload, protocol41: bool, server_view: bool) -> Self {
        let mut w = Walker::new(p);
        let capabilities = Reader::new(p.bytes).u16().map_or(0, u32::from);
        let mut l = LoginLayout { protocol41, capabilities, server_view, ..Default::default() };
        let _ = if protocol41 { l.walk41(&mut w) } else { l.walk320(&mut w) };
        l.roles = w.roles();
        l
    }

    fn walk41(&mut self, w: &mut Walker<'_>) -> Option<()> {
        self.capabilities = w.u32()?;
        self.max_packet = Some(w.u32()?);
        self.charset = Some(w.u8()?);
        // Filler; MariaDB clients put their extended capabilities in its last 4 bytes.
        w.public(23)?;
        self.user = Some(w.string_z()?);
        let caps = self.capabilities;
        let auth = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            let n = w.lenenc()?;
            length_prefixed(w, saturating_usize(n))
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = w.u8()?;
            length_prefixed(w, usize::from(n))
        } else {
            let auth = nul_terminated_response(w);
            if !self.server_view {
                self.auth_response = Some(auth);
                return None;
            }
            auth
        };
        self.auth_response = Some(auth);
        if !auth.whole {
            return None;
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            self.database = Some(w.string_z()?);
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            self.auth_plugin = Some(w.string_z()?);
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            let total = w.lenenc()?;
            self.attrs = Some(w.span_up_to(saturating_usize(total)));
        }
        Some(())
    }

    fn walk320(&mut self, w: &mut Walker<'_>) -> Option<()> {
        w.u16()?; // the capabilities, read already
        self.max_packet = Some(w.u24()?);
        self.user = Some(w.string_z()?);
        let auth = nul_terminated_response(w);
        self.auth_response = Some(auth);
        if self.server_view && auth.whole && self.capabilities & CLIENT_CONNECT_WITH_DB != 0 {
            self.database = Some(w.string_z()?);
        }
        Some(())
    }
}

/// An auth response ended by a NUL (logins without CLIENT_SECURE_CONNECTION), as the
/// server reads it: up to its first NUL. A binary response (a 4.1 scramble) may hold
/// zero bytes, so what follows that NUL may be the rest of it: the rest of the packet
/// is secret, and no database, plugin or attributes are read from it.
fn nul_terminated_response(w: &mut Walker<'_>) -> AuthResponse {
    let t = w.cstr(Role::SecretNul);
    w.rest(Role::Secret);
    // Unterminated in a whole packet: the response runs to its end.
    let whole = t.terminated || !w.is_cut();
    let len = if whole { t.span.len() } else { w.len().saturating_sub(t.span.start) };
    AuthResponse { span: t.span, len, whole }
}

/// An auth response of `n` bytes after its length; what follows it is public.
fn length_prefixed(w: &mut Walker<'_>, n: usize) -> AuthResponse {
    w.mark(n, Role::Secret);
    w.rest(Role::Public);
    let span = w.span_up_to(n);
    AuthResponse { span, len: n, whole: span.len() == n }
}

/// AuthSwitchRequest: 0xfe, the plugin's name, its data (a scramble, a nonce).
#[derive(Debug, Clone, Default)]
pub struct AuthSwitchLayout {
    pub plugin: Text,
    /// The plugin data as captured, a trailing NUL included (empty when the name is not terminated).
    pub data: Span,
    pub roles: Roles,
}

impl AuthSwitchLayout {
    pub fn of(p: Payload) -> Self {
        let mut w = Walker::new(p);
        let _ = w.u8();
        let plugin = w.cstr(Role::Public);
        // Servers end the data with a NUL that the decoder does not count: the last
        // byte's NUL-ness shows.
        w.mark_to(w.len().saturating_sub(1), Role::Secret);
        w.rest(Role::SecretNul);
        let data = if plugin.terminated { w.span_up_to(usize::MAX) } else { Span { start: w.pos(), end: w.pos() } };
        AuthSwitchLayout { plugin, data, roles: w.roles() }
    }
}
