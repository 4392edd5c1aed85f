//! The layouts: what each byte is to a redactor, and that the first bytes of a packet
//! get the roles the whole packet gives them.
use super::super::builders;
use super::super::layout::{AuthSwitchLayout, GreetingLayout, LoginLayout};
use super::super::samples::*;
use super::super::*;

fn runs(r: Roles) -> Vec<(std::ops::Range<usize>, Role)> {
    r.runs().collect()
}

fn login320(with_db: bool) -> Vec<u8> {
    let caps = CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_TRANSACTIONS
        | if with_db { CLIENT_CONNECT_WITH_DB } else { 0 };
    let mut b = (caps as u16).to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff, 0xff, 0xff]);
    b.extend_from_slice(b"lab\0HQ[ZS^AO\0");
    if with_db {
        b.extend_from_slice(b"test\0");
    }
    b
}

/// Payloads of every form, with the direction and state they are decoded in.
fn every_form() -> Vec<(bool, bool, Vec<u8>)> {
    let nul_auth = LOGIN_CAPS & !(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION);
    vec![
        (false, false, mariadb_greeting()),
        (true, true, mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 300)),
        (true, true, mariadb_login(LOGIN_CAPS & !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, &AUTH_RESPONSE, 0)),
        (true, true, mariadb_login(nul_auth, &AUTH_RESPONSE, 0)),
        (true, true, login320(true)),
        (true, true, login320(false)),
        (true, true, mariadb_ssl_request()),
        (false, true, builders::auth_switch("client_ed25519", &[7; 32])),
        (false, true, vec![0x01, 0x04]),
        (false, true, builders::err(1045, "28000", "Access denied")),
        (false, true, ok_payload()),
        (true, false, vec![9; 40]),
    ]
}

fn roles_of(p: Payload, client: bool, state: bool) -> Roles {
    if client {
        client_roles(p, state)
    } else {
        server_roles(p, state)
    }
}

#[test]
fn every_prefix_gets_the_roles_of_the_whole() {
    for (client, state, bytes) in every_form() {
        let whole = roles_of(Payload::whole(&bytes), client, state);
        assert_eq!(whole.known(), bytes.len(), "every byte of a whole packet has a role: {whole:?}");
        for k in 0..bytes.len() {
            let part = roles_of(Payload::prefix(&bytes[..k], bytes.len() as u32), client, state);
            for i in 0..k {
                assert_eq!(part.role(i), whole.role(i), "byte {i} of a {k}-byte prefix of {:02x?}", &bytes[..8]);
            }
        }
    }
}

#[test]
fn greeting_roles_and_spans() {
    let g = mariadb_greeting();
    let l = GreetingLayout::of(Payload::whole(&g));
    let s1 = 1 + 33 + 4;
    assert_eq!(l.scramble1.of(&g), SCRAMBLE1);
    let s2 = l.scramble2.unwrap();
    assert_eq!((s2.start, &s2.of(&g)[..12], s2.len()), (s1 + 8 + 19, &SCRAMBLE2[..], 13));
    assert_eq!(l.auth_plugin.unwrap().string(&g), "mysql_native_password");
    assert_eq!(
        runs(l.roles),
        vec![
            (0..s1, Role::Public),
            (s1..s1 + 8, Role::Secret),
            (s1 + 8..s2.start, Role::Public),
            (s2.start..s2.end - 1, Role::SecretNulAtEnd),
            (s2.end - 1..s2.end, Role::SecretNul),
            (s2.end..g.len(), Role::Public),
        ]
    );
    // Cut inside part 2: its declared extent is known, the plugin's place too.
    let cut = GreetingLayout::of(Payload::prefix(&g[..s2.start + 5], g.len() as u32));
    assert_eq!(cut.scramble2.unwrap().len(), 5);
    assert_eq!(cut.roles.known(), s2.end);
}

