//! Socket constants and address layouts (Linux) the programs read, and the one form
//! every peer address is kept in (IPv6, IPv4 v4-mapped, as the TCP tracepoints show it).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// `struct sockaddr_in` / `sockaddr_in6`: family (2 bytes), port (2, network order),
/// then the IPv4 address, or the flow info (4) and the IPv6 address.
pub const SA_PORT: u32 = 2;
pub const SIN_ADDR: u32 = 4;
pub const SIN6_ADDR: u32 = 8;

/// Make `addr` (all zeros, as in a fresh `PeerKey`) the IPv4 address `a` as
/// `::ffff:a.b.c.d`. In place: a returned array would cost a copy.
#[inline(always)]
pub fn set_v4_mapped(addr: &mut [u8; 16], a: [u8; 4]) {
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12] = a[0];
    addr[13] = a[1];
    addr[14] = a[2];
    addr[15] = a[3];
}
