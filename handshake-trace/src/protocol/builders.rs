//! Building payloads: what the lab's server and client send, and the reference packets
//! the tests feed the decoder and the redactor. Frame them with [`super::frame`].
use super::capabilities::*;
use super::layout::PROTOCOL_V10;

/// Appends a length-encoded integer.
pub fn push_lenenc_int(out: &mut Vec<u8>, n: u64) {
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

/// Appends a length-encoded string.
pub fn push_lenenc_bytes(out: &mut Vec<u8>, s: &[u8]) {
    push_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Appends a NUL-terminated string, cut at an embedded NUL so the field stays parseable.
pub fn push_cstr(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.extend_from_slice(&bytes[..end]);
    out.push(0);
}

/// What a HandshakeV10 greeting says.
#[derive(Debug, Clone, Copy)]
pub struct GreetingSpec<'a> {
    pub server_version: &'a str,
    pub connection_id: u32,
    /// Parts 1 (8 bytes) and 2 (12 bytes, sent with CLIENT_SECURE_CONNECTION).
    pub scramble: &'a [u8; 20],
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    /// MariaDB's extended capabilities, in the last 4 of the 10 reserved bytes.
    pub extended_capabilities: u32,
    /// Sent with CLIENT_PLUGIN_AUTH.
    pub auth_plugin: &'a str,
}

/// A HandshakeV10 payload: protocol 10, the version NUL-terminated, connection id,
/// scramble part 1 + filler 0, capabilities' lower 16 bits, charset, status, upper 16
/// bits, auth-plugin-data length (21 with CLIENT_PLUGIN_AUTH, else 0), 10 reserved
/// bytes, scramble part 2 + NUL (with CLIENT_SECURE_CONNECTION), the plugin NUL-terminated
/// (with CLIENT_PLUGIN_AUTH).
pub fn greeting(g: &GreetingSpec) -> Vec<u8> {
    let mut p = Vec::with_capacity(96);
    p.push(PROTOCOL_V10);
    push_cstr(&mut p, g.server_version);
    p.extend_from_slice(&g.connection_id.to_le_bytes());
    p.extend_from_slice(&g.scramble[..8]);
    p.push(0);
    p.extend_from_slice(&(g.capabilities as u16).to_le_bytes());
    p.push(g.charset);
    p.extend_from_slice(&g.status.to_le_bytes());
    p.extend_from_slice(&((g.capabilities >> 16) as u16).to_le_bytes());
    p.push(if g.capabilities & CLIENT_PLUGIN_AUTH != 0 { 21 } else { 0 });
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&g.extended_capabilities.to_le_bytes());
    if g.capabilities & CLIENT_SECURE_CONNECTION != 0 {
        p.extend_from_slice(&g.scramble[8..]);
        p.push(0);
    }
    if g.capabilities & CLIENT_PLUGIN_AUTH != 0 {
        push_cstr(&mut p, g.auth_plugin);
    }
    p
}

/// What a HandshakeResponse41 says.
#[derive(Debug, Clone, Copy)]
pub struct LoginSpec<'a> {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    /// MariaDB's extended capabilities, in the last 4 of the 23 filler bytes.
    pub extended_capabilities: u32,
    pub user: &'a str,
    /// Length-encoded with CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, after a 1-byte length
    /// with CLIENT_SECURE_CONNECTION (cut to 255 bytes), else NUL-terminated.
    pub auth_response: &'a [u8],
    /// Sent with CLIENT_CONNECT_WITH_DB.
    pub database: &'a str,
    /// Sent with CLIENT_PLUGIN_AUTH.
    pub auth_plugin: &'a str,
    /// Sent with CLIENT_CONNECT_ATTRS.
    pub attrs: &'a [(&'a str, &'a str)],
}

/// An SSLRequest payload: a login's 32-byte fixed part (set CLIENT_SSL in `capabilities`).
pub fn ssl_request(capabilities: u32, max_packet: u32, charset: u8, extended_capabilities: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&capabilities.to_le_bytes());
    p.extend_from_slice(&max_packet.to_le_bytes());
    p.push(charset);
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&extended_capabilities.to_le_bytes());
    p
}

