//! A login's connection attributes (key/value pairs, in the order sent): all their
//! text in one String and where each ends, so a login costs two allocations for its
//! attributes, not two per pair (libmariadb sends six pairs on every connection).

/// Connection attributes, as text (invalid UTF-8 replaced).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    text: String,
    /// Per pair: where its key ends and where its value ends in `text`.
    ends: Vec<(usize, usize)>,
}

impl Attrs {
    /// Room for `bytes` of text and libmariadb's usual six pairs.
    pub fn with_capacity(bytes: usize) -> Self {
        Attrs {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(8),
        }
    }

    pub fn push(&mut self, key: &str, value: &str) {
        self.text.push_str(key);
        let key_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((key_end, self.text.len()));
    }

    /// The pairs in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, v)| v));
        starts
            .zip(&self.ends)
            .map(|(start, &(k, v))| (&self.text[start..k], &self.text[k..v]))
    }

    /// The value of `key` (the first, if sent twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut attrs = Attrs::default();
        for (k, v) in pairs {
            attrs.push(k, v);
        }
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_back_in_order_with_empty_keys_and_values() {
        let pairs = [
            ("_client_name", "libmariadb"),
            ("", "no key"),
            ("no value", ""),
            ("_pid", "42"),
            ("_pid", "43"),
        ];
        let attrs: Attrs = pairs.iter().copied().collect();
        assert_eq!(attrs.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(attrs.len(), 5);
        assert_eq!(attrs.get("_pid"), Some("42"));
        assert_eq!(attrs.get("no value"), Some(""));
        assert_eq!(attrs.get("missing"), None);
        let none = Attrs::default();
        assert!(none.is_empty() && none.iter().next().is_none());
    }
}
