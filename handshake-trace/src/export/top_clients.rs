//! Who is failing: the clients (address, and user when known) with the most abnormal
//! handshakes over a sliding window, served on /top. Bounded: at most
//! `k × ENTRIES_PER_K` clients are followed; past that the one with the fewest
//! abnormal handshakes in the window (the least recently seen among equals) is evicted,
//! and evictions are counted. User names are what the client typed (a password typed
//! into the user field among them): followed and served only when asked (`--top-users`);
//! otherwise clients are told apart by address alone.
use std::{collections::HashMap, net::IpAddr};

use serde::Serialize;

use crate::{correlate::Handshake, output::names, verdict::Verdict};

/// Clients followed per place in the top-K.
pub const ENTRIES_PER_K: usize = 8;
/// The window is counted in this many slots (it slides by one slot at a time).
const SLOTS: u64 = 10;
/// A user name longer than this is cut (it comes from the client).
const MAX_USER: usize = 64;

/// A client: its address (no port: each connection has its own) and user, when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Client {
    /// None for a Unix-socket client (or an address the tracer did not see).
    addr: Option<IpAddr>,
    user: Option<String>,
}

#[derive(Debug, Default)]
struct Entry {
    /// (slot number, abnormal handshakes by verdict) for the slots in the window, oldest first.
    slots: Vec<(u64, [u32; Verdict::ALL.len()])>,
    last_ns: u64,
}

impl Entry {
    fn total(&self) -> u64 {
        self.slots.iter().flat_map(|(_, c)| c.iter()).map(|&n| n as u64).sum()
    }

    fn expire(&mut self, first_live_slot: u64) {
        self.slots.retain(|(s, _)| *s >= first_live_slot);
    }
}

/// The bounded table behind /top.
#[derive(Debug)]
pub struct TopClients {
    k: usize,
    slot_ns: u64,
    window_s: u64,
    /// Tell clients apart by user name too (and serve the names).
    users: bool,
    entries: HashMap<Client, Entry>,
    /// Clients pushed out by the bound.
    pub evictions: u64,
}

/// One client of the top-K, as /top serves it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TopClient {
    /// The client's address ("unix" for a Unix-socket client).
    pub client: String,
    /// Only with `--top-users` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Abnormal handshakes in the window.
    pub abnormal: u64,
    /// The same, by verdict.
    pub verdicts: std::collections::BTreeMap<&'static str, u64>,
}

/// What /top serves.
#[derive(Debug, Serialize)]
pub struct TopReport {
    pub window_seconds: u64,
    pub k: usize,
    pub clients_followed: usize,
    pub evictions: u64,
    /// Whether clients are told apart by user name (`--top-users`).
    pub users: bool,
    pub top: Vec<TopClient>,
}

impl TopClients {
    /// `users`: follow and serve user names too.
    pub fn new(k: usize, window_s: u64, users: bool) -> Self {
        let window_s = window_s.max(1);
        // Saturating: a window of u64::MAX seconds is "all of them", not a wrapped few.
        let slot_ns = (window_s.saturating_mul(1_000_000_000) / SLOTS).max(1);
        TopClients { k: k.max(1), slot_ns, window_s, users, entries: HashMap::new(), evictions: 0 }
    }

    /// Clients followed at most.
    pub fn capacity(&self) -> usize {
        self.k * ENTRIES_PER_K
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn first_live_slot(&self, now_ns: u64) -> u64 {
        (now_ns / self.slot_ns).saturating_sub(SLOTS - 1)
    }

    /// Count a finished handshake (only abnormal ones count); `now_ns` on the trace's clock.
    pub fn record(&mut self, h: &Handshake, now_ns: u64) {
        let verdict = h.verdict().unwrap_or(Verdict::Incomplete);
        if verdict == Verdict::Ok {
            return;
        }
        let user = if self.users { h.login.as_ref().map(|l| l.user.chars().take(MAX_USER).collect()) } else { None };
        let client = Client { addr: if h.unix { None } else { h.client.map(|a| a.ip()) }, user };
        if !self.entries.contains_key(&client) && self.entries.len() >= self.capacity() {
            self.evict(now_ns);
        }
        let slot = now_ns / self.slot_ns;
        let first = self.first_live_slot(now_ns);
        let index = Verdict::ALL.iter().position(|v| *v == verdict).unwrap_or(Verdict::ALL.len() - 1);
        let e = self.entries.entry(client).or_default();
        match e.slots.last_mut() {
            Some((s, counts)) if *s == slot => counts[index] += 1,
            _ => {
                let mut counts = [0; Verdict::ALL.len()];
                counts[index] = 1;
                e.slots.push((slot, counts));
            }
        }
        e.last_ns = e.last_ns.max(now_ns);
        e.expire(first);
    }

    /// Forget clients with nothing left in the window; at the bound, evict the one with
    /// the fewest abnormal handshakes (the least recently seen among equals).
    fn evict(&mut self, now_ns: u64) {
        self.expire(now_ns);
        if self.entries.len() < self.capacity() {
            return;
        }
        let victim = self.entries.iter().min_by_key(|(_, e)| (e.total(), e.last_ns)).map(|(c, _)| c.clone());
        if let Some(c) = victim {
            self.entries.remove(&c);
            self.evictions += 1;
        }
    }

    /// Drop what has slid out of the window.
    pub fn expire(&mut self, now_ns: u64) {
        let first = self.first_live_slot(now_ns);
        self.entries.values_mut().for_each(|e| e.expire(first));
        self.entries.retain(|_, e| !e.slots.is_empty());
    }

    /// The top K clients by abnormal handshakes in the window ending at `now_ns`.
    pub fn report(&mut self, now_ns: u64) -> TopReport {
        self.expire(now_ns);
        let mut top: Vec<TopClient> = self
            .entries
            .iter()
            .map(|(c, e)| {
                let mut verdicts = std::collections::BTreeMap::new();
                for (i, v) in Verdict::ALL.iter().enumerate() {
                    let n: u64 = e.slots.iter().map(|(_, counts)| counts[i] as u64).sum();
                    if n > 0 {
                        verdicts.insert(names::verdict(*v), n);
                    }
                }
                TopClient {
                    client: c.addr.map(|a| a.to_string()).unwrap_or_else(|| "unix".into()),
                    user: c.user.clone(),
                    abnormal: e.total(),
                    verdicts,
                }
            })
            .collect();
        top.sort_by(|a, b| b.abnormal.cmp(&a.abnormal).then_with(|| a.client.cmp(&b.client)).then_with(|| a.user.cmp(&b.user)));
        top.truncate(self.k);
        TopReport { window_seconds: self.window_s, k: self.k, clients_followed: self.entries.len(), evictions: self.evictions, users: self.users, top }
    }
}
