//! Where MySQL meets TLS: after an SSLRequest the client starts a TLS handshake.

/// TLS record type of a handshake message (ClientHello, ServerHello, ...).
const TLS_HANDSHAKE: u8 = 0x16;
/// TLS record type of application data (everything after the TLS handshake).
const TLS_APPLICATION_DATA: u8 = 0x17;
/// Major version byte of every TLS record (SSL 3.0 .. TLS 1.3).
const TLS_MAJOR: u8 = 0x03;

/// Do these bytes start a TLS handshake record (a ClientHello where a MySQL packet would be)?
pub fn is_tls_handshake_record(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == TLS_HANDSHAKE && bytes[1] == TLS_MAJOR
}

/// Do these bytes start a TLS application-data record?
pub fn is_tls_application_data(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == TLS_APPLICATION_DATA && bytes[1] == TLS_MAJOR
}
