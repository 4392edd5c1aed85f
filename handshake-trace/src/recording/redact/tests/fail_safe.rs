//! The redactor where records were lost, bytes are stale or unknown, connections
//! many, data peeked or garbage: it fails safe and never panics.
use super::*;

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
fn an_end_riding_on_the_reply_forgets_the_connection() {
    // The kernel ends tracking inside the I/O record of the reply (no record of its own).
    let mut r = Redactor::new();
    r.redact(&mut accept_rec(GEN));
    let (g, _) = greeting();
    let (l, _) = login(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH, &secret(20, 3), 0);
    r.redact(&mut write(GEN + 1, &frame(0, &g)));
    r.redact(&mut read(GEN + 2, &frame(1, &l)));
    assert_eq!(r.connections(), 1);
    let ok = frame(2, &ok_body());
    let mut reply = write(GEN + 3, &ok);
    reply[offset_of!(IoEvent, tracking_end)..][..4].copy_from_slice(&(end::REPLY as u32).to_ne_bytes());
    r.redact(&mut reply);
    assert_eq!(payload_of(&reply)[..ok.len()], ok[..], "the OK itself is kept");
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
    assert_eq!(
        payload_of(&newest)[..gf.len()].iter().filter(|&&b| b != 0).count(),
        gf.iter().filter(|&&b| b != 0).count() - 20
    );
}

#[test]
fn lost_records_fail_safe() {
    let (g, _) = greeting();
    let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let lf = frame(1, &l);
    // The login's header read was lost (ring buffer full): its body looks like a
    // header with a huge length and a wrong sequence id.
    let recs = vec![
        accept_rec(GEN),
        write(GEN + 1, &frame(0, &g)),
        read(GEN + 3, &lf[4..]),
        write(GEN + 4, &frame(2, &ok_body())),
    ];
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

#[test]
fn fuzz_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (recs, _, _) = ed25519_session();
    let (g, _) = greeting();
    let seeds: Vec<Vec<u8>> = vec![
        frame(0, &g),
        frame(1, &login(LOGIN_CAPS, &AUTH_RESPONSE, 0).0),
        frame(
            1,
            &login(LOGIN_CAPS & !CLIENT_SECURE_CONNECTION & !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, &AUTH_RESPONSE, 0)
                .0,
        ),
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

/// Found by the `redactor` fuzz target (2026-11-30, 113 k runs): a login read whose
/// trailing bytes hold an implausible "header" (zeroed, the stream desynced), then a
/// server packet of seq 2 with no greeting before it. Redacting the redacted records
/// again zeroes that server header too: the desync's zeros read as zero-length client
/// packets of seq 0, after which seq 2 no longer fits. So redaction is not idempotent;
/// what holds, and is checked here and by the target, is that every pass only zeroes or
/// masks: no byte is ever given back.
#[test]
fn a_second_pass_only_zeroes_or_masks() {
    let input = include_bytes!("../../../../tests/fixtures/fuzz/redactor-second-pass.bin");
    let mut records = Vec::new();
    let mut rest = &input[..];
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        records.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let (mut once, mut twice) = (Redactor::new(), Redactor::new());
    let mut zeroed_again = 0;
    for raw in records {
        let mut first = raw.to_vec();
        once.redact(&mut first);
        let mut second = first.clone();
        twice.redact(&mut second);
        for (i, ((&r, &a), &b)) in raw.iter().zip(&first).zip(&second).enumerate() {
            assert!(a == r || a == 0 || a == FILLER, "byte {i}: {r:#04x} became {a:#04x}");
            assert!(b == a || b == 0 || b == FILLER, "byte {i}: {a:#04x} became {b:#04x} on a second pass");
            zeroed_again += usize::from(b != a);
        }
    }
    assert!(zeroed_again > 0, "the input no longer shows the second pass zeroing more");
}