#[test]
fn login_roles_and_spans() {
    let b = mariadb_login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let l = LoginLayout::of(Payload::whole(&b), true);
    let auth = l.auth_response.unwrap();
    assert_eq!((auth.span.of(&b), auth.len, auth.whole), (&AUTH_RESPONSE[..], 20, true));
    assert_eq!(l.user.unwrap().string(&b), "lab");
    assert_eq!(
        runs(l.roles),
        vec![
            (0..auth.span.start, Role::Public),
            (auth.span.range(), Role::Secret),
            (auth.span.end..b.len(), Role::Public)
        ]
    );
    // A 300-byte response declared by a 3-byte length: placed before it is captured.
    let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let b = mariadb_login(LOGIN_CAPS, &big, 0);
    let at = 32 + 4 + 3;
    let cut = LoginLayout::of(Payload::prefix(&b[..at + 10], b.len() as u32), true);
    assert_eq!(
        runs(cut.roles),
        vec![(0..at, Role::Public), (at..at + 300, Role::Secret), (at + 300..b.len(), Role::Public)]
    );
    assert_eq!(cut.auth_response.map(|a| (a.len, a.whole)), Some((300, false)));
    // NUL-terminated responses: their NULs are visible.
    let b = login320(false);
    let l = LoginLayout::of(Payload::whole(&b), false);
    assert_eq!(runs(l.roles), vec![(0..9, Role::Public), (9..18, Role::SecretNul)]);
    assert_eq!(l.auth_response.unwrap().len, 8);
}

#[test]
fn auth_switch_and_other_roles() {
    let b = builders::auth_switch("client_ed25519", &[7; 32]);
    let l = AuthSwitchLayout::of(Payload::whole(&b));
    assert_eq!((l.plugin.string(&b), l.data.len()), ("client_ed25519".to_string(), 32));
    assert_eq!(runs(l.roles), vec![(0..16, Role::Public), (16..47, Role::Secret), (47..48, Role::SecretNul)]);
    // AuthMoreData: the first byte only; auth data after the login: nothing.
    assert_eq!(runs(server_roles(Payload::whole(&[1, 2, 3]), true)), vec![(0..1, Role::Public), (1..3, Role::Secret)]);
    assert_eq!(runs(client_roles(Payload::whole(&[1, 2, 3]), false)), vec![(0..3, Role::Secret)]);
    // Before the greeting, an ERR is public and 0x00 is not an OK.
    assert_eq!(runs(server_roles(Payload::whole(&[0xff, 1, 2]), false)), vec![(0..3, Role::Public)]);
    assert_eq!(runs(server_roles(Payload::whole(&[0, 1, 2]), false)), vec![(0..1, Role::Public), (1..3, Role::Secret)]);
}

#[test]
fn kinds_by_capabilities_and_length() {
    let ssl = mariadb_ssl_request();
    assert_eq!(client_kind(Payload::whole(&ssl), true), ClientKind::SslRequest { protocol41: true });
    assert_eq!(client_kind(Payload::whole(&ssl[..31]), true), ClientKind::Other);
    assert_eq!(client_kind(Payload::prefix(&ssl[..1], 32), true), ClientKind::Other);
    assert_eq!(client_kind(Payload::prefix(&ssl[..2], 32), true), ClientKind::SslRequest { protocol41: true });
    assert_eq!(client_kind(Payload::whole(&ssl), false), ClientKind::AuthData);
    assert_eq!(client_kind(Payload::whole(&login320(true)), true), ClientKind::Login { protocol41: false });
    assert_eq!(client_kind(Payload::whole(&[0x00, 0x08, 0, 0, 0]), true), ClientKind::SslRequest { protocol41: false });
    assert_eq!(server_kind(Some(0x0a), false), ServerKind::Greeting);
    assert_eq!(server_kind(Some(0x0a), true), ServerKind::Other);
    assert_eq!(server_kind(None, true), ServerKind::Other);
}
