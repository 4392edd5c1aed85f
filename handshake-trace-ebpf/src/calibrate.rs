//! Programs that do nothing, on the socket tier's hooks: never attached by the tool.
//! `cargo xtask bench` attaches them on their own to measure what any program on these
//! hooks costs per run (the floor under the socket tier's own programs). Names stay
//! under the kernel's 15 characters so that `bpftool` tells them apart.
use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, tracepoint},
    programs::{BtfTracePointContext, SkBuffContext, TracePointContext},
};

#[btf_tracepoint(function = "sock_recv_length")]
pub fn noop_sock_recv(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn noop_sock_send(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// A classic tracepoint: the kernel fills its trace record before the program runs.
#[tracepoint]
pub fn noop_set_state(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn noop_btf_state(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cgroup_skb(ingress)]
pub fn noop_skb_in(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn noop_skb_out(_ctx: SkBuffContext) -> i32 {
    1
}
