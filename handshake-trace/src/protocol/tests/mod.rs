//! The decoder on real packets, whole and cut; the stream reassembly; the roles
//! the layouts give each byte.
mod layout;
mod stream;

use super::builders;
use super::samples::*;
use super::*;

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
    g.extend_from_slice(&SCRAMBLE1);
    g.push(0);
    g.extend_from_slice(&((CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION) as u16).to_le_bytes());
    g.push(8);
    g.extend_from_slice(&[0x02, 0x00]);
    g.extend_from_slice(&[0, 0]);
    g.push(0);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(&SCRAMBLE2);
    g.push(0);
    let ServerPacket::Greeting(g) = decode_server(&pkt(0, &g), false) else { panic!() };
    assert_eq!(g.server_version, "5.1.73");
    assert_eq!(g.capabilities, CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION);
    assert_eq!(g.auth_plugin, None);
    assert_eq!(g.scramble_len, 20);
}

#[test]
fn login41_with_db_plugin_and_attrs() {
    let bytes = mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let l = login_of(decode_client(&pkt(1, &bytes), true));
    assert!(l.protocol41);
    assert_eq!(l.capabilities, LOGIN_CAPS);
    assert_eq!(l.max_packet, 0x0100_0000);
    assert_eq!(l.charset, 45);
    assert_eq!(l.user, "lab");
    assert_eq!(l.auth_response_len, 20);
    assert_eq!(l.database.as_deref(), Some("shop"));
    assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
    assert_eq!(l.attrs.iter().collect::<Vec<_>>(), ATTRS.to_vec());
    assert_eq!(l.attrs.get("_client_name"), Some("libmariadb"));
    assert_eq!(l.attrs.get("program_name"), Some("mysql"));
    assert!(!l.truncated);
}

#[test]
fn login41_auth_length_byte_and_nul_terminated() {
    let caps = LOGIN_CAPS & !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let l = login_of(decode_client(&pkt(1, &mariadb_login(caps, &AUTH_RESPONSE, 0)), true));
    assert_eq!((l.auth_response_len, l.database.as_deref(), l.attrs.len()), (20, Some("shop"), 7));

    // Neither flag: the auth response is NUL-terminated (AUTH_RESPONSE has no zero byte).
    let caps = caps & !CLIENT_SECURE_CONNECTION;
    let l = login_of(decode_client(&pkt(1, &mariadb_login(caps, &AUTH_RESPONSE, 0)), true));
    // What follows its NUL may be more of a binary response: nothing is read from it.
    assert_eq!(l.auth_response_len, 20);
    assert_eq!((l.database.as_deref(), l.auth_plugin.as_deref(), l.attrs.len()), (None, None, 0));
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
    let bytes = mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
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
    let bytes = mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let plugin_end = bytes.windows(22).position(|w| w == b"mysql_native_password\0").unwrap() + 22;
    // Cut inside the attributes, after the _client_name pair and 3 bytes into the next key.
    let keep = plugin_end + 1 + 1 + 12 + 1 + 10 + 3;
    let l = login_of(decode_client(&cut_pkt(1, &bytes, keep), true));
    assert!(l.truncated);
    assert_eq!(l.user, "lab");
    assert_eq!(l.auth_response_len, 20);
    assert_eq!(l.database.as_deref(), Some("shop"));
    assert_eq!(l.auth_plugin.as_deref(), Some("mysql_native_password"));
    assert_eq!(l.attrs.iter().collect::<Vec<_>>(), [("_client_name", "libmariadb")]);

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
    let want = Login {
        protocol41: false,
        capabilities: caps,
        max_packet: 0xffffff,
        charset: 0,
        user: "lab".into(),
        auth_response_len: 8,
        // After a NUL-terminated response: maybe more of it, never shown.
        database: None,
        auth_plugin: None,
        attrs: Default::default(),
        truncated: false,
    };
    assert_eq!(login_of(decode_client(&pkt(1, &b), true)), want);

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
    let l = login_of(decode_client(&pkt(2, &mariadb_login(LOGIN_CAPS | CLIENT_SSL, &AUTH_RESPONSE, 0)), true));
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
    let b = builders::err(1045, "28000", msg);
    assert_eq!(b[..9], [0xff, 0x15, 0x04, b'#', b'2', b'8', b'0', b'0', b'0']);
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
    let ServerPacket::Err(e) = decode_server(&pkt(0, &builders::err(1129, "HY000", msg)), false) else { panic!() };
    assert_eq!(e, ErrPacket { code: 1129, sqlstate: Some("HY000".into()), message: msg.into() });
    assert_eq!(error_name(1129), Some("ER_HOST_IS_BLOCKED"));
}

#[test]
fn auth_switch() {
    let mut b = vec![0xfe];
    b.extend_from_slice(b"caching_sha2_password\0");
    b.extend_from_slice(&SCRAMBLE1);
    b.extend_from_slice(&SCRAMBLE2);
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
