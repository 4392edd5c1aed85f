//! Keeping secrets out of trace files. Pure: no aya, no I/O.
//!
//! IO records carry the first bytes of each read and write of a connection in its
//! handshake. Before a record is saved, [`Redactor`] overwrites the secrets in it
//! with zeros: the greeting's scramble, the login's auth response, AuthSwitchRequest
//! plugin data, AuthMoreData, every client packet after the login (auth data), and
//! everything once the connection switched to TLS. Lengths, `captured` and packet
//! headers are kept, so a replay sees the same packets and the decoder
//! (`crate::protocol`) shows the same user, database, plugin, lengths and errors.
//!
//! The redactor follows each direction's byte stream itself, with the same rules as
//! `protocol::PacketStream` and the correlator (which packet is a login, when a greeting
//! was seen, when TLS starts), and fails safe: bytes it cannot place are zeroed.
//!
//! Where the decoder looks at whether a secret byte is NUL (NUL-terminated auth
//! responses, the greeting's scramble part 2 and the AuthSwitch data end, whose last
//! byte may be a terminator), a non-NUL secret byte becomes [`FILLER`] instead of 0.
use std::collections::{BTreeMap, HashMap};
use std::mem::{offset_of, size_of};

use handshake_trace_common::{kind, sys, AcceptEvent, EventHeader, IoEvent, SysEvent, PAYLOAD_MAX, SYS_TRACKING_END};

use crate::protocol::{
    CLIENT_CONNECT_WITH_DB, CLIENT_PLUGIN_AUTH, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION, CLIENT_SSL, PROTOCOL_V10,
};

/// Connections followed at once; the oldest is forgotten beyond this (its later
/// payloads are then zeroed whole).
pub const MAX_CONNECTIONS: usize = 16384;

/// Replaces a secret byte that is not NUL where the decoder tells NUL from non-NUL.
pub const FILLER: u8 = b'*';

/// `recv(2)` flag: the bytes stay queued and will be read again.
const MSG_PEEK: u64 = 2;

/// A login longer than this is taken for lost framing: real ones are well under 64 KiB
/// (connect attributes included), while a body misread as a header (a lost record)
/// yields the capability flags as the length, ≥ 512 KiB for every modern client.
const MAX_LOGIN_LEN: u32 = 0x1_1000;

/// What to do with one payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Keep,
    Zero,
    /// Secret, but its NUL-ness is visible to the decoder: NUL stays, others become FILLER.
    Mask,
}

fn apply(b: &mut u8, act: Act) {
    match act {
        Act::Keep => {}
        Act::Zero => *b = 0,
        Act::Mask => {
            if *b != 0 {
                *b = FILLER;
            }
        }
    }
}

/// Redacts raw kernel records, following every connection from its accept.
pub struct Redactor {
    conns: HashMap<(u32, i32), Conn>,
    /// Connections by age (serial → key), to forget the oldest.
    order: BTreeMap<u64, (u32, i32)>,
    next_serial: u64,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

// Connection state can hold a few bytes of a packet header: nothing shown.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("connections", &self.conns.len()).finish()
    }
}

impl Redactor {
    pub fn new() -> Self {
        Redactor { conns: HashMap::new(), order: BTreeMap::new(), next_serial: 0 }
    }

    /// Connections currently followed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Redact one raw kernel record in place (only IO records change; others pass
    /// through, but accept, close, tracking-end and exit records update the state).
    /// Never panics, whatever the bytes.
    pub fn redact(&mut self, raw: &mut [u8]) {
        let Some(k) = rd_u32(raw, offset_of!(EventHeader, kind)) else { return };
        match k {
            kind::ACCEPT => self.on_accept(raw),
            kind::SYSCALL => self.on_syscall(raw),
            kind::IO => self.on_io(raw),
            kind::PROCESS_EXIT => {
                if let Some(pid) = rd_u32(raw, offset_of!(EventHeader, pid)) {
                    self.conns.retain(|key, _| key.0 != pid);
                    self.order.retain(|_, key| key.0 != pid);
                }
            }
            _ => {}
        }
    }

    fn on_accept(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<AcceptEvent>() {
            return;
        }
        let h = offset_of!(AcceptEvent, header);
        let (Some(pid), Some(fd), Some(gen)) = (
            rd_u32(raw, h + offset_of!(EventHeader, pid)),
            rd_i32(raw, offset_of!(AcceptEvent, ret)),
            rd_u64(raw, offset_of!(AcceptEvent, conn_gen)),
        ) else {
            return;
        };
        if fd < 0 {
            return;
        }
        // A reused fd: the old connection ended unseen.
        if let Some(old) = self.conns.remove(&(pid, fd)) {
            self.order.remove(&old.serial);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.conns.insert((pid, fd), Conn::new(gen, serial));
        self.order.insert(serial, (pid, fd));
        while self.conns.len() > MAX_CONNECTIONS {
            let Some((_, key)) = self.order.pop_first() else { break };
            self.conns.remove(&key);
        }
    }

    fn on_syscall(&mut self, raw: &[u8]) {
        if raw.len() < size_of::<SysEvent>() {
            return;
        }
        let (Some(pid), Some(gen), Some(fd), Some(syscall)) = (
            rd_u32(raw, offset_of!(SysEvent, header) + offset_of!(EventHeader, pid)),
            rd_u64(raw, offset_of!(SysEvent, conn_gen)),
            rd_i32(raw, offset_of!(SysEvent, fd)),
            rd_u32(raw, offset_of!(SysEvent, syscall)),
        ) else {
            return;
        };
        if syscall == sys::CLOSE || syscall == SYS_TRACKING_END {
            if let Some(c) = self.conns.get(&(pid, fd)) {
                if c.gen == gen {
                    self.order.remove(&c.serial);
                    self.conns.remove(&(pid, fd));
                }
            }
        }
    }

    fn on_io(&mut self, raw: &mut [u8]) {
        let p0 = offset_of!(IoEvent, payload);
        if raw.len() < size_of::<IoEvent>() {
            // Undecodable, but it may still hold payload bytes.
            if raw.len() > p0 {
                raw[p0..].fill(0);
            }
            return;
        }
        // Bytes past the struct are ignored by the decoder: they carry nothing.
        raw[size_of::<IoEvent>()..].fill(0);
        let s = offset_of!(IoEvent, sys);
        let args = s + offset_of!(SysEvent, args);
        let field = |off: usize| rd_u64(raw, off).unwrap_or(0);
        let pid = rd_u32(raw, s + offset_of!(SysEvent, header) + offset_of!(EventHeader, pid)).unwrap_or(0);
        let gen = field(s + offset_of!(SysEvent, conn_gen));
        let ret = rd_i64(raw, s + offset_of!(SysEvent, ret)).unwrap_or(0);
        let (arg0, arg1) = (field(args), field(args + 8));
        let fd = rd_i32(raw, s + offset_of!(SysEvent, fd)).unwrap_or(-1);
        let syscall = rd_u32(raw, s + offset_of!(SysEvent, syscall)).unwrap_or(0);
        let captured = rd_u32(raw, offset_of!(IoEvent, captured)).unwrap_or(0);

        // What the stream really moved: the captured prefix, then uncaptured bytes.
        let total = u64::try_from(ret).unwrap_or(0);
        let known = u64::from(captured).min(PAYLOAD_MAX as u64).min(total) as usize;
        let gap = total - known as u64;
        let payload = &mut raw[p0..p0 + PAYLOAD_MAX];
        // The ring buffer does not clear a record: bytes past `captured` are left
        // over from earlier records (other payloads) and must not reach a file.
        payload[known..].fill(0);
        let data = &mut payload[..known];

        let from_client = match syscall {
            sys::READ | sys::READV | sys::RECVFROM | sys::RECVMSG => true,
            sys::WRITE | sys::WRITEV | sys::SENDTO | sys::SENDMSG => false,
            _ => {
                data.fill(0);
                return;
            }
        };
        let conn = match self.conns.get_mut(&(pid, fd)) {
            Some(c) if c.gen == gen => c,
            // Its accept was not seen (lost, or forgotten): no way to place secrets.
            _ => {
                data.fill(0);
                return;
            }
        };
        // recvfrom(fd, buf, len, flags): args [len, flags]; recvmsg(fd, msg, flags): args [flags, ..].
        let peek = match syscall {
            sys::RECVFROM => arg1 & MSG_PEEK != 0,
            sys::RECVMSG => arg0 & MSG_PEEK != 0,
            _ => false,
        };
        // read(fd, buf, count) and recvfrom: args[0] is the size asked for.
        let requested = matches!(syscall, sys::READ | sys::RECVFROM).then_some(arg0);
        if peek {
            // The same bytes will be read again: redact them as they will be then,
            // without consuming them.
            conn.clone().io(from_client, data, gap, requested);
        } else {
            conn.io(from_client, data, gap, requested);
        }
    }
}

fn rd<const N: usize>(raw: &[u8], off: usize) -> Option<[u8; N]> {
    raw.get(off..off.checked_add(N)?)?.try_into().ok()
}

// Records are in the machine's byte order (they come from its kernel).
fn rd_u32(raw: &[u8], off: usize) -> Option<u32> {
    rd(raw, off).map(u32::from_ne_bytes)
}

fn rd_i32(raw: &[u8], off: usize) -> Option<i32> {
    rd(raw, off).map(i32::from_ne_bytes)
}

fn rd_u64(raw: &[u8], off: usize) -> Option<u64> {
    rd(raw, off).map(u64::from_ne_bytes)
}

fn rd_i64(raw: &[u8], off: usize) -> Option<i64> {
    rd(raw, off).map(i64::from_ne_bytes)
}

/// One connection: both directions and what the correlator would know about it.
#[derive(Clone)]
struct Conn {
    gen: u64,
    serial: u64,
    /// The client switched to TLS: every later payload byte is zeroed.
    tls: bool,
    client: Dir,
    server: Dir,
    seen: Seen,
}

/// Protocol state both directions need.
#[derive(Clone, Default)]
struct Seen {
    /// A greeting was decoded (the correlator's `greeting.is_some()`).
    greeting: bool,
    /// A login was decoded (the correlator's `login.is_some()`).
    login: bool,
    last_client_seq: Option<u8>,
    last_server_seq: Option<u8>,
}

impl Conn {
    fn new(gen: u64, serial: u64) -> Self {
        Conn { gen, serial, tls: false, client: Dir::new(true), server: Dir::new(false), seen: Seen::default() }
    }

