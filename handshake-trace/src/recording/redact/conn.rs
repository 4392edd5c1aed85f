//! One connection as the redactor follows it: both directions' byte streams, and what
//! the correlator would know about the handshake so far.
use crate::protocol::{
    self,
    client_roles, decode_client, decode_server, server_roles, ClientPacket, Framer, Header, Payload, Piece, ProxyFound,
    ProxySniffer, Role, ServerPacket,
};

use super::FILLER;

/// A login longer than this is taken for lost framing: real ones are well under 64 KiB
/// (connect attributes included), while a body misread as a header (a lost record)
/// yields the capability flags as the length, ≥ 512 KiB for every modern client.
const MAX_LOGIN_LEN: u32 = 0x1_1000;

/// Body bytes of a packet kept for its layout: more than any greeting or login needs
/// before all its secrets are placed (the variable fields before them are a server
/// version, and a user name of at most 128 characters, 512 bytes). Bytes past it whose
/// role is not known by then are zeroed. Kept only while the packet is incomplete.
/// The decoder keeps the same prefix (one constant): it reads no byte past it.
const PREFIX_MAX: usize = protocol::PAYLOAD_KEPT;

#[derive(Clone)]
pub(super) struct Conn {
    /// The client switched to TLS after an SSLRequest: every later payload byte is zeroed.
    tls: bool,
    /// The client sent a ClientHello with no SSLRequest: its later bytes are zeroed, but
    /// the server, which never agreed to TLS, still answers in MySQL packets (a plaintext
    /// ERR 1156), redacted as such (like the correlator, which decodes them).
    client_tls: bool,
    /// The client sent an SSLRequest: its next transfer starting with a TLS handshake
    /// record starts TLS; until then, packets are still MySQL's (like the correlator's).
    ssl_requested: bool,
    client: Dir,
    server: Dir,
    seen: Seen,
    /// A PROXY header at the start of the client's stream (as the correlator takes it out).
    proxy: ProxySniffer,
    /// The header's bytes gone by so far.
    proxy_at: usize,
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
    pub(super) fn new() -> Self {
        Conn {
            tls: false,
            client_tls: false,
            ssl_requested: false,
            client: Dir::new(true),
            server: Dir::new(false),
            seen: Seen::default(),
            proxy: ProxySniffer::new(),
            proxy_at: 0,
        }
    }

