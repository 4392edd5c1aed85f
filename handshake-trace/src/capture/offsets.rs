//! This kernel's tracepoint layouts, read from tracefs format files: the offsets the
//! programs read their fields at (patched into the object before it loads).
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use handshake_trace_common::{TcpOffsets, TracepointOffsets, NO_FIELD};

use super::{
    probes::{attach_points, AttachPoint},
    tracefs,
};

fn field4(fields: &[tracefs::Field], name: &str) -> Result<u32> {
    tracefs::offset_of(fields, name, 4)
}

/// TCP tracepoint layouts: `dport` + `daddr_v6`, or (newer kernels' tcp_send_reset)
/// a 28-byte sockaddr in `daddr`.
pub(super) fn tcp_offsets(fields: &[tracefs::Field], with_state: bool) -> Result<TcpOffsets> {
    end_offsets(fields, with_state, ["dport", "daddr_v6", "daddr"], ["sport", "saddr"])
}

/// The same for the source end (`sport` + `saddr_v6`, or a sockaddr `saddr`), into the
/// same fields: on a client's own socket the source is the client's address.
fn source_offsets(fields: &[tracefs::Field]) -> Result<TcpOffsets> {
    end_offsets(fields, false, ["sport", "saddr_v6", "saddr"], ["dport", "daddr"])
}

/// The client's end (`port_name` + `v6_name`, or a sockaddr) and the server's port
/// (`server_port_name`, or the other sockaddr).
fn end_offsets(
    fields: &[tracefs::Field],
    with_state: bool,
    [port_name, v6_name, sockaddr_name]: [&str; 3],
    [server_port_name, server_sockaddr_name]: [&str; 2],
) -> Result<TcpOffsets> {
    let mut o = TcpOffsets {
        dport: NO_FIELD,
        daddr: NO_FIELD,
        oldstate: NO_FIELD,
        newstate: NO_FIELD,
        protocol: NO_FIELD,
        daddr_is_sockaddr: 0,
        server_port: NO_FIELD,
    };
    match (tracefs::offset_of(fields, port_name, 2), tracefs::offset_of(fields, v6_name, 16)) {
        (Ok(port), Ok(addr)) => {
            (o.dport, o.daddr) = (port, addr);
            // Optional: without it the connection is found by its client alone.
            o.server_port = tracefs::offset_of(fields, server_port_name, 2).unwrap_or(NO_FIELD);
        }
        _ => {
            o.daddr = tracefs::offset_of(fields, sockaddr_name, 28)
                .with_context(|| format!("neither {port_name}+{v6_name} nor a sockaddr {sockaddr_name}"))?;
            o.daddr_is_sockaddr = 1;
            o.server_port = tracefs::offset_of(fields, server_sockaddr_name, 28).unwrap_or(NO_FIELD);
        }
    }
    if with_state {
        o.oldstate = field4(fields, "oldstate")?;
        o.newstate = field4(fields, "newstate")?;
        o.protocol = tracefs::offset_of(fields, "protocol", 2)?;
    }
    Ok(o)
}

/// The syscall arguments' base offset: the fields after `__syscall_nr`, each 8 bytes, back to back.
fn syscall_arg0(fields: &[tracefs::Field]) -> Result<Option<u32>> {
    let nr = fields.iter().position(|f| f.name == "__syscall_nr").context("no __syscall_nr field")?;
    let args = &fields[nr + 1..];
    let Some(first) = args.first() else { return Ok(None) };
    for (i, f) in args.iter().enumerate() {
        if f.size != 8 || f.offset != first.offset + 8 * i as u32 {
            bail!("argument `{}` is not 8 bytes at offset {}", f.name, first.offset + 8 * i as u32);
        }
    }
    Ok(Some(first.offset))
}