    fn io(&mut self, from_client: bool, data: &mut [u8], gap: u64, requested: Option<u64>) {
        if data.is_empty() && gap == 0 {
            return;
        }
        if self.tls {
            data.fill(0);
            return;
        }
        let (this, other) = if from_client { (&mut self.client, &mut self.server) } else { (&mut self.server, &mut self.client) };
        // The handshake is half duplex: a side speaks only after the other's packet is
        // whole. One still unfinished means records were lost (the ring buffer was
        // full): its framing cannot be trusted any more.
        if other.mid_packet() {
            other.framing = Framing::Lost;
        }
        // MySQL and MariaDB read a header, then exactly the rest of the packet (or into a
        // large buffer). Asking for less than the packet still lacks means bytes of it
        // went by unseen (a lost record): offsets inside the packet are wrong.
        if requested.is_some_and(|r| r < this.still_needed()) {
            this.framing = Framing::Lost;
        }
        // Like the correlator: a read starting with a TLS handshake record switches to
        // TLS after its bytes went through the packet stream.
        let mut tls = from_client && data.len() >= 2 && data[0] == 0x16 && data[1] == 0x03;
        this.feed(data, gap, &mut self.seen, &mut tls);
        if tls {
            self.tls = true;
        }
    }
}

/// One direction's byte stream.
#[derive(Clone)]
struct Dir {
    from_client: bool,
    /// Stream offset of the next byte (captured or not); meaningful while in sync.
    offset: u64,
    framing: Framing,
}

#[derive(Clone)]
enum Framing {
    Header { buf: [u8; 4], have: usize },
    Body(Packet),
    /// Packet boundaries lost for good: every later byte is zeroed.
    Lost,
}

/// The packet being received.
#[derive(Clone)]
struct Packet {
    len: u32,
    /// Stream offset of the body's first byte.
    body_start: u64,
    /// Body bytes captured before any gap (what the decoder will see).
    captured: u32,
    /// Part of the body was not captured: the decoder ignores bytes after the gap.
    gapped: bool,
    /// Started after TLS began in the same read: framing only, body zeroed.
    tls_tail: bool,
    parse: Parse,
}

impl Dir {
    fn new(from_client: bool) -> Self {
        Dir { from_client, offset: 0, framing: Framing::Header { buf: [0; 4], have: 0 } }
    }

    /// Bytes until the current header or packet is complete.
    fn still_needed(&self) -> u64 {
        match &self.framing {
            Framing::Header { have, .. } => (4 - *have) as u64,
            Framing::Body(p) => u64::from(p.len).saturating_sub(self.offset.wrapping_sub(p.body_start)),
            Framing::Lost => 0,
        }
    }

    fn mid_packet(&self) -> bool {
        match &self.framing {
            Framing::Header { have, .. } => *have > 0,
            Framing::Body(_) => true,
            Framing::Lost => false,
        }
    }

    /// One syscall's transfer: `data` captured, then `gap` bytes not captured.
    /// `tls`: TLS started in this transfer; set when an SSLRequest completes.
    fn feed(&mut self, data: &mut [u8], gap: u64, seen: &mut Seen, tls: &mut bool) {
        let mut i = 0;
        // Where the current header's bytes start in `data` (0 if it began earlier).
        let mut header_from = 0;
        while i < data.len() {
            match &mut self.framing {
                Framing::Lost => {
                    data[i..].fill(0);
                    i = data.len();
                }
                Framing::Header { buf, have } => {
                    if *have == 0 {
                        header_from = i;
                    }
                    buf[*have] = data[i];
                    *have += 1;
                    i += 1;
                    self.offset = self.offset.wrapping_add(1);
                    if *have == 4 {
                        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]);
                        let seq = buf[3];
                        if !*tls && !self.plausible(seq, len, seen) {
                            // Misframed: this "header" may be secret bytes.
                            data[header_from..i].fill(0);
                            self.framing = Framing::Lost;
                            continue;
                        }
                        self.start_packet(seq, len, seen, *tls);
                    }
                }
                Framing::Body(p) => {
                    let pos = self.offset.wrapping_sub(p.body_start);
                    let left = u64::from(p.len).saturating_sub(pos);
                    let n = left.min((data.len() - i) as u64) as usize;
                    for j in 0..n {
                        let at = pos as u32 + j as u32;
                        // Bytes after a gap never reach the decoder; TLS-tail bodies parse as Zero.
                        let act = if p.gapped {
                            Act::Zero
                        } else {
                            // The decoder's payload ends here when the packet does, or a gap follows.
                            let capture_end = at + 1 == p.len || (i + j + 1 == data.len() && gap > 0);
                            p.captured += 1;
                            p.parse.step(at, data[i + j], p.len, capture_end, seen)
                        };
                        apply(&mut data[i + j], act);
                    }
                    i += n;
                    self.offset = self.offset.wrapping_add(n as u64);
                    if n as u64 == left {
                        self.finish_packet(seen, tls);
                    }
                }
            }
        }
        let mut gap = gap;
        while gap > 0 {
            match &mut self.framing {
                Framing::Lost => break,
                // A header in uncaptured bytes: boundaries are lost (as PacketStream's Desynced).
                Framing::Header { .. } => {
                    self.framing = Framing::Lost;
                    break;
                }
                Framing::Body(p) => {
                    let left = u64::from(p.len).saturating_sub(self.offset.wrapping_sub(p.body_start));
                    let n = left.min(gap);
                    p.gapped = true;
                    self.offset = self.offset.wrapping_add(n);
                    gap -= n;
                    if n == left {
                        self.finish_packet(seen, tls);
                    }
                }
            }
        }
    }

    /// Does this header fit the conversation? Sequence ids count up across both
    /// directions; a header read from the middle of data (a lost record) rarely fits.
    fn plausible(&self, seq: u8, len: u32, seen: &Seen) -> bool {
        let after = |last: Option<u8>| last.map(|s| s.wrapping_add(1)) == Some(seq);
        if self.from_client {
            if !seen.login {
                // The login (or SSLRequest) answers the greeting (seq 0).
                seq == 1 && len <= MAX_LOGIN_LEN
            } else {
                // Auth data answers the server; seq 0 starts a command a client pipelined.
                seq == 0 || after(seen.last_server_seq) || after(seen.last_client_seq)
            }
        } else {
            match seen.last_server_seq {
                // The greeting, or (greeting lost) a reply to the login.
                None => seq == 0 || after(seen.last_client_seq),
                // One client packet (or a few, pipelined) in between at most.
                Some(last) => (1..=4).contains(&seq.wrapping_sub(last)),
            }
        }
    }

    fn start_packet(&mut self, seq: u8, len: u32, seen: &mut Seen, tls_tail: bool) {
        if self.from_client {
            seen.last_client_seq = Some(seq);
        } else {
            seen.last_server_seq = Some(seq);
        }
        let parse = if tls_tail {
            Parse::Zero
        } else if !self.from_client {
            Parse::ServerFirst
        } else if !seen.login {
            Parse::LoginFirst { caps0: 0 }
        } else {
            // Auth data (or a pipelined command): the decoder shows its length only.
            Parse::Zero
        };
        let p = Packet { len, body_start: self.offset, captured: 0, gapped: false, tls_tail, parse };
        self.framing = Framing::Body(p);
        if len == 0 {
            let mut no_tls = false;
            self.finish_packet(seen, &mut no_tls);
        }
    }

    /// The packet is whole (captured or not): what decoding it tells the correlator.
    fn finish_packet(&mut self, seen: &mut Seen, tls: &mut bool) {
        let Framing::Body(p) = std::mem::replace(&mut self.framing, Framing::Header { buf: [0; 4], have: 0 }) else {
            return;
        };
        if p.tls_tail {
            return;
        }
        match p.parse {
            Parse::Greeting(_) => seen.greeting = true,
            Parse::Login41(_) | Parse::Login320(_) => seen.login = true,
            // decode_client needs the SSLRequest's fixed fields to call it one.
            Parse::Ssl { needs } if p.captured >= needs => *tls = true,
            _ => {}
        }
    }
}