    /// The client's first bytes, while a PROXY header may be in them: its bytes are
    /// kept (addresses; a v2 header's TLVs zeroed), bytes held back as a possible
    /// signature and given back go through the framing. Returns the transfer's rest.
    fn take_proxy_header<'d>(&mut self, data: &'d mut [u8], gap: &mut u64) -> &'d mut [u8] {
        let total = data.len() + usize::try_from(*gap).unwrap_or(usize::MAX - data.len());
        let t = self.proxy.take(data, total);
        let n = t.header.min(data.len());
        let (header, rest) = data.split_at_mut(n);
        if let Some(public) = self.proxy.v2_public_len() {
            for (k, b) in header.iter_mut().enumerate() {
                if self.proxy_at + k >= public {
                    *b = 0;
                }
            }
        }
        self.proxy_at += t.header;
        *gap -= (t.header - n) as u64;
        if !t.replay.is_empty() {
            // Signature bytes (constants), already written in an earlier record as they were.
            let mut replay = t.replay.to_vec();
            self.client.feed(&mut replay, 0, &mut self.seen, &mut false);
        }
        if matches!(self.proxy.found(), Some(ProxyFound::Malformed { .. })) {
            // The correlator cannot frame what follows either.
            self.client.framer.desync();
        }
        rest
    }

    /// One syscall's transfer: `data` captured, then `gap` bytes not captured;
    /// `requested`: the size a read asked for, when the syscall says.
    pub(super) fn io(&mut self, from_client: bool, data: &mut [u8], gap: u64, requested: Option<u64>) {
        if data.is_empty() && gap == 0 {
            return;
        }
        // The decoder's rule of where a ClientHello may start, on the same facts.
        let hello = from_client
            && !self.tls
            && !self.client_tls
            && protocol::starts_client_hello(data, !self.client.framer.mid_packet(), self.ssl_requested, !self.seen.login);
        if hello && self.ssl_requested {
            self.tls = true;
        }
        if self.tls || (from_client && self.client_tls) {
            keep_tls_record_header(data);
            return;
        }
        let mut gap = gap;
        let mut requested = requested;
        let data = if from_client && !self.proxy.decided() {
            let before = data.len() as u64 + gap;
            let rest = self.take_proxy_header(data, &mut gap);
            if rest.len() as u64 + gap != before {
                // The read asked for header bytes (MariaDB reads a v1 header byte by byte).
                requested = None;
            }
            if rest.is_empty() && gap == 0 {
                return;
            }
            rest
        } else {
            data
        };
        let (this, other) =
            if from_client { (&mut self.client, &mut self.server) } else { (&mut self.server, &mut self.client) };
        // The handshake is half duplex: a side speaks only after the other's packet is
        // whole. One still unfinished means records were lost (the ring buffer was
        // full): its framing cannot be trusted any more.
        if other.framer.mid_packet() {
            other.framer.desync();
        }
        // MySQL and MariaDB read a header, then exactly the rest of the packet (or into a
        // large buffer). Asking for less than the packet still lacks means bytes of it
        // went by unseen (a lost record): offsets inside the packet are wrong.
        if requested.is_some_and(|r| r < this.framer.still_needed() as u64) {
            this.framer.desync();
        }
        // Like the correlator: a ClientHello unasked switches the client to TLS after
        // its bytes went through the packet stream (framing only, bodies zeroed).
        let mut tls = hello;
        this.feed(data, gap, &mut self.seen, &mut tls);
        if hello {
            // No SSLRequest came first (it would have switched to TLS above).
            self.client_tls = true;
        } else if tls {
            // An SSLRequest completed in this transfer.
            self.ssl_requested = true;
        }
    }
}

/// One direction's byte stream.
#[derive(Clone)]
struct Dir {
    from_client: bool,
    framer: Framer,
    /// The current packet started after TLS began in the same read: framing only, body zeroed.
    tls_tail: bool,
    /// The current packet's body as the decoder will see it (bytes before any gap),
    /// already redacted, up to PREFIX_MAX bytes: what its layout is found from.
    prefix: Vec<u8>,
}

impl Dir {
    fn new(from_client: bool) -> Self {
        Dir { from_client, framer: Framer::default(), tls_tail: false, prefix: Vec::new() }
    }

    /// One syscall's transfer: `data` captured, then `gap` bytes not captured.
    /// `tls`: TLS started in this transfer; set when an SSLRequest completes.
    fn feed(&mut self, data: &mut [u8], gap: u64, seen: &mut Seen, tls: &mut bool) {
        let mut i = 0;
        while let Some(piece) = self.framer.take(&data[i..]) {
            match piece {
                Piece::Header { n, complete } => {
                    i += n;
                    let Some(head) = complete else { continue };
                    if !*tls && !self.plausible(head, seen) {
                        // Misframed: this "header" may be secret bytes.
                        data[i - n..i].fill(0);
                        self.framer.desync();
                    } else {
                        self.start_packet(head, seen, *tls);
                    }
                }
                Piece::Body { n, at, head, gapped, ends } => {
                    // The decoder's payload ends with this piece when the packet does, or a gap follows.
                    let payload_ends = ends || (i + n == data.len() && gap > 0);
                    self.redact_body(&mut data[i..i + n], at as usize, head.len, gapped, payload_ends, seen);
                    i += n;
                    if ends {
                        self.finish_packet(head, gapped, seen, tls);
                    }
                }
            }
        }
        // Packet boundaries lost (now or before): nothing after can be placed.
        data[i..].fill(0);
        let mut gap = usize::try_from(gap).unwrap_or(usize::MAX);
        while let Some(s) = self.framer.skip(gap) {
            gap -= s.n;
            if s.ends {
                self.finish_packet(s.head, true, seen, tls);
            }
        }
    }

