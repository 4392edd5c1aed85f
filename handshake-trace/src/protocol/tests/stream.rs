//! PacketStream: reassembly across feeds, gaps and lost boundaries; the strict
//! framing the lab uses; garbage never panics.
use super::super::builders::push_lenenc_int;
use super::super::samples::*;
use super::super::*;

#[test]
fn stream_header_and_body_in_two_feeds() {
    // MariaDB reads the 4-byte header, then the body.
    let f = frame(1, &mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0));
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

fn decode_all(p: &Packet) {
    for flag in [false, true] {
        let _ = format!("{:?}", decode_server(p, flag));
        let _ = format!("{:?}", decode_client(p, flag));
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds = [
        mariadb_greeting(),
        mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0),
        mariadb_login(0x0000_a20f, &AUTH_RESPONSE, 0),
        vec![0xfe],
        vec![0xff],
    ];
    let mut stream = PacketStream::new();
    let mut decoded = 0usize;
    for round in 0..20_000 {
        let mut bytes: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            // Mutated real packets reach the deeper fields.
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(6) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
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
        let keep = rng.below(bytes.len() + 1);
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
        let captured = rng.below(input.len() + 1);
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

#[test]
fn split_packets_rejects_incomplete() {
    let mut two = frame(1, &ok_payload());
    two.extend(frame(2, &ok_payload()));
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
        assert_eq!(r.lenenc(), Some(n));
        assert!(r.is_empty(), "{n} encoded with trailing bytes");
    }
}

#[test]
fn oversized_payload_is_split() {
    let payload = vec![7u8; MAX_PAYLOAD + 5];
    let pkts = split_packets(&frame(3, &payload)).unwrap();
    assert_eq!(pkts.len(), 2);
    assert_eq!((pkts[0].0, pkts[0].1.len()), (3, MAX_PAYLOAD));
    assert_eq!((pkts[1].0, pkts[1].1.len()), (4, 5));
    // Exactly MAX_PAYLOAD needs a trailing empty packet.
    let pkts = split_packets(&frame(0, &payload[..MAX_PAYLOAD])).unwrap();
    assert_eq!(pkts.len(), 2);
    assert!(pkts[1].1.is_empty());
    // The stream reassembles the chain as the packets it is.
    let mut s = PacketStream::new();
    let bytes = frame(3, &payload);
    let got = s.feed(&bytes, bytes.len());
    assert_eq!(got.iter().map(|p| (p.seq, p.len)).collect::<Vec<_>>(), vec![(3, MAX_PAYLOAD as u32), (4, 5)]);
}

#[test]
fn framer_pieces_and_gaps() {
    // A header in two pieces, a body in two, a gap to the end of the packet.
    let mut f = Framer::default();
    assert_eq!(f.take(&[5, 0]), Some(Piece::Header { n: 2, complete: None }));
    assert!(f.mid_packet());
    assert_eq!(f.still_needed(), 2);
    let head = Header { seq: 1, len: 5 };
    assert_eq!(f.take(&[0, 1, b'a', b'b']), Some(Piece::Header { n: 2, complete: Some(head) }));
    assert_eq!(f.take(b"ab"), Some(Piece::Body { n: 2, at: 0, head, gapped: false, ends: false }));
    assert_eq!((f.pending(), f.still_needed()), (6, 3));
    assert_eq!(f.skip(2), Some(Skipped { n: 2, head, ends: false }));
    assert_eq!(f.take(b"e!"), Some(Piece::Body { n: 1, at: 4, head, gapped: true, ends: true }));
    assert!(!f.mid_packet());
    // An empty packet is whole at its header; a header in a gap loses the boundaries.
    assert_eq!(f.take(&[0, 0, 0, 7]), Some(Piece::Header { n: 4, complete: Some(Header { seq: 7, len: 0 }) }));
    assert_eq!(f.skip(1), None);
    assert!(f.is_desynced());
    assert_eq!(f.take(b"abc"), None);
    let mut f = Framer::default();
    f.take(&[1, 0, 0]);
    f.desync();
    assert_eq!((f.take(&[0]), f.pending(), f.still_needed()), (None, 0, 0));
}

/// Issue 22 item 4: a packet of 60 KB fed a byte at a time keeps only its first
/// PAYLOAD_KEPT bytes (a login of up to 16 MiB cannot grow the stream's buffer), and
/// the packet still decodes as far as those go.
#[test]
fn a_long_packet_fed_a_byte_at_a_time_keeps_only_its_prefix() {
    use crate::protocol::{builders, decode_client, ClientPacket, CLIENT_CONNECT_ATTRS, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION, PAYLOAD_KEPT};
    let pad = "x".repeat(60_000);
    let body = builders::login(&builders::LoginSpec {
        capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS,
        max_packet: 1 << 24,
        charset: 33,
        extended_capabilities: 0,
        user: "lab",
        auth_response: &[0xA5; 20],
        database: "",
        auth_plugin: "mysql_native_password",
        attrs: &[("pad", &pad)],
    });
    let wire = crate::protocol::frame(1, &body);
    let mut s = PacketStream::new();
    let mut out = Vec::new();
    for b in &wire {
        out.extend(s.feed(std::slice::from_ref(b), 1));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].len as usize, body.len());
    assert_eq!(out[0].payload.len(), PAYLOAD_KEPT);
    assert!(out[0].payload.capacity() < 2 * PAYLOAD_KEPT);
    let ClientPacket::Login(l) = decode_client(&out[0], true) else { panic!("a login") };
    assert_eq!((l.user.as_str(), l.auth_response_len, l.auth_plugin.as_deref()), ("lab", 20, Some("mysql_native_password")));
}