/// Where a packet's secrets are, learned byte by byte (a packet can arrive in any pieces).
#[derive(Clone)]
enum Parse {
    Zero,
    Keep,
    /// Keep the first `n` body bytes (what the decoder shows), zero the rest.
    KeepFirst(u32),
    /// A client packet while no login was seen, until its capabilities are known.
    LoginFirst { caps0: u8 },
    /// A server packet, until its first byte is known.
    ServerFirst,
    Greeting(Greeting),
    Login41(Login41),
    Login320(Login320),
    /// An SSLRequest: kept; it switches to TLS when `needs` bytes were captured.
    Ssl { needs: u32 },
    /// AuthSwitchRequest: plugin name kept, plugin data secret.
    AuthSwitch { name_done: bool },
}

impl Parse {
    /// The fate of body byte `i` (value `b`) of a packet of `len` bytes; `capture_end`:
    /// the decoder's payload ends with this byte.
    fn step(&mut self, i: u32, b: u8, len: u32, capture_end: bool, seen: &Seen) -> Act {
        match self {
            Parse::Zero => Act::Zero,
            Parse::Keep => Act::Keep,
            Parse::KeepFirst(n) => {
                if i < *n {
                    Act::Keep
                } else {
                    Act::Zero
                }
            }
            Parse::ServerFirst => {
                // decode_server's choice, by first byte and whether a greeting was seen.
                *self = match (b, seen.greeting) {
                    (0xff, _) => Parse::Keep,                                          // ERR
                    (PROTOCOL_V10, false) => Parse::Greeting(Greeting::default()),
                    (0x00, true) => Parse::Keep,                                       // OK
                    (0xfe, true) => Parse::AuthSwitch { name_done: false },
                    _ => Parse::KeepFirst(1), // AuthMoreData (0x01) and others: length only
                };
                Act::Keep
            }
            Parse::LoginFirst { caps0 } => {
                if i == 0 {
                    *caps0 = b;
                    return Act::Keep;
                }
                // decode_client's choice, by the 16-bit capabilities and the length.
                let caps0 = *caps0;
                let caps16 = u32::from(u16::from_le_bytes([caps0, b]));
                *self = if caps16 & CLIENT_PROTOCOL_41 != 0 {
                    if len < 32 {
                        Parse::KeepFirst(2)
                    } else if len == 32 && caps16 & CLIENT_SSL != 0 {
                        Parse::Ssl { needs: 9 }
                    } else {
                        Parse::Login41(Login41 { caps: [caps0, b, 0, 0], phase: L41::Fixed })
                    }
                } else if len == 5 && caps16 & CLIENT_SSL != 0 {
                    Parse::Ssl { needs: 5 }
                } else if len < 6 {
                    Parse::KeepFirst(2)
                } else {
                    Parse::Login320(Login320 { caps16, phase: L320::MaxPacket })
                };
                Act::Keep
            }
            Parse::Ssl { .. } => Act::Keep,
            Parse::Greeting(g) => g.step(i, b, capture_end),
            Parse::Login41(l) => l.step(i, b),
            Parse::Login320(l) => l.step(b),
            Parse::AuthSwitch { name_done } => {
                if i == 0 {
                    Act::Keep
                } else if !*name_done {
                    *name_done = b == 0;
                    Act::Keep
                } else if i + 1 == len {
                    // decode_auth_switch drops a final NUL from the data length.
                    Act::Mask
                } else {
                    Act::Zero
                }
            }
        }
    }
}

/// HandshakeV10: protocol, version NUL-terminated, then fixed fields relative to its end.
#[derive(Clone, Default)]
struct Greeting {
    /// Body index of the version's NUL.
    version_end: Option<u32>,
    /// The 19 bytes after scramble part 1: filler, caps, charset, status, caps, length, reserved.
    fixed: [u8; 19],
    plugin_done: bool,
}

impl Greeting {
    fn step(&mut self, i: u32, b: u8, capture_end: bool) -> Act {
        if i == 0 {
            return Act::Keep;
        }
        let Some(v) = self.version_end else {
            if b == 0 {
                self.version_end = Some(i);
            }
            return Act::Keep;
        };
        let r = i - v - 1;
        match r {
            0..=3 => Act::Keep,  // connection id
            4..=11 => Act::Zero, // scramble part 1
            12..=30 => {
                self.fixed[(r - 12) as usize] = b;
                Act::Keep
            }
            _ => {
                let f = &self.fixed;
                let caps = u32::from_le_bytes([f[1], f[2], f[6], f[7]]);
                let part2 = if caps & CLIENT_SECURE_CONNECTION != 0 { 13.max(u32::from(f[8]).saturating_sub(8)) } else { 0 };
                if r < 31 + part2 {
                    // The decoder counts part 2 and checks whether its last byte (where
                    // the packet or the capture ends first) is the NUL terminator.
                    if r + 1 == 31 + part2 || capture_end {
                        Act::Mask
                    } else {
                        Act::Zero
                    }
                } else if caps & CLIENT_PLUGIN_AUTH != 0 && !self.plugin_done {
                    self.plugin_done = b == 0;
                    Act::Keep
                } else {
                    // Nothing the decoder reads.
                    Act::Zero
                }
            }
        }
    }
}

/// HandshakeResponse41.
#[derive(Clone)]
struct Login41 {
    caps: [u8; 4],
    phase: L41,
}

#[derive(Clone)]
enum L41 {
    /// caps 4, max packet 4, charset 1, filler 23.
    Fixed,
    User,
    /// The auth response's length: a length-encoded integer or one byte.
    LenFirst { lenenc: bool },
    LenMore { left: u8, shift: u32, acc: u64 },
    Auth { left: u64 },
    /// Neither length flag: NUL-terminated.
    AuthCstr,
    /// After the auth response: database, plugin, attributes (or nothing the decoder reads).
    Rest(Act),
}

impl Login41 {
    fn step(&mut self, i: u32, b: u8) -> Act {
        match &mut self.phase {
            L41::Fixed => {
                if i < 4 {
                    self.caps[i as usize] = b;
                }
                if i >= 31 {
                    self.phase = L41::User;
                }
                Act::Keep
            }
            L41::User => {
                if b == 0 {
                    let caps = u32::from_le_bytes(self.caps);
                    self.phase = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
                        L41::LenFirst { lenenc: true }
                    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
                        L41::LenFirst { lenenc: false }
                    } else {
                        L41::AuthCstr
                    };
                }
                Act::Keep
            }
            L41::LenFirst { lenenc } => {
                self.phase = match (b, *lenenc) {
                    (n, false) | (n @ 0..=0xfa, true) => auth(u64::from(n)),
                    (0xfc, true) => L41::LenMore { left: 2, shift: 0, acc: 0 },
                    (0xfd, true) => L41::LenMore { left: 3, shift: 0, acc: 0 },
                    (0xfe, true) => L41::LenMore { left: 8, shift: 0, acc: 0 },
                    // 0xfb / 0xff: not a length; the decoder stops here.
                    _ => L41::Rest(Act::Zero),
                };
                Act::Keep
            }
            L41::LenMore { left, shift, acc } => {
                *acc |= u64::from(b) << *shift;
                *shift += 8;
                *left -= 1;
                if *left == 0 {
                    self.phase = auth(*acc);
                }
                Act::Keep
            }
            L41::Auth { left } => {
                *left -= 1;
                if *left == 0 {
                    self.phase = L41::Rest(Act::Keep);
                }
                Act::Zero
            }
            L41::AuthCstr => {
                if b == 0 {
                    self.phase = L41::Rest(Act::Keep);
                    Act::Keep
                } else {
                    Act::Mask
                }
            }
            L41::Rest(act) => *act,
        }
    }
}

