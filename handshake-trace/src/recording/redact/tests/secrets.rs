//! The redactor on recorded-like sessions: secrets zeroed, everything the decoder
//! shows kept, however the stream is cut into records.
use super::*;

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
        // A TLS record's 5-byte header (type, version, length: on the wire for anyone
        // to see) tells the ClientHello and application data apart; the rest goes.
        let (kept, zeroed) = payload_of(rec).split_at(5);
        let orig_head = &payload_of(orig)[..5];
        let is_record = (0x14..=0x17).contains(&orig_head[0]) && orig_head[1] == 0x03;
        assert_eq!(kept, if is_record { orig_head } else { &[0u8; 5][..] });
        assert!(zeroed.iter().all(|&b| b == 0));
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
    // A client starting TLS straight away: the correlator sees 0x16 0x03 and switches;
    // the server, which never agreed, answers a plaintext ERR 1156 (MariaDB 10.11) and
    // resets: kept, like any ERR. The client's later bytes are zeroed.
    let (g, _) = greeting();
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0xf0, 0x01];
    hello.extend(secret(200, 12));
    let err = frame(1, &builders::err(1156, "08S01", "Got packets out of order"));
    let recs = vec![
        accept_rec(GEN),
        write(GEN + 1, &frame(0, &g)),
        read(GEN + 2, &hello),
        write(GEN + 3, &err),
        read(GEN + 4, &secret(90, 13)),
    ];
    let red = redact_all(&recs);
    let p = payload_of(&red[2]);
    assert_eq!(p[..4], hello[..4]);
    assert!(p[4..].iter().all(|&b| b == 0));
    assert_eq!(payload_of(&red[3])[..err.len()], err[..]);
    assert!(payload_of(&red[4]).iter().all(|&b| b == 0));
    let v = replay(&red);
    assert_eq!(v, replay(&recs));
    assert!(matches!(&v.server[1], ServerPacket::Err(e) if e.code == 1156), "{v:?}");
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
    // What follows the response's NUL may be more of it: zeroed, and not decoded.
    let after = 4 + auth.end + 1..lf.len();
    assert_only_secrets_changed(&lf, &stream(&red, true), std::slice::from_ref(&after), &masked);
    let v = replay(&red);
    assert_eq!(v, replay(&recs));
    let ClientPacket::Login(l) = &v.client[0] else { panic!() };
    assert_eq!((l.auth_response_len, l.database.as_deref(), l.auth_plugin.as_deref()), (20, None, None));

    // HandshakeResponse320 with and without a database.
    for with_db in [true, false] {
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_TRANSACTIONS
            | if with_db { CLIENT_CONNECT_WITH_DB } else { 0 };
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
        let after = 4 + at + 9..lf.len();
        assert_only_secrets_changed(&lf, &stream(&red, true), std::slice::from_ref(&after), &masked);
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        let ClientPacket::Login(l) = &v.client[0] else { panic!() };
        assert_eq!((l.user.as_str(), l.auth_response_len), ("lab", 8));
        assert_eq!(l.database, None, "a database after a NUL-terminated response is not shown");
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
        let at = if r.len() == size_of::<AcceptEvent>() {
            offset_of!(AcceptEvent, conn_gen)
        } else {
            offset_of!(SysEvent, conn_gen)
        };
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

/// The socket tier's start of a connection (no fd).
fn established_rec(ts: u64) -> Vec<u8> {
    as_bytes(&handshake_trace_common::EstablishedEvent {
        header: hdr(kind::ESTABLISHED, ts),
        conn_gen: GEN,
        peer_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1],
        local_addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1],
        peer_port: 51234,
        local_port: 3306,
        flags: 0,
    })
}

/// A socket-tier packet record: the packet's first bytes, no fd.
fn packet_rec(ts: u64, syscall: u32, bytes: &[u8]) -> Vec<u8> {
    let mut payload = [0xA5u8; PAYLOAD_MAX];
    payload[..bytes.len()].copy_from_slice(bytes);
    let sys = SysEvent {
        header: hdr(kind::IO, ts),
        conn_gen: GEN,
        ret: bytes.len() as i64,
        duration_ns: 0,
        args: [0; 4],
        fd: handshake_trace_common::NO_FD,
        syscall,
    };
    as_bytes(&IoEvent { sys, captured: bytes.len() as u32, tracking_end: 0, payload })
}

