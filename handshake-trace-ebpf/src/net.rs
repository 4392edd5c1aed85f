//! Socket constants and address layouts (Linux) the programs read, and the one form
//! every peer address is kept in (IPv6, IPv4 v4-mapped, as the TCP tracepoints show it).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// `struct sockaddr_in` / `sockaddr_in6`: family (2 bytes), port (2, network order),
/// then the IPv4 address, or the flow info (4) and the IPv6 address.
pub const SA_PORT: u32 = 2;
pub const SIN_ADDR: u32 = 4;
pub const SIN6_ADDR: u32 = 8;

/// An IPv4 address as `::ffff:a.b.c.d`.
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12..].copy_from_slice(&a);
    addr
}