fn auth(len: u64) -> L41 {
    if len == 0 {
        L41::Rest(Act::Keep)
    } else {
        L41::Auth { left: len }
    }
}

/// HandshakeResponse320 (pre-4.1 clients), from body byte 2 on.
#[derive(Clone)]
struct Login320 {
    caps16: u32,
    phase: L320,
}

#[derive(Clone, Copy)]
enum L320 {
    MaxPacket,
    MaxPacket2,
    MaxPacket3,
    User,
    /// NUL-terminated auth response; then `then` for what follows.
    Auth { then: Act },
    Rest(Act),
}

impl Login320 {
    fn step(&mut self, b: u8) -> Act {
        match self.phase {
            L320::MaxPacket => self.phase = L320::MaxPacket2,
            L320::MaxPacket2 => self.phase = L320::MaxPacket3,
            L320::MaxPacket3 => self.phase = L320::User,
            L320::User => {
                if b == 0 {
                    // With a database the auth response is NUL-terminated and the database
                    // follows; without, it runs to the end, the decoder counting up to a NUL.
                    let then = if self.caps16 & CLIENT_CONNECT_WITH_DB != 0 { Act::Keep } else { Act::Zero };
                    self.phase = L320::Auth { then };
                }
            }
            L320::Auth { then } => {
                if b != 0 {
                    return Act::Mask;
                }
                self.phase = L320::Rest(then);
            }
            L320::Rest(act) => return act,
        }
        Act::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::Correlator;
    use crate::events::{as_bytes, decode, Event};
    use crate::protocol::{
        decode_client, decode_server, ClientPacket, PacketStream, ServerPacket, CLIENT_CONNECT_ATTRS, CLIENT_INTERACTIVE,
        CLIENT_LOCAL_FILES, CLIENT_LONG_FLAG, CLIENT_LONG_PASSWORD, CLIENT_MULTI_RESULTS, CLIENT_MULTI_STATEMENTS,
        CLIENT_PS_MULTI_RESULTS, CLIENT_SESSION_TRACK, CLIENT_TRANSACTIONS,
    };
    use handshake_trace_common::end;

    const PID: u32 = 812;
    const FD: i32 = 43;
    const GEN: u64 = 1_000_000;
    const HANDLER: u32 = 830;

    const SCRAMBLE1: [u8; 8] = *b"q;V&1Z^x";
    const SCRAMBLE2: [u8; 12] = *b"7Lk]Pw@3e|Nr";
    const AUTH_RESPONSE: [u8; 20] = [
        0x9c, 0x1f, 0x77, 0xe2, 0x05, 0xab, 0x3d, 0x61, 0xf0, 0x12, 0x8e, 0x4a, 0xd9, 0x33, 0xc7, 0x70, 0x2b, 0xee,
        0x58, 0x91,
    ];

    /// Deterministic "random" secret bytes (no NUL, so any window is distinctive).
    fn secret(n: usize, seed: u8) -> Vec<u8> {
        let mut x = 0x9e37_79b9u32 ^ u32::from(seed).wrapping_mul(0x0101_0101);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 255 + 1) as u8
            })
            .collect()
    }

    fn ed25519_nonce() -> Vec<u8> {
        secret(32, 1)
    }

    fn ed25519_signature() -> Vec<u8> {
        secret(64, 2)
    }

    fn frame(seq: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        let mut v = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        v.extend_from_slice(body);
        v
    }

    /// A MariaDB 10.11.14 (Debian 12) greeting, connection id 31. Returns the body and
    /// the body ranges of its secrets.
    fn greeting() -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut g = vec![0x0a];
        g.extend_from_slice(b"5.5.5-10.11.14-MariaDB-0+deb12u2\0");
        g.extend_from_slice(&31u32.to_le_bytes());
        let p1 = g.len();
        g.extend_from_slice(&SCRAMBLE1);
        g.push(0);
        g.extend_from_slice(&[0xfe, 0xf7]);
        g.push(45);
        g.extend_from_slice(&[0x02, 0x00]);
        g.extend_from_slice(&[0xff, 0x81]);
        g.push(21);
        g.extend_from_slice(&[0; 6]);
        g.extend_from_slice(&[0x1d, 0x00, 0x00, 0x00]);
        let p2 = g.len();
        g.extend_from_slice(&SCRAMBLE2);
        g.push(0);
        g.extend_from_slice(b"mysql_native_password\0");
        (g, vec![p1..p1 + 8, p2..p2 + 12])
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

    /// HandshakeResponse41 as libmariadb sends it, with `extra_attr` bytes of padding
    /// in one more attribute. Returns the body and the auth response's body range.
    fn login(caps: u32, auth: &[u8], extra_attr: usize) -> (Vec<u8>, std::ops::Range<usize>) {
        let mut l = Vec::new();
        l.extend_from_slice(&caps.to_le_bytes());
        l.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        l.push(45);
        l.extend_from_slice(&[0; 19]);
        l.extend_from_slice(&[0x1c, 0x00, 0x00, 0x00]);
        l.extend_from_slice(b"lab\0");
        let at;
        if caps & (CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION) != 0 {
            l.push(auth.len() as u8);
            at = l.len();
            l.extend_from_slice(auth);
        } else {
            at = l.len();
            l.extend_from_slice(auth);
            l.push(0);
        }
        l.extend_from_slice(b"shop\0");
        l.extend_from_slice(b"mysql_native_password\0");
        let mut attrs = Vec::new();
        let mut pairs: Vec<(String, String)> = ATTRS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if extra_attr > 0 {
            pairs.push(("padding".into(), "x".repeat(extra_attr)));
        }
        for (k, v) in &pairs {
            for s in [k, v] {
                assert!(s.len() < 0xfb);
                attrs.push(s.len() as u8);
                attrs.extend_from_slice(s.as_bytes());
            }
        }
        if attrs.len() < 0xfb {
            l.push(attrs.len() as u8);
        } else {
            l.push(0xfc);
            l.extend_from_slice(&(attrs.len() as u16).to_le_bytes());
        }
        l.extend_from_slice(&attrs);
        (l, at..at + auth.len())
    }

    fn auth_switch_ed25519() -> Vec<u8> {
        let mut b = vec![0xfe];
        b.extend_from_slice(b"client_ed25519\0");
        b.extend_from_slice(&ed25519_nonce());
        b
    }

    fn ok_body() -> Vec<u8> {
        vec![0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00]
    }

    fn ssl_request() -> Vec<u8> {
        let caps = LOGIN_CAPS | CLIENT_SSL;
        let mut b = Vec::new();
        b.extend_from_slice(&caps.to_le_bytes());
        b.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        b.push(45);
        b.extend_from_slice(&[0; 19]);
        b.extend_from_slice(&[0x1c, 0, 0, 0]);
        b
    }

    fn hdr(kind: u32, ts: u64) -> EventHeader {
        EventHeader { kind, pid: PID, tid: HANDLER, _pad: 0, ts_ns: ts }
    }

    fn accept_rec(ts: u64) -> Vec<u8> {
        as_bytes(&AcceptEvent {
            header: hdr(kind::ACCEPT, ts),
            listen_fd: 20,
            ret: FD,
            family: 2,
            port: 51234,
            _pad: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            conn_gen: GEN,
        })
    }

    fn sys_rec(ts: u64, syscall: u32, ret: i64, args: [u64; 4]) -> Vec<u8> {
        as_bytes(&SysEvent { header: hdr(kind::SYSCALL, ts), conn_gen: GEN, ret, duration_ns: 1000, args, fd: FD, syscall })
    }

    /// An IO record; the payload past `captured` holds stale bytes, as the ring buffer may.
    fn io_rec(ts: u64, syscall: u32, ret: i64, bytes: &[u8]) -> Vec<u8> {
        let captured = bytes.len().min(PAYLOAD_MAX);
        let mut payload = [0xA5u8; PAYLOAD_MAX];
        payload[..captured].copy_from_slice(&bytes[..captured]);
        let mut sys = SysEvent {
            header: hdr(kind::IO, ts),
            conn_gen: GEN,
            ret,
            duration_ns: 1000,
            // Readers ask for a buffer at least as large as what they get.
            args: [if ret > 0 { 16384 } else { 4 }, 0, 0, 0],
            fd: FD,
            syscall,
        };
        if syscall == sys::RECVMSG {
            sys.args = [0, 0, 0, 0];
        }
        as_bytes(&IoEvent { sys, captured: captured as u32, tracking_end: 0, payload })
    }

    fn read(ts: u64, bytes: &[u8]) -> Vec<u8> {
        io_rec(ts, sys::RECVFROM, bytes.len() as i64, bytes)
    }

    fn write(ts: u64, bytes: &[u8]) -> Vec<u8> {
        io_rec(ts, sys::SENDTO, bytes.len() as i64, bytes)
    }

    fn redact_all(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut r = Redactor::new();
        records
            .iter()
            .map(|rec| {
                let mut rec = rec.clone();
                r.redact(&mut rec);
                rec
            })
            .collect()
    }

    fn payload_of(rec: &[u8]) -> &[u8] {
        let p0 = offset_of!(IoEvent, payload);
        &rec[p0..p0 + PAYLOAD_MAX]
    }

    /// The decoder's view, as the correlator builds it: every packet decoded.
    #[derive(Debug, Default, PartialEq)]
    struct View {
        server: Vec<ServerPacket>,
        client: Vec<ClientPacket>,
        tls: bool,
        tls_bytes: usize,
    }

    fn replay(records: &[Vec<u8>]) -> View {
        let (mut from_client, mut from_server) = (PacketStream::new(), PacketStream::new());
        let mut v = View::default();
        let (mut greeting, mut login) = (false, false);
        for rec in records {
            let Ok(Event::Io(io)) = decode(rec) else { continue };
            let total = match io.sys.result {
                crate::events::SyscallResult::Ok(n) if n > 0 => n as usize,
                _ => 0,
            };
            if total == 0 {
                continue;
            }
            if v.tls {
                v.tls_bytes += total;
                continue;
            }
            if io.sys.kind.is_read() {
                for p in from_client.feed(&io.payload, total) {
                    let c = decode_client(&p, !login && !v.tls);
                    match &c {
                        ClientPacket::Login(_) => login = true,
                        ClientPacket::SslRequest(_) => v.tls = true,
                        _ => {}
                    }
                    v.client.push(c);
                }
                if io.payload.len() >= 2 && io.payload[0] == 0x16 && io.payload[1] == 0x03 {
                    v.tls = true;
                }
            } else {
                for p in from_server.feed(&io.payload, total) {
                    let s = decode_server(&p, greeting);
                    greeting |= matches!(s, ServerPacket::Greeting(_));
                    v.server.push(s);
                }
            }
        }
        v
    }

    /// What the correlator (watch / analyze) makes of the records.
    fn correlate(records: &[Vec<u8>]) -> String {
        let mut c = Correlator::new(100);
        let mut out = Vec::new();
        for rec in records {
            if let Ok(ev) = decode(rec) {
                out.extend(c.push(&ev, None));
            }
        }
        out.extend(c.finish_all(u64::MAX / 2));
        // What a user sees: the timeline in words and the JSON record.
        let clock = crate::support::clock::Clock::with_offset(0);
        out.iter()
            .map(|h| format!("{}\n{}\n", crate::output::handshake_timeline(h, &clock), crate::output::handshake_json(h, &clock)))
            .collect()
    }

    /// Asserts that exactly the bytes at `secret` positions of `stream` changed (to
    /// zero, or to zero-or-FILLER where `masked`), then that the decoder's view is
    /// unchanged.
    fn assert_only_secrets_changed(before: &[u8], after: &[u8], secret: &[std::ops::Range<usize>], masked: &[usize]) {
        assert_eq!(before.len(), after.len());
        for (i, (b, a)) in before.iter().zip(after).enumerate() {
            let is_secret = secret.iter().any(|r| r.contains(&i));
            if masked.contains(&i) {
                assert_eq!(*a, if *b == 0 { 0 } else { FILLER }, "byte {i}");
            } else if is_secret {
                assert_eq!(*a, 0, "secret byte {i} ({b:#04x}) not zeroed");
            } else {
                assert_eq!(a, b, "public byte {i} changed");
            }
        }
    }

    /// The captured payload bytes of one direction, in stream order.
    fn stream(records: &[Vec<u8>], client: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for rec in records {
            if let Ok(Event::Io(io)) = decode(rec) {
                if io.sys.kind.is_read() == client {
                    out.extend_from_slice(&io.payload);
                }
            }
        }
        out
    }

    fn shift(ranges: &[std::ops::Range<usize>], by: usize) -> Vec<std::ops::Range<usize>> {
        ranges.iter().map(|r| r.start + by..r.end + by).collect()
    }

    type Ranges = Vec<std::ops::Range<usize>>;

    /// A MariaDB login with ed25519: the server reads headers and bodies separately.
    fn ed25519_session() -> (Vec<Vec<u8>>, Ranges, Ranges) {
        let (g, g_secret) = greeting();
        let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
        let gf = frame(0, &g);
        let lf = frame(1, &l);
        let sw = frame(2, &auth_switch_ed25519());
        let reply = frame(3, &ed25519_signature());
        let ok = frame(4, &ok_body());
        let records = vec![
            accept_rec(GEN),
            write(GEN + 10, &gf),
            read(GEN + 20, &lf[..4]),
            read(GEN + 30, &lf[4..]),
            write(GEN + 40, &sw),
            read(GEN + 50, &reply[..4]),
            read(GEN + 60, &reply[4..]),
            write(GEN + 70, &ok),
            sys_rec(GEN + 80, SYS_TRACKING_END, 0, [end::REPLY, 0, 0, 0]),
        ];
        // Secrets in each direction's stream.
        let mut server_secret = shift(&g_secret, 4);
        let sw_data = gf.len() + 4 + 1 + b"client_ed25519\0".len();
        server_secret.push(sw_data..sw_data + 32);
        let client_secret = vec![4 + auth.start..4 + auth.end, lf.len() + 4..lf.len() + 4 + 64];
        (records, server_secret, client_secret)
    }

    #[test]
    fn greeting_scramble_is_zeroed_and_decodes_the_same() {
        let (g, secret) = greeting();
        let gf = frame(0, &g);
        let recs = vec![accept_rec(GEN), write(GEN + 1, &gf)];
        let red = redact_all(&recs);
        assert_only_secrets_changed(&stream(&recs, false), &stream(&red, false), &shift(&secret, 4), &[]);
        let (a, b) = (replay(&recs), replay(&red));
        assert_eq!(a, b);
        let ServerPacket::Greeting(gr) = &b.server[0] else { panic!("{b:?}") };
        assert_eq!(gr.server_version, "5.5.5-10.11.14-MariaDB-0+deb12u2");
        assert_eq!(gr.connection_id, 31);
        assert_eq!(gr.scramble_len, 20);
        assert_eq!(gr.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(gr.capabilities, 0x81ff_f7fe);
    }

    #[test]
    fn ed25519_login_keeps_names_and_lengths_only() {
        let (recs, server_secret, client_secret) = ed25519_session();
        let red = redact_all(&recs);
        // The switch data's last byte is a secret the decoder checks for a NUL terminator.
        let sw_last = server_secret[2].end - 1;
        assert_only_secrets_changed(&stream(&recs, false), &stream(&red, false), &server_secret, &[sw_last]);
        assert_only_secrets_changed(&stream(&recs, true), &stream(&red, true), &client_secret, &[]);

        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        let ClientPacket::Login(l) = &v.client[0] else { panic!("{v:?}") };
        assert_eq!(l.user, "lab");
        assert_eq!(l.database.as_deref(), Some("shop"));
        assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(l.auth_response_len, 20);
        assert_eq!(l.attrs.len(), 7);
        assert!(!l.truncated);
        assert_eq!(v.client[1], ClientPacket::AuthData { len: 64 });
        let ServerPacket::AuthSwitch(s) = &v.server[1] else { panic!("{v:?}") };
        assert_eq!((s.plugin.as_str(), s.data_len), ("client_ed25519", 32));
        assert!(matches!(v.server[2], ServerPacket::Ok(_)));
        // The whole correlated handshake (what watch and analyze print) is identical.
        assert_eq!(correlate(&recs), correlate(&red));
        assert!(correlate(&red).contains("auth switch to client_ed25519 (32 bytes of plugin data)"));
    }

    #[test]
    fn login_header_and_body_in_separate_reads_or_one() {
        let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
        let lf = frame(1, &l);
        let (g, _) = greeting();
        let prelude = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g))];
        let mut split = prelude.clone();
        split.extend([read(GEN + 2, &lf[..4]), read(GEN + 3, &lf[4..])]);
        let mut whole = prelude.clone();
        whole.push(read(GEN + 2, &lf));
        let (rs, rw) = (redact_all(&split), redact_all(&whole));
        let secret = std::slice::from_ref(&(4 + auth.start..4 + auth.end)).to_vec();
        assert_only_secrets_changed(&lf, &stream(&rs, true), &secret, &[]);
        assert_only_secrets_changed(&lf, &stream(&rw, true), &secret, &[]);
        assert_eq!(replay(&rs), replay(&split));
        assert_eq!(replay(&rw), replay(&whole));
    }

    /// Redaction does not depend on how the stream was cut into reads and writes.
    #[test]
    fn any_split_redacts_the_same() {
        let (recs, _, _) = ed25519_session();
        let red = redact_all(&recs);
        let (server, client) = (stream(&recs, false), stream(&recs, true));
        let (want_server, want_client) = (stream(&red, false), stream(&red, true));
        // The greeting at every split point (odd ones included), and the login at every
        // split point of its header+body.
        let g_len = frame(0, &greeting().0).len();
        for k in 1..g_len {
            let mut r = vec![accept_rec(GEN), write(GEN + 1, &server[..k]), write(GEN + 2, &server[k..g_len])];
            r.extend_from_slice(&recs[2..]);
            let red = redact_all(&r);
            assert_eq!(stream(&red, false), want_server, "greeting split at {k}");
            assert_eq!(replay(&red), replay(&r), "greeting split at {k}");
        }
        let l_len = frame(1, &login(LOGIN_CAPS, &AUTH_RESPONSE, 0).0).len();
        for k in 1..l_len {
            let mut r = recs[..2].to_vec();
            r.extend([read(GEN + 20, &client[..k]), read(GEN + 30, &client[k..l_len])]);
            r.extend_from_slice(&recs[4..]);
            let red = redact_all(&r);
            assert_eq!(stream(&red, true), want_client, "login split at {k}");
        }
        // Every packet read or written in random pieces, in protocol order.
        let packets: Vec<(bool, Vec<u8>)> = vec![
            (false, frame(0, &greeting().0)),
            (true, frame(1, &login(LOGIN_CAPS, &AUTH_RESPONSE, 0).0)),
            (false, frame(2, &auth_switch_ed25519())),
            (true, frame(3, &ed25519_signature())),
            (false, frame(4, &ok_body())),
        ];
        let mut rng = XorShift(0x1234_5678);
        for _ in 0..300 {
            let mut r = vec![accept_rec(GEN)];
            for (client, bytes) in &packets {
                let mut i = 0;
                while i < bytes.len() {
                    let n = (rng.below(40) + 1).min(bytes.len() - i);
                    let piece = &bytes[i..i + n];
                    r.push(if *client { read(GEN + 1, piece) } else { write(GEN + 1, piece) });
                    i += n;
                }
            }
            let red = redact_all(&r);
            assert_eq!(stream(&red, false), want_server);
            assert_eq!(stream(&red, true), want_client);
            assert_eq!(replay(&red), replay(&r));
        }
    }

    #[test]
    fn truncated_read_keeps_sync_and_hides_the_auth_response() {
        // A 400-byte login (big connect attributes) read at once: 256 bytes captured.
        let (g, _) = greeting();
        let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 150);
        let lf = frame(1, &l);
        assert!(lf.len() > 256 && lf.len() < 512, "{}", lf.len());
        let recs = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            io_rec(GEN + 2, sys::RECVFROM, lf.len() as i64, &lf),
            write(GEN + 3, &frame(2, &ok_body())),
        ];
        let red = redact_all(&recs);
        assert_eq!(decode(&red[2]).map(|e| if let Event::Io(io) = e { io.payload.len() } else { 0 }), Ok(256));
        let secret = std::slice::from_ref(&(4 + auth.start..4 + auth.end)).to_vec();
        assert_only_secrets_changed(&lf[..256], &stream(&red, true), &secret, &[]);
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        let ClientPacket::Login(l) = &v.client[0] else { panic!("{v:?}") };
        assert!(l.truncated);
        assert_eq!((l.user.as_str(), l.auth_response_len, l.database.as_deref()), ("lab", 20, Some("shop")));
        // The stream stayed in sync: the OK after the gap is still seen.
        assert!(matches!(v.server[1], ServerPacket::Ok(_)));

        // The same login read as ret 400 with a body split over two reads around the gap.
        let recs2 = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            read(GEN + 2, &lf[..4]),
            io_rec(GEN + 3, sys::RECVFROM, 300, &lf[4..304]),
            read(GEN + 4, &lf[304..]),
            write(GEN + 5, &frame(2, &ok_body())),
        ];
        let red2 = redact_all(&recs2);
        assert_eq!(replay(&red2), replay(&recs2));
        // Bytes after the gap are never decoded: zeroed.
        assert!(payload_of(&red2[4])[..lf.len() - 304].iter().all(|&b| b == 0));
    }

    #[test]
    fn ssl_request_then_tls_is_lengths_only() {
        let (g, _) = greeting();
        let ssl = frame(1, &ssl_request());
        let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        hello.extend(secret(506, 9));
        let mut server_hello = vec![0x16, 0x03, 0x03, 0x00, 0x7a, 0x02];
        server_hello.extend(secret(300, 10));
        let recs = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            read(GEN + 2, &ssl[..4]),
            read(GEN + 3, &ssl[4..]),
            io_rec(GEN + 4, sys::RECVFROM, hello.len() as i64, &hello),
            io_rec(GEN + 5, sys::SENDTO, server_hello.len() as i64, &server_hello),
            read(GEN + 6, &secret(100, 11)),
        ];
        let red = redact_all(&recs);
        // The SSLRequest is kept whole: the decoder must still see it.
        assert_eq!(payload_of(&red[2])[..4], ssl[..4]);
        assert_eq!(payload_of(&red[3])[..32], ssl[4..]);
        for (rec, orig) in red[4..].iter().zip(&recs[4..]) {
            assert!(payload_of(rec).iter().all(|&b| b == 0));
            // captured and ret are kept: the replay still knows the lengths.
            let (Ok(Event::Io(a)), Ok(Event::Io(b))) = (decode(rec), decode(orig)) else { panic!() };
            assert_eq!((a.sys.result, a.payload.len()), (b.sys.result, b.payload.len()));
        }
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        assert!(matches!(v.client[0], ClientPacket::SslRequest(_)));
        assert_eq!(v.tls_bytes, 517 + 306 + 100);
        assert_eq!(correlate(&recs), correlate(&red));

        // SSLRequest and ClientHello in one read: the hello's header keeps the framing,
        // its body goes.
        let mut both = ssl.clone();
        both.extend_from_slice(&hello[..200]);
        let recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g)), read(GEN + 2, &both)];
        let red = redact_all(&recs);
        let p = payload_of(&red[2]);
        assert_eq!(p[..40], both[..40]);
        assert!(p[40..].iter().all(|&b| b == 0));
        assert_eq!(replay(&red), replay(&recs));
        assert_eq!(correlate(&recs), correlate(&red));
    }

    #[test]
    fn tls_without_ssl_request_keeps_the_record_header() {
        // A client starting TLS straight away: the correlator sees 0x16 0x03 and switches.
        let (g, _) = greeting();
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xf0, 0x01];
        hello.extend(secret(200, 12));
        let recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g)), read(GEN + 2, &hello), write(GEN + 3, &secret(90, 13))];
        let red = redact_all(&recs);
        let p = payload_of(&red[2]);
        assert_eq!(p[..4], hello[..4]);
        assert!(p[4..].iter().all(|&b| b == 0));
        assert!(payload_of(&red[3]).iter().all(|&b| b == 0));
        assert_eq!(replay(&red), replay(&recs));
        assert_eq!(correlate(&recs), correlate(&red));
    }

    #[test]
    fn nul_terminated_auth_responses_keep_their_length() {
        // HandshakeResponse41 without SECURE_CONNECTION: the auth response ends at a NUL,
        // so zeros would shorten it; it becomes FILLER instead.
        let caps = LOGIN_CAPS & !(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION);
        let (g, _) = greeting();
        let (l, auth) = login(caps, &AUTH_RESPONSE, 0);
        let lf = frame(1, &l);
        let recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g)), read(GEN + 2, &lf)];
        let red = redact_all(&recs);
        let masked: Vec<usize> = (4 + auth.start..4 + auth.end).collect();
        assert_only_secrets_changed(&lf, &stream(&red, true), &[], &masked);
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        let ClientPacket::Login(l) = &v.client[0] else { panic!() };
        assert_eq!((l.auth_response_len, l.database.as_deref()), (20, Some("shop")));

        // HandshakeResponse320 with and without a database.
        for with_db in [true, false] {
            let caps = CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_TRANSACTIONS | if with_db { CLIENT_CONNECT_WITH_DB } else { 0 };
            let mut b = Vec::new();
            b.extend_from_slice(&(caps as u16).to_le_bytes());
            b.extend_from_slice(&[0xff, 0xff, 0xff]);
            b.extend_from_slice(b"lab\0");
            let at = b.len();
            b.extend_from_slice(b"HQ[ZS^AO\0");
            if with_db {
                b.extend_from_slice(b"test\0");
            }
            let lf = frame(1, &b);
            let recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g)), read(GEN + 2, &lf)];
            let red = redact_all(&recs);
            let masked: Vec<usize> = (4 + at..4 + at + 8).collect();
            assert_only_secrets_changed(&lf, &stream(&red, true), &[], &masked);
            let v = replay(&red);
            assert_eq!(v, replay(&recs));
            let ClientPacket::Login(l) = &v.client[0] else { panic!() };
            assert_eq!((l.user.as_str(), l.auth_response_len), ("lab", 8));
            assert_eq!(l.database.as_deref(), with_db.then_some("test"));
        }
    }

    #[test]
    fn more_data_and_later_client_packets_are_zeroed() {
        // caching_sha2_password full authentication without TLS: "perform full auth",
        // the client asks for the key, gets it, sends the encrypted password.
        let (g, _) = greeting();
        let (l, _) = login(LOGIN_CAPS, &secret(32, 20), 0);
        let key = [vec![0x01], b"-----BEGIN PUBLIC KEY-----\n".to_vec(), secret(400, 21)].concat();
        let pw = secret(256, 22);
        let recs = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            read(GEN + 2, &frame(1, &l)),
            write(GEN + 3, &frame(2, &[0x01, 0x04])),
            read(GEN + 4, &frame(3, &[0x02])),
            io_rec(GEN + 5, sys::SENDTO, key.len() as i64 + 4, &frame(4, &key)),
            read(GEN + 6, &frame(5, &pw)[..4]),
            io_rec(GEN + 7, sys::RECVFROM, 256, &pw),
            write(GEN + 8, &frame(6, &ok_body())),
        ];
        let red = redact_all(&recs);
        assert_eq!(payload_of(&red[3])[..6], [2, 0, 0, 2, 0x01, 0]);
        assert_eq!(payload_of(&red[4])[..5], [1, 0, 0, 3, 0]);
        assert!(payload_of(&red[5])[5..].iter().all(|&b| b == 0));
        assert!(payload_of(&red[7]).iter().all(|&b| b == 0));
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        assert_eq!(v.server[1], ServerPacket::AuthMoreData { len: 1 });
        assert_eq!(v.client[1..], [ClientPacket::AuthData { len: 1 }, ClientPacket::AuthData { len: 256 }]);
        assert!(matches!(v.server[3], ServerPacket::Ok(_)));
        assert_eq!(correlate(&recs), correlate(&red));
    }

    /// No 20-byte window (or the whole, when shorter) of a secret survives anywhere.
    #[test]
    fn no_window_of_a_secret_survives() {
        let (recs, _, _) = ed25519_session();
        let (g, _) = greeting();
        let mut recs = recs;
        // Also a native-password login after a split greeting, and a truncated one.
        let (l, _) = login(LOGIN_CAPS, &AUTH_RESPONSE, 150);
        let lf = frame(1, &l);
        let gf = frame(0, &g);
        recs.extend([
            accept_rec(GEN + 1000),
            write(GEN + 1001, &gf[..17]),
            write(GEN + 1002, &gf[17..]),
            io_rec(GEN + 1003, sys::READ, lf.len() as i64, &lf),
        ]);
        for r in recs.iter_mut().skip(9) {
            // Same fd, next generation.
            let at = if r.len() == size_of::<AcceptEvent>() { offset_of!(AcceptEvent, conn_gen) } else { offset_of!(SysEvent, conn_gen) };
            r[at..at + 8].copy_from_slice(&(GEN + 1000).to_ne_bytes());
        }
        let red = redact_all(&recs);
        let all_before: Vec<u8> = recs.concat();
        let all_after: Vec<u8> = red.concat();
        let secrets: Vec<Vec<u8>> = vec![
            SCRAMBLE1.to_vec(),
            SCRAMBLE2.to_vec(),
            [SCRAMBLE1.as_slice(), SCRAMBLE2.as_slice()].concat(),
            AUTH_RESPONSE.to_vec(),
            ed25519_nonce(),
            ed25519_signature(),
        ];
        let mut checked = 0;
        for s in &secrets {
            let w = s.len().min(20);
            for window in s.windows(w) {
                let present = |hay: &[u8]| hay.windows(w).any(|x| x == window);
                // The concatenated scramble is never contiguous on the wire.
                if s.len() == 20 && s[..8] == SCRAMBLE1 {
                    assert!(!present(&all_after));
                    continue;
                }
                assert!(present(&all_before), "test data lacks the secret");
                assert!(!present(&all_after), "a secret survived redaction");
                checked += 1;
            }
        }
        assert!(checked > 50);
        // Shorter windows too: nothing of 6 secret bytes in a row.
        for s in &secrets {
            for window in s.windows(6) {
                assert!(!all_after.windows(6).any(|x| x == window));
            }
        }
        assert_eq!(replay(&red), replay(&recs));
    }

    #[test]
    fn stale_bytes_past_captured_are_zeroed_and_other_records_pass() {
        let (g, _) = greeting();
        let recs = vec![
            accept_rec(GEN),
            sys_rec(GEN + 1, sys::POLL, 1, [1, 5000, 1, 1]),
            write(GEN + 2, &frame(0, &g)),
            io_rec(GEN + 3, sys::RECVFROM, -11, &[]),
        ];
        let red = redact_all(&recs);
        assert_eq!(red[0], recs[0]);
        assert_eq!(red[1], recs[1]);
        let n = frame(0, &g).len();
        assert!(payload_of(&recs[2])[n..].iter().all(|&b| b == 0xA5));
        assert!(payload_of(&red[2])[n..].iter().all(|&b| b == 0));
        assert!(payload_of(&red[3]).iter().all(|&b| b == 0));
        // Everything but the payload is untouched.
        let p0 = offset_of!(IoEvent, payload);
        assert_eq!(red[2][..p0], recs[2][..p0]);
        assert_eq!(red[3][..p0], recs[3][..p0]);
    }

    #[test]
    fn unknown_and_forgotten_connections_are_zeroed_whole() {
        let (g, _) = greeting();
        let gf = frame(0, &g);
        let mut r = Redactor::new();
        // No accept seen.
        let mut rec = write(GEN + 1, &gf);
        r.redact(&mut rec);
        assert!(payload_of(&rec).iter().all(|&b| b == 0));
        // Accepted, then closed: forgotten.
        let mut a = accept_rec(GEN);
        r.redact(&mut a);
        assert_eq!(r.connections(), 1);
        let mut rec = write(GEN + 1, &gf);
        r.redact(&mut rec);
        assert_eq!(payload_of(&rec)[..5], gf[..5]);
        let mut close = sys_rec(GEN + 2, sys::CLOSE, 0, [0; 4]);
        r.redact(&mut close);
        assert_eq!(r.connections(), 0);
        let mut rec = write(GEN + 3, &gf);
        r.redact(&mut rec);
        assert!(payload_of(&rec).iter().all(|&b| b == 0));
        // Tracking end and process exit forget too; a different generation is not ours.
        r.redact(&mut accept_rec(GEN));
        r.redact(&mut sys_rec(GEN + 4, SYS_TRACKING_END, 0, [end::TLS_BUDGET, 0, 0, 0]));
        assert_eq!(r.connections(), 0);
        r.redact(&mut accept_rec(GEN));
        let mut other_gen = sys_rec(GEN + 5, sys::CLOSE, 0, [0; 4]);
        other_gen[offset_of!(SysEvent, conn_gen)..][..8].copy_from_slice(&7u64.to_ne_bytes());
        r.redact(&mut other_gen);
        assert_eq!(r.connections(), 1);
        r.redact(&mut as_bytes(&hdr(kind::PROCESS_EXIT, GEN + 6)));
        assert_eq!(r.connections(), 0);
    }

    #[test]
    fn at_most_max_connections_oldest_dropped() {
        let mut r = Redactor::new();
        let (g, _) = greeting();
        let gf = frame(0, &g);
        let with_fd = |rec: &mut Vec<u8>, fd: i32, at: usize| rec[at..at + 4].copy_from_slice(&fd.to_ne_bytes());
        for fd in 0..=MAX_CONNECTIONS as i32 {
            let mut a = accept_rec(GEN);
            with_fd(&mut a, fd, offset_of!(AcceptEvent, ret));
            r.redact(&mut a);
        }
        assert_eq!(r.connections(), MAX_CONNECTIONS);
        let fd_at = offset_of!(IoEvent, sys) + offset_of!(SysEvent, fd);
        let mut oldest = write(GEN + 1, &gf);
        with_fd(&mut oldest, 0, fd_at);
        r.redact(&mut oldest);
        assert!(payload_of(&oldest).iter().all(|&b| b == 0));
        let mut newest = write(GEN + 1, &gf);
        with_fd(&mut newest, MAX_CONNECTIONS as i32, fd_at);
        r.redact(&mut newest);
        assert_eq!(payload_of(&newest)[..gf.len()].iter().filter(|&&b| b != 0).count(), gf.iter().filter(|&&b| b != 0).count() - 20);
    }

    #[test]
    fn lost_records_fail_safe() {
        let (g, _) = greeting();
        let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
        let lf = frame(1, &l);
        // The login's header read was lost (ring buffer full): its body looks like a
        // header with a huge length and a wrong sequence id.
        let recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g)), read(GEN + 3, &lf[4..]), write(GEN + 4, &frame(2, &ok_body()))];
        let red = redact_all(&recs);
        assert!(payload_of(&red[2]).iter().all(|&b| b == 0));
        assert!(!red.concat().windows(8).any(|w| AUTH_RESPONSE.windows(8).any(|a| a == w)));

        // The login's body read was lost: the client's next packet must not be taken
        // for the login's body (the server wrote in between).
        let (recs, _, client_secret) = ed25519_session();
        let mut lossy = recs.clone();
        lossy.remove(3);
        let red = redact_all(&lossy);
        let sig = ed25519_signature();
        assert!(!red.concat().windows(8).any(|w| sig.windows(8).any(|a| a == w)));
        assert!(client_secret.len() == 2);

        // An exact reader (MySQL, MariaDB) got the login body in two reads, and the first
        // was lost: the second asks for less than the whole body.
        let exact = |ts: u64, bytes: &[u8], requested: u64| {
            let mut r = read(ts, bytes);
            let at = offset_of!(IoEvent, sys) + offset_of!(SysEvent, args);
            r[at..at + 8].copy_from_slice(&requested.to_ne_bytes());
            r
        };
        let body = &lf[4..];
        let cut = auth.start - 3;
        let whole = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            exact(GEN + 2, &lf[..4], 4),
            exact(GEN + 3, &body[..cut], body.len() as u64),
            exact(GEN + 4, &body[cut..], (body.len() - cut) as u64),
        ];
        // Without the loss the exact reads redact like any others.
        let red = redact_all(&whole);
        let secret = std::slice::from_ref(&(4 + auth.start..4 + auth.end)).to_vec();
        assert_only_secrets_changed(&lf, &stream(&red, true), &secret, &[]);
        let mut lossy = whole.clone();
        lossy.remove(3);
        let red = redact_all(&lossy);
        assert!(payload_of(&red[3]).iter().all(|&b| b == 0));

        // A gap over a header: boundaries are lost, everything after is zeroed.
        let recs = vec![
            accept_rec(GEN),
            write(GEN + 1, &frame(0, &g)),
            io_rec(GEN + 2, sys::READ, lf.len() as i64 + 10, &lf),
            read(GEN + 3, &frame(3, &sig)),
        ];
        let red = redact_all(&recs);
        assert!(payload_of(&red[3]).iter().all(|&b| b == 0));
        assert_eq!(replay(&red), replay(&recs));
    }

    #[test]
    fn peeked_bytes_are_redacted_like_the_read_that_follows() {
        let (recs, _, _) = ed25519_session();
        let lf = stream(&recs[2..4], true);
        let mut peek = io_rec(GEN + 15, sys::RECVFROM, lf.len() as i64, &lf);
        let flags = offset_of!(IoEvent, sys) + offset_of!(SysEvent, args) + 8;
        peek[flags..flags + 8].copy_from_slice(&MSG_PEEK.to_ne_bytes());
        let mut with_peek = recs[..2].to_vec();
        with_peek.push(peek);
        with_peek.extend_from_slice(&recs[2..]);
        let red = redact_all(&with_peek);
        let plain = redact_all(&recs);
        assert_eq!(payload_of(&red[2])[..lf.len()], stream(&plain[2..4], true)[..]);
        assert_eq!(red[3..], plain[2..]);
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

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (recs, _, _) = ed25519_session();
        let (g, _) = greeting();
        let seeds: Vec<Vec<u8>> = vec![
            frame(0, &g),
            frame(1, &login(LOGIN_CAPS, &AUTH_RESPONSE, 0).0),
            frame(1, &login(LOGIN_CAPS & !CLIENT_SECURE_CONNECTION & !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, &AUTH_RESPONSE, 0).0),
            frame(2, &auth_switch_ed25519()),
            frame(1, &ssl_request()),
            vec![0x16, 0x03, 0x01, 0x00, 0x10],
        ];
        let mut r = Redactor::new();
        for round in 0..60_000 {
            let mut rec = match round % 4 {
                // Mutated real sessions.
                0 => {
                    let mut rec = recs[rng.below(recs.len())].clone();
                    for _ in 0..rng.below(8) {
                        let i = rng.below(rec.len());
                        rec[i] = rng.next() as u8;
                    }
                    rec
                }
                // IO records of mutated packets, cut anywhere, with random ret.
                1 | 2 => {
                    let mut bytes = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..rng.below(4) {
                        let i = rng.below(bytes.len());
                        bytes[i] = rng.next() as u8;
                    }
                    let from = rng.below(bytes.len());
                    let to = from + rng.below(bytes.len() - from + 1);
                    let syscall = [sys::READ, sys::RECVFROM, sys::RECVMSG, sys::WRITE, sys::SENDTO, 99][rng.below(6)];
                    let ret = match rng.below(5) {
                        0 => -(rng.below(600) as i64),
                        1 => (to - from + rng.below(2000)) as i64,
                        2 => i64::MAX - rng.below(3) as i64,
                        _ => (to - from) as i64,
                    };
                    let mut rec = io_rec(GEN, syscall, ret, &bytes[from..to]);
                    if rng.below(10) == 0 {
                        let c = offset_of!(IoEvent, captured);
                        rec[c..c + 4].copy_from_slice(&(rng.next() as u32).to_ne_bytes());
                    }
                    if rng.below(20) == 0 {
                        r.redact(&mut accept_rec(GEN));
                    }
                    rec
                }
                // Raw garbage of any length, kinds forced sometimes.
                _ => {
                    let mut rec: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
                    if rec.len() >= 4 && rng.below(2) == 0 {
                        let k = 1 + rng.below(6) as u32;
                        rec[..4].copy_from_slice(&k.to_ne_bytes());
                    }
                    rec
                }
            };
            let before = rec.clone();
            r.redact(&mut rec);
            assert_eq!(rec.len(), before.len());
            if round % 1000 == 0 {
                r.redact(&mut accept_rec(GEN));
            }
        }
    }
}