#[test]
fn socket_tier_packets_are_redacted_as_the_syscalls_carrying_them() {
    let (g, _) = greeting();
    let (l, _) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let (gf, lf) = (frame(0, &g), frame(1, &l));
    let syscalls = vec![accept_rec(GEN), write(GEN + 1, &gf), read(GEN + 2, &lf)];
    let socket = vec![established_rec(GEN), packet_rec(GEN + 1, sys::PACKET_OUT, &gf), packet_rec(GEN + 2, sys::PACKET_IN, &lf)];
    let (a, b) = (redact_all(&syscalls), redact_all(&socket));
    for client in [false, true] {
        assert_eq!(stream(&a, client), stream(&b, client), "client side: {client}");
    }
    assert_ne!(stream(&b, true), lf, "the auth response must be zeroed");
    assert_eq!(replay(&b), replay(&socket));
    // A packet of a connection whose start was not seen cannot be placed: zeroed whole.
    let orphan = redact_all(&socket[1..]);
    assert!(payload_of(&orphan[1]).iter().all(|b| *b == 0));
}

/// Issue 22 item 8: a login of exactly 0x0316 bytes starts `16 03 00 01`, a TLS
/// record's look. With no SSLRequest it is a login to the server, so to the decoder
/// and to the redactor alike: its auth response zeroed, its user kept, and the replay
/// shows what the live run did, with no TLS (whether header and body come in one read
/// or two).
#[test]
fn a_login_that_looks_like_a_tls_record_is_redacted_as_a_login() {
    let (g, _) = greeting();
    let mut extra = 0;
    let (l, auth) = loop {
        let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, extra);
        if l.len() >= 0x0316 {
            assert_eq!(l.len(), 0x0316, "a padding that makes the login 0x0316 bytes");
            break (l, auth);
        }
        extra += 1;
    };
    let lf = frame(1, &l);
    assert_eq!(lf[..4], [0x16, 0x03, 0x00, 0x01]);
    for reads in [vec![&lf[..4], &lf[4..]], vec![&lf[..]]] {
        let mut recs = vec![accept_rec(GEN), write(GEN + 1, &frame(0, &g))];
        recs.extend(reads.iter().enumerate().map(|(i, r)| read(GEN + 2 + i as u64, r)));
        recs.push(write(GEN + 9, &frame(2, &ok_body())));
        let red = redact_all(&recs);
        let after = stream(&red, true);
        assert!(after[4 + auth.start..4 + auth.end].iter().all(|&b| b == 0), "the auth response is zeroed");
        assert_eq!(after[..4], lf[..4], "the header is framing, kept");
        let v = replay(&red);
        assert_eq!(v, replay(&recs));
        assert!(!v.tls, "{v:?}");
        let Some(ClientPacket::Login(login)) = v.client.first() else { panic!("a login: {v:?}") };
        assert_eq!(login.auth_response_len, 20);
        let (live, replayed) = (correlate(&recs), correlate(&red));
        assert_eq!(live, replayed);
        assert!(!live.contains("TLS") && live.contains(r#""tls":false"#), "{live}");
    }
}

/// The socket tier's start of a Unix-socket connection (no fd, no address).
fn unix_connected_rec(ts: u64) -> Vec<u8> {
    let mut comm = [0u8; 16];
    comm[..7].copy_from_slice(b"mariadb");
    as_bytes(&handshake_trace_common::UnixConnectEvent {
        header: hdr(kind::UNIX_CONNECTED, ts),
        conn_gen: GEN,
        peer_pid: 4242,
        flags: 0,
        comm,
        listener_ino: 77,
    })
}

#[test]
fn unix_socket_bytes_of_the_socket_tier_are_redacted_as_the_syscalls_carrying_them() {
    let (g, _) = greeting();
    let (l, _) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let (gf, lf) = (frame(0, &g), frame(1, &l));
    let syscalls = vec![accept_rec(GEN), write(GEN + 1, &gf), read(GEN + 2, &lf)];
    // The server's own reads and writes carry a Unix connection's bytes.
    let socket = vec![unix_connected_rec(GEN), packet_rec(GEN + 1, sys::SOCK_SEND, &gf), packet_rec(GEN + 2, sys::SOCK_RECV, &lf)];
    let (a, b) = (redact_all(&syscalls), redact_all(&socket));
    for client in [false, true] {
        assert_eq!(stream(&a, client), stream(&b, client), "client side: {client}");
    }
    assert_ne!(stream(&b, true), lf, "the auth response must be zeroed");
    assert!(!stream(&b, true).windows(AUTH_RESPONSE.len()).any(|w| w == AUTH_RESPONSE), "no auth byte run survives");
    assert_eq!(replay(&b), replay(&socket));
    // Without its start the bytes cannot be placed: zeroed whole.
    let orphan = redact_all(&socket[1..]);
    assert!(payload_of(&orphan[1]).iter().all(|b| *b == 0));
}