/// Read the field offsets the programs need from the format files of this kernel.
/// Returns the offsets and the optional tracepoints this kernel lacks.
pub fn read_offsets(tracefs: &Path) -> Result<(TracepointOffsets, Vec<AttachPoint>)> {
    let mut o = TracepointOffsets::default();
    let mut arg0 = None;
    let mut exit_ret = None;
    let mut missing = Vec::new();
    for p in attach_points() {
        let fields = match tracefs::fields(tracefs, p.category, p.name) {
            Ok(f) => f,
            Err(e) if p.required => return Err(e),
            Err(_) => {
                missing.push(*p);
                continue;
            }
        };
        let ctx = || format!("tracepoint {}:{}", p.category, p.name);
        let same = |seen: &mut Option<u32>, v: u32, what: &str| -> Result<()> {
            if seen.is_some_and(|s| s != v) {
                bail!("syscall tracepoints place {what} at different offsets on this kernel");
            }
            *seen = Some(v);
            Ok(())
        };
        match (p.category, p.name) {
            ("syscalls", n) if n.starts_with("sys_enter_") => {
                if let Some(a) = syscall_arg0(&fields).with_context(ctx)? {
                    same(&mut arg0, a, "arguments")?;
                }
            }
            ("syscalls", _) => {
                let r = tracefs::offset_of(&fields, "ret", 8).with_context(ctx)?;
                same(&mut exit_ret, r, "`ret`")?;
            }
            ("signal", "signal_generate") => {
                o.gen_sig = field4(&fields, "sig").with_context(ctx)?;
                o.gen_errno = field4(&fields, "errno").with_context(ctx)?;
                o.gen_code = field4(&fields, "code").with_context(ctx)?;
                o.gen_pid = field4(&fields, "pid").with_context(ctx)?;
                o.gen_result = field4(&fields, "result").with_context(ctx)?;
            }
            ("signal", "signal_deliver") => {
                o.deliver_sig = field4(&fields, "sig").with_context(ctx)?;
                o.deliver_errno = field4(&fields, "errno").with_context(ctx)?;
                o.deliver_code = field4(&fields, "code").with_context(ctx)?;
            }
            ("sched", _) => o.exit_pid = field4(&fields, "pid").with_context(ctx)?,
            ("tcp", "tcp_retransmit_skb") => {
                o.retransmit = tcp_offsets(&fields, false).with_context(ctx)?;
                o.retransmit_source = source_offsets(&fields).with_context(ctx)?;
            }
            ("tcp", "tcp_send_reset") => o.send_reset = tcp_offsets(&fields, false).with_context(ctx)?,
            ("tcp", "tcp_receive_reset") => o.receive_reset = tcp_offsets(&fields, false).with_context(ctx)?,
            ("sock", _) => o.set_state = tcp_offsets(&fields, true).with_context(ctx)?,
            _ => {}
        }
    }
    o.set_state_fixed = u32::from(o.set_state == handshake_trace_common::SET_STATE_LAYOUT);
    o.syscall_arg0 = arg0.ok_or_else(|| anyhow!("no syscall enter tracepoint"))?;
    o.exit_ret = exit_ret.ok_or_else(|| anyhow!("no syscall exit tracepoint"))?;
    Ok((o, missing))
}


#[cfg(test)]
mod tests {
    use super::*;

    fn fields(names: &[(&str, u32, u32)]) -> Vec<tracefs::Field> {
        names.iter().map(|(n, offset, size)| tracefs::Field { name: n.to_string(), offset: *offset, size: *size }).collect()
    }

    #[test]
    fn the_servers_port_is_the_other_end_of_each_side() {
        let f = fields(&[("sport", 24, 2), ("dport", 26, 2), ("saddr_v6", 40, 16), ("daddr_v6", 56, 16)]);
        let server_socket = tcp_offsets(&f, false).unwrap();
        assert_eq!((server_socket.dport, server_socket.daddr, server_socket.server_port), (26, 56, 24));
        let client_socket = source_offsets(&f).unwrap();
        assert_eq!((client_socket.dport, client_socket.daddr, client_socket.server_port), (24, 40, 26));
    }

    #[test]
    fn a_tracepoint_without_the_servers_port_still_finds_connections_by_their_client() {
        let f = fields(&[("dport", 26, 2), ("daddr_v6", 56, 16)]);
        let o = tcp_offsets(&f, false).unwrap();
        assert_eq!((o.dport, o.daddr, o.server_port), (26, 56, NO_FIELD));
        let sockaddrs = fields(&[("saddr", 8, 28), ("daddr", 36, 28)]);
        let o = tcp_offsets(&sockaddrs, false).unwrap();
        assert_eq!((o.daddr, o.daddr_is_sockaddr, o.server_port), (36, 1, 8));
    }
}