/// A HandshakeResponse41 payload, its optional fields present as its capabilities say.
pub fn login(l: &LoginSpec) -> Vec<u8> {
    let caps = l.capabilities;
    let mut p = ssl_request(caps, l.max_packet, l.charset, l.extended_capabilities);
    push_cstr(&mut p, l.user);
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        push_lenenc_bytes(&mut p, l.auth_response);
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let auth = &l.auth_response[..l.auth_response.len().min(255)];
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
    } else {
        p.extend_from_slice(l.auth_response);
        p.push(0);
    }
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        push_cstr(&mut p, l.database);
    }
    if caps & CLIENT_PLUGIN_AUTH != 0 {
        push_cstr(&mut p, l.auth_plugin);
    }
    if caps & CLIENT_CONNECT_ATTRS != 0 {
        let mut attrs = Vec::new();
        for (k, v) in l.attrs {
            push_lenenc_bytes(&mut attrs, k.as_bytes());
            push_lenenc_bytes(&mut attrs, v.as_bytes());
        }
        push_lenenc_bytes(&mut p, &attrs);
    }
    p
}

/// An AuthSwitchRequest payload: 0xfe, the plugin NUL-terminated, its data as given.
pub fn auth_switch(plugin: &str, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0xfe];
    push_cstr(&mut p, plugin);
    p.extend_from_slice(data);
    p
}

/// An OK payload: 0x00, affected rows 0, last insert id 0, `status`, warnings 0.
pub fn ok(status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    vec![0x00, 0, 0, s[0], s[1], 0, 0]
}

/// An ERR payload: 0xff, code, '#', the 5-character SQLSTATE, message. A `sqlstate`
/// that is not 5 ASCII characters becomes the generic "HY000".
pub fn err(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let state = if sqlstate.len() == 5 && sqlstate.is_ascii() { sqlstate } else { "HY000" };
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(0xff);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

/// An EOF payload (for clients without CLIENT_DEPRECATE_EOF): 0xfe, warnings 0, `status`.
pub fn eof(status: u16) -> Vec<u8> {
    let s = status.to_le_bytes();
    vec![0xfe, 0, 0, s[0], s[1]]
}

/// A ColumnDefinition41 payload for a VAR_STRING column: catalog "def", empty schema,
/// table and original table, `name` as name and original name, charset, length 255.
pub fn column_definition(name: &str, charset: u8) -> Vec<u8> {
    let mut def = Vec::with_capacity(32 + 2 * name.len());
    for s in ["def", "", "", "", name, name] {
        push_lenenc_bytes(&mut def, s.as_bytes());
    }
    def.push(0x0c); // length of the fixed-size fields below
    def.extend_from_slice(&u16::from(charset).to_le_bytes());
    def.extend_from_slice(&255u32.to_le_bytes());
    def.push(0xfd); // MYSQL_TYPE_VAR_STRING
    def.extend_from_slice(&0u16.to_le_bytes()); // flags
    def.push(0); // decimals
    def.extend_from_slice(&[0, 0]);
    def
}

/// A text result row: each value length-encoded, NULL as 0xfb.
pub fn text_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in values {
        match v {
            Some(v) => push_lenenc_bytes(&mut p, v.as_bytes()),
            None => p.push(0xfb),
        }
    }
    p
}

/// The capability flags that change where a login's fields lie (for tests that try
/// every layout).
pub const LOGIN_LAYOUT_FLAGS: [u32; 5] = [
    CLIENT_SECURE_CONNECTION,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_PLUGIN_AUTH,
    CLIENT_CONNECT_ATTRS,
];

/// A login of user `lab` (database `shop`, plugin `mysql_native_password`, one
/// attribute: `_client_name` = `libmariadb`) carrying `auth`, as HandshakeResponse41 or
/// (not `protocol41`) HandshakeResponse320, with the `optional` flags of
/// [`LOGIN_LAYOUT_FLAGS`] the form has. Returns the payload and where `auth` lies in it.
pub fn login_of_layout(protocol41: bool, optional: u32, auth: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    if protocol41 {
        let body = login(&LoginSpec {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_LONG_PASSWORD | optional,
            max_packet: 1 << 24,
            charset: 45,
            extended_capabilities: 0,
            user: "lab",
            auth_response: auth,
            database: "shop",
            auth_plugin: "mysql_native_password",
            attrs: &[("_client_name", "libmariadb")],
        });
        // After the fixed part, "lab\0" and the response's length (unless NUL-terminated).
        let prefixed = optional & (CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) != 0;
        let start = 32 + 4 + usize::from(prefixed);
        return (body, start..start + auth.len());
    }
    // caps u16, max packet u24, user, the response NUL-terminated, the database.
    let caps = CLIENT_LONG_PASSWORD | (optional & CLIENT_CONNECT_WITH_DB);
    let mut b = (caps as u16).to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff]);
    push_cstr(&mut b, "lab");
    let start = b.len();
    b.extend_from_slice(auth);
    b.push(0);
    if caps & CLIENT_CONNECT_WITH_DB != 0 {
        push_cstr(&mut b, "shop");
    }
    (b, start..start + auth.len())
}
