//! Packet framing: a 3-byte little-endian payload length and a sequence id before
//! every payload. [`Framer`] follows one direction of a byte stream, captured or not,
//! and says which bytes are headers and which are bodies; [`PacketStream`] (the
//! decoder's reassembly) and the redactor both follow streams with it.
use std::fmt;

use super::reader::Reader;

/// Bytes before every payload: length (3, little-endian) and sequence id (1).
pub const HEADER_LEN: usize = 4;
/// Largest payload of one packet; a longer one continues in the next packet.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;
/// Payload bytes of a packet kept for decoding, from its start: more than any greeting
/// or login needs up to its last field the tool shows (a server version, a user name
/// of at most 128 characters, 512 bytes, a database, a plugin; the attributes are
/// shown as far as they fit). A client may send a login of up to 16 MiB, a byte at a
/// time: the bytes past this are counted, never kept. The redactor keeps the same
/// prefix to place secrets, so the decoder never reads a byte the redactor did not
/// look at (and `analyze` decodes what the live run did).
pub const PAYLOAD_KEPT: usize = 1024;

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

/// A payload as the decoders read it: the captured bytes, borrowed, and the declared length.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    pub bytes: &'a [u8],
    /// Declared payload length.
    pub len: u32,
    /// The capture stopped before the payload's end: an unterminated string at the end is partial.
    pub cut: bool,
}

impl<'a> Payload<'a> {
    /// A complete payload.
    pub fn whole(bytes: &'a [u8]) -> Self {
        Payload { bytes, len: u32::try_from(bytes.len()).unwrap_or(u32::MAX), cut: false }
    }

    /// The first bytes of a payload of `len` bytes.
    pub fn prefix(bytes: &'a [u8], len: u32) -> Self {
        Payload { bytes, len, cut: bytes.len() < len as usize }
    }
}

impl<'a> From<&'a Packet> for Payload<'a> {
    fn from(p: &'a Packet) -> Self {
        Payload { bytes: &p.payload, len: p.len, cut: p.truncated || p.payload.len() < p.len as usize }
    }
}

// Secrets again: sizes only.
impl fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("len", &self.len)
            .field("captured", &self.bytes.len())
            .field("cut", &self.cut)
            .finish()
    }
}

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub seq: u8,
    /// Declared payload length.
    pub len: u32,
}

impl Header {
    pub fn parse(b: [u8; HEADER_LEN]) -> Self {
        Header { seq: b[3], len: u32::from_le_bytes([b[0], b[1], b[2], 0]) }
    }
}

/// What the next bytes of a stream are (see [`Framer::take`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `n` bytes of a header; `complete` once its last byte came. A complete header
    /// of length 0 is a whole (empty) packet.
    Header { n: usize, complete: Option<Header> },
    /// `n` body bytes from body offset `at`. `gapped`: bytes of this packet before them
    /// were not captured (a decoder never sees them). `ends`: the packet is complete.
    Body { n: usize, at: u32, head: Header, gapped: bool, ends: bool },
}

/// Body bytes that went by uncaptured (see [`Framer::skip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub n: usize,
    pub head: Header,
    /// The packet is complete.
    pub ends: bool,
}

#[derive(Debug, Clone)]
enum Frame {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Body {
        head: Header,
        done: u32,
        gapped: bool,
    },
    /// A header fell into uncaptured bytes (or the caller gave up): boundaries are lost for good.
    Desynced,
}

const NO_HEADER: Frame = Frame::Header { buf: [0; HEADER_LEN], have: 0 };

/// Where one direction of a stream stands between packet boundaries. Holds at most a
/// partial header's bytes: no `Debug` of them.
#[derive(Clone)]
pub struct Framer {
    frame: Frame,
}

impl Default for Framer {
    fn default() -> Self {
        Framer { frame: NO_HEADER }
    }
}

impl Framer {
    /// The next piece of captured `data` (a header's bytes or a body's, never both);
    /// None when `data` is empty or boundaries are lost.
    pub fn take(&mut self, data: &[u8]) -> Option<Piece> {
        if data.is_empty() {
            return None;
        }
        match &mut self.frame {
            Frame::Desynced => None,
            Frame::Header { buf, have } => {
                let n = (HEADER_LEN - *have).min(data.len());
                buf[*have..*have + n].copy_from_slice(&data[..n]);
                *have += n;
                if *have < HEADER_LEN {
                    return Some(Piece::Header { n, complete: None });
                }
                let head = Header::parse(*buf);
                self.frame = if head.len == 0 { NO_HEADER } else { Frame::Body { head, done: 0, gapped: false } };
                Some(Piece::Header { n, complete: Some(head) })
            }
            Frame::Body { head, done, gapped } => {
                let (head, at, gapped) = (*head, *done, *gapped);
                let n = ((head.len - at) as usize).min(data.len());
                let ends = self.advance(n);
                Some(Piece::Body { n, at, head, gapped, ends })
            }
        }
    }

    /// Up to `gap` bytes that went by uncaptured. None when there is nothing to skip
    /// or boundaries are lost, including now: a header in uncaptured bytes loses them.
    pub fn skip(&mut self, gap: usize) -> Option<Skipped> {
        if gap == 0 {
            return None;
        }
        match &mut self.frame {
            Frame::Desynced => None,
            Frame::Header { .. } => {
                self.frame = Frame::Desynced;
                None
            }
            Frame::Body { head, done, gapped } => {
                *gapped = true;
                let head = *head;
                let n = ((head.len - *done) as usize).min(gap);
                let ends = self.advance(n);
                Some(Skipped { n, head, ends })
            }
        }
    }

