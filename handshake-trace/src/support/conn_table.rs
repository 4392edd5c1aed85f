//! The one table of connections every stage that follows connections uses (the
//! correlator, the `--port` filter, the redactor): keyed by (process, fd,
//! generation), bounded, the oldest evicted first, and aware of fd numbers reused by
//! a newer accept.
use std::collections::VecDeque;

use super::int_hash::IntMap;

/// A connection: its process, its fd there, and its generation (the accept's
/// timestamp), which tells apart connections that had the same fd number.
pub type ConnKey = (u32, i32, u64);

/// What an insert did besides inserting.
#[derive(Debug)]
pub struct Inserted<V> {
    /// An older connection still in the table on the same (process, fd): its fd number
    /// was reused, so it has ended or is ending (its close may still come).
    pub reused_fd_of: Option<ConnKey>,
    /// Connections evicted to stay within the bound, oldest first.
    pub evicted: Vec<(ConnKey, V)>,
    /// The key was in the table already (a connection announced twice, or two with one
    /// generation; a crafted trace): the entry there stays, and this value, not
    /// inserted, is handed back. Never counted as an eviction: the table is not full.
    pub duplicate: Option<V>,
}

#[derive(Debug)]
pub struct ConnTable<V> {
    entries: IntMap<ConnKey, V>,
    /// Keys in insertion order, for evicting the oldest. Keys removed since stay until
    /// eviction or compaction skips them: no scan per removal.
    order: VecDeque<ConnKey>,
    /// Generation of the newest connection inserted on each (process, fd).
    newest_on_fd: IntMap<(u32, i32), u64>,
    max: usize,
}