    /// Does this header fit the conversation? Sequence ids count up across both
    /// directions; a header read from the middle of data (a lost record) rarely fits.
    fn plausible(&self, head: Header, seen: &Seen) -> bool {
        let seq = head.seq;
        let after = |last: Option<u8>| last.map(|s| s.wrapping_add(1)) == Some(seq);
        if self.from_client {
            if !seen.login {
                // The login (or SSLRequest) answers the greeting (seq 0).
                seq == 1 && head.len <= MAX_LOGIN_LEN
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

    fn start_packet(&mut self, head: Header, seen: &mut Seen, tls_tail: bool) {
        if self.from_client {
            seen.last_client_seq = Some(head.seq);
        } else {
            seen.last_server_seq = Some(head.seq);
        }
        self.tls_tail = tls_tail;
        self.prefix.clear();
        if head.len == 0 {
            self.finish_packet(head, false, seen, &mut false);
        }
    }

    /// Body bytes `chunk`, from body offset `at` of a packet of `len` bytes.
    fn redact_body(&mut self, chunk: &mut [u8], at: usize, len: u32, gapped: bool, payload_ends: bool, seen: &Seen) {
        // Bytes after a gap never reach the decoder; bodies after TLS began are framing only.
        if gapped || self.tls_tail {
            chunk.fill(0);
            return;
        }
        let stored = self.prefix.len();
        let keep = chunk.len().min(PREFIX_MAX.saturating_sub(stored));
        self.prefix.extend_from_slice(&chunk[..keep]);
        let p = Payload::prefix(&self.prefix, len);
        let roles = if self.from_client { client_roles(p, !seen.login) } else { server_roles(p, seen.greeting) };
        let last = chunk.len() - 1;
        for (k, b) in chunk.iter_mut().enumerate() {
            apply(b, roles.role(at + k), payload_ends && k == last);
        }
        // The copy kept for the packet's next bytes holds no secrets either: the layout
        // never depends on a secret byte's value, only (where masked) on its NUL-ness.
        self.prefix[stored..].copy_from_slice(&chunk[..keep]);
    }

    /// The packet is whole (captured or not): what decoding it tells the correlator.
    fn finish_packet(&mut self, head: Header, gapped: bool, seen: &mut Seen, tls: &mut bool) {
        let prefix = std::mem::take(&mut self.prefix);
        if self.tls_tail {
            return;
        }
        // Only the first bytes decide what a packet is: the prefix holds them.
        let p = Payload { bytes: &prefix, len: head.len, cut: gapped || prefix.len() < head.len as usize };
        if self.from_client {
            match decode_client(p, !seen.login) {
                ClientPacket::Login(_) => seen.login = true,
                ClientPacket::SslRequest(_) => *tls = true,
                _ => {}
            }
        } else if let ServerPacket::Greeting(_) = decode_server(p, seen.greeting) {
            seen.greeting = true;
        }
    }
}

/// TLS is lengths only: a transfer keeps the header of the record it starts with (type,
/// version, length: what the wire shows anyone, and what tells the ClientHello and the
/// first application data) and loses the rest.
fn keep_tls_record_header(data: &mut [u8]) {
    const HEADER: usize = 5;
    let is_header = data.len() >= HEADER && (0x14..=0x17).contains(&data[0]) && data[1] == 0x03;
    let keep = if is_header { HEADER } else { 0 };
    data[keep..].fill(0);
}

/// Overwrites a byte by its role; `payload_end`: the decoder's payload ends with it.
fn apply(b: &mut u8, role: Role, payload_end: bool) {
    match role {
        Role::Public => {}
        // The decoder sees whether it is NUL: NUL stays, others become FILLER.
        Role::SecretNul => mask(b),
        Role::SecretNulAtEnd if payload_end => mask(b),
        Role::Secret | Role::SecretNulAtEnd => *b = 0,
    }
}

fn mask(b: &mut u8) {
    if *b != 0 {
        *b = FILLER;
    }
}