    /// `n` more body bytes went by; true when that completes the packet.
    fn advance(&mut self, n: usize) -> bool {
        let Frame::Body { head, done, .. } = &mut self.frame else { return false };
        *done += n as u32;
        if *done < head.len {
            return false;
        }
        self.frame = NO_HEADER;
        true
    }

    /// Give up on the boundaries (the caller found them implausible).
    pub fn desync(&mut self) {
        self.frame = Frame::Desynced;
    }

    pub fn is_desynced(&self) -> bool {
        matches!(self.frame, Frame::Desynced)
    }

    /// Bytes received that are not yet part of a complete packet (header included).
    pub fn pending(&self) -> usize {
        match &self.frame {
            Frame::Header { have, .. } => *have,
            Frame::Body { done, .. } => HEADER_LEN + *done as usize,
            Frame::Desynced => 0,
        }
    }

    /// Bytes until the current header or packet is complete.
    pub fn still_needed(&self) -> usize {
        match &self.frame {
            Frame::Header { have, .. } => HEADER_LEN - have,
            Frame::Body { head, done, .. } => (head.len - done) as usize,
            Frame::Desynced => 0,
        }
    }

    /// A header or a packet was started and is not complete.
    pub fn mid_packet(&self) -> bool {
        self.pending() > 0
    }
}

/// Reassembles one direction of a connection's byte stream into packets.
#[derive(Default)]
pub struct PacketStream {
    framer: Framer,
    /// The current packet's payload bytes captured before any gap, at most [`PAYLOAD_KEPT`].
    payload: Vec<u8>,
}

// Partial payloads may be secrets: no bytes in Debug.
impl fmt::Debug for PacketStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketStream").field("pending", &self.pending()).field("desynced", &self.is_desynced()).finish()
    }
}

impl PacketStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one syscall's transfer: `captured` is the prefix we have, `total`
    /// the number of bytes the syscall moved. Returns the packets this completes.
    /// Captured bytes beyond `total` are ignored: they were never part of the stream.
    pub fn feed(&mut self, captured: &[u8], total: usize) -> Vec<Packet> {
        let mut out = Vec::new();
        self.feed_each(captured, total, |p| out.push(p.clone()));
        out
    }

    /// [`PacketStream::feed`], showing each packet to `out` as it completes (the
    /// correlator's way: no Vec per read or write, and the payload's buffer is the
    /// stream's own, reused for its next packet).
    pub fn feed_each(&mut self, captured: &[u8], total: usize, mut out: impl FnMut(&Packet)) {
        let known = &captured[..captured.len().min(total)];
        let mut i = 0;
        while let Some(piece) = self.framer.take(&known[i..]) {
            match piece {
                Piece::Header { n, complete } => {
                    i += n;
                    match complete {
                        Some(head) if head.len == 0 => out(&Packet { seq: head.seq, len: 0, payload: Vec::new(), truncated: false }),
                        // Room bounded by what one syscall capture can bring, not by the declared length.
                        Some(head) => {
                            self.payload.clear();
                            self.payload.reserve((head.len as usize).min(256));
                        }
                        None => {}
                    }
                }
                Piece::Body { n, head, gapped, ends, .. } => {
                    if !gapped {
                        let room = PAYLOAD_KEPT.saturating_sub(self.payload.len());
                        self.payload.extend_from_slice(&known[i..i + n.min(room)]);
                    }
                    i += n;
                    if ends {
                        self.finish(head, gapped, &mut out);
                    }
                }
            }
        }
        let mut gap = total - known.len();
        while let Some(s) = self.framer.skip(gap) {
            gap -= s.n;
            if s.ends {
                self.finish(s.head, true, &mut out);
            }
        }
    }

    fn finish(&mut self, head: Header, truncated: bool, out: &mut impl FnMut(&Packet)) {
        let p = Packet { seq: head.seq, len: head.len, payload: std::mem::take(&mut self.payload), truncated };
        out(&p);
        self.payload = p.payload;
        self.payload.clear();
    }

    pub fn is_desynced(&self) -> bool {
        self.framer.is_desynced()
    }

    /// Give up on the boundaries (what came before the packets could not be placed).
    pub fn desync(&mut self) {
        self.framer.desync();
    }

    /// Bytes received that are not yet part of a complete packet (header included).
    /// A packet has started and not ended: the next bytes are inside it.
    pub fn mid_packet(&self) -> bool {
        self.framer.mid_packet()
    }

    pub fn pending(&self) -> usize {
        self.framer.pending()
    }
}

/// Appends one packet (or, from [`MAX_PAYLOAD`] bytes on, the chain of packets the
/// protocol requires) to `out`, advancing `seq` once per physical packet.
pub fn push_packet(out: &mut Vec<u8>, seq: &mut u8, payload: &[u8]) {
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

/// A payload framed as a packet with sequence id `seq` (several, with consecutive
/// ids, from [`MAX_PAYLOAD`] bytes on).
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    let mut seq = seq;
    push_packet(&mut out, &mut seq, payload);
    out
}

/// Splits a buffer into (seq, payload) packets; Err if a packet is incomplete.
/// Physical packets are returned as they are: a payload split at [`MAX_PAYLOAD`] is not rejoined.
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