impl<V> ConnTable<V> {
    /// A table of at most `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        ConnTable { entries: IntMap::default(), order: VecDeque::new(), newest_on_fd: IntMap::default(), max: max.max(1) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &ConnKey) -> bool {
        self.entries.contains_key(key)
    }

    pub fn get(&self, key: &ConnKey) -> Option<&V> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.values_mut()
    }

    /// Add a connection; past the bound the oldest are evicted and handed back. A key
    /// already in the table keeps its entry: the value comes back as `duplicate`.
    pub fn insert(&mut self, key: ConnKey, value: V) -> Inserted<V> {
        if self.entries.contains_key(&key) {
            return Inserted { reused_fd_of: None, evicted: Vec::new(), duplicate: Some(value) };
        }
        let (pid, fd, gen) = key;
        // A connection without an fd (the socket tier) reuses no number.
        let reused_fd_of = (fd >= 0)
            .then(|| self.newest_on_fd.insert((pid, fd), gen))
            .flatten()
            .filter(|old| *old != gen && self.entries.contains_key(&(pid, fd, *old)))
            .map(|old| (pid, fd, old));
        let mut evicted = Vec::new();
        self.entries.insert(key, value);
        self.order.push_back(key);
        // Drop the keys of removed connections now and then, not once per removal.
        if self.order.len() > 2 * self.max {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        while self.entries.len() > self.max {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(v) = self.remove(&oldest) {
                evicted.push((oldest, v));
            }
        }
        Inserted { reused_fd_of, evicted, duplicate: None }
    }

    pub fn remove(&mut self, key: &ConnKey) -> Option<V> {
        let v = self.entries.remove(key)?;
        let (pid, fd, gen) = *key;
        if self.newest_on_fd.get(&(pid, fd)) == Some(&gen) {
            self.newest_on_fd.remove(&(pid, fd));
        }
        Some(v)
    }

    /// Remove every connection of a process (it exited).
    pub fn remove_process(&mut self, pid: u32) -> Vec<(ConnKey, V)> {
        self.newest_on_fd.retain(|k, _| k.0 != pid);
        let keys: Vec<ConnKey> = self.entries.keys().filter(|k| k.0 == pid).copied().collect();
        keys.into_iter().filter_map(|k| self.entries.remove(&k).map(|v| (k, v))).collect()
    }

    /// Remove everything.
    pub fn drain(&mut self) -> Vec<(ConnKey, V)> {
        self.order.clear();
        self.newest_on_fd.clear();
        self.entries.drain().collect()
    }

    /// Keys kept for eviction order (live and not yet compacted away).
    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_without_an_fd_reuse_nothing() {
        let mut t = ConnTable::new(8);
        assert!(t.insert((1, -1, 10), ()).reused_fd_of.is_none());
        assert!(t.insert((1, -1, 20), ()).reused_fd_of.is_none());
        assert!(t.contains(&(1, -1, 10)) && t.contains(&(1, -1, 20)));
    }

    #[test]
    fn the_oldest_is_evicted_past_the_bound() {
        let mut t = ConnTable::new(2);
        assert!(t.insert((1, 10, 1), "a").evicted.is_empty());
        assert!(t.insert((1, 11, 2), "b").evicted.is_empty());
        let ins = t.insert((1, 12, 3), "c");
        assert_eq!(ins.evicted, vec![((1, 10, 1), "a")]);
        assert_eq!(t.len(), 2);
        // Removed connections are skipped, not evicted twice.
        t.remove(&(1, 11, 2));
        assert!(t.insert((1, 13, 4), "d").evicted.is_empty());
        assert_eq!(t.insert((1, 14, 5), "e").evicted, vec![((1, 12, 3), "c")]);
    }

    #[test]
    fn a_reused_fd_names_the_older_connection_still_in_the_table() {
        let mut t = ConnTable::new(10);
        t.insert((1, 10, 1), ());
        assert_eq!(t.insert((1, 10, 2), ()).reused_fd_of, Some((1, 10, 1)));
        assert!(t.contains(&(1, 10, 1)) && t.contains(&(1, 10, 2)));
        // Once the older one is gone, a reuse names nothing.
        t.remove(&(1, 10, 1));
        t.remove(&(1, 10, 2));
        assert_eq!(t.insert((1, 10, 3), ()).reused_fd_of, None);
        // Another process's fd 10 is another connection.
        assert_eq!(t.insert((2, 10, 4), ()).reused_fd_of, None);
    }

    #[test]
    fn the_order_queue_stays_bounded_as_connections_come_and_go() {
        let mut t = ConnTable::new(4);
        for i in 0..1000u64 {
            t.insert((1, 10, i), ());
            t.remove(&(1, 10, i));
        }
        assert!(t.is_empty());
        assert!(t.order_len() <= 2 * 4 + 1, "{}", t.order_len());
    }

    #[test]
    fn the_same_key_again_keeps_its_entry_and_evicts_nothing() {
        let mut t = ConnTable::new(4);
        t.insert((1, 10, 1), 'a');
        for _ in 0..10_000 {
            let ins = t.insert((1, 10, 1), 'b');
            assert!(ins.evicted.is_empty(), "a table of one entry in four is not full");
            assert_eq!(ins.duplicate, Some('b'));
            assert_eq!(ins.reused_fd_of, None);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&(1, 10, 1)), Some(&'a'));
        assert_eq!(t.order_len(), 1, "one key, queued once");
    }

    #[test]
    fn a_key_inserted_again_after_its_removal_is_not_evicted_by_its_stale_order_entry() {
        let mut t = ConnTable::new(2);
        t.insert((1, -1, 1), 'a');
        t.remove(&(1, -1, 1));
        t.insert((1, -1, 1), 'b');
        t.insert((1, -1, 2), 'c');
        // Full (2 of 2): the next insert evicts the oldest live entry, 'b', once.
        let ins = t.insert((1, -1, 3), 'd');
        assert_eq!(ins.evicted, vec![((1, -1, 1), 'b')]);
        assert_eq!(t.len(), 2);
        assert!(t.contains(&(1, -1, 2)) && t.contains(&(1, -1, 3)));
    }

    #[test]
    fn a_process_exit_removes_its_connections_only() {
        let mut t = ConnTable::new(10);
        t.insert((1, 10, 1), 'a');
        t.insert((2, 10, 2), 'b');
        assert_eq!(t.remove_process(1), vec![((1, 10, 1), 'a')]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.insert((1, 10, 3), 'c').reused_fd_of, None);
    }
}
