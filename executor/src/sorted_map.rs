//! A map kept as a sorted vector: the shape of a transaction's account changes, which hold a
//! handful of entries and are built once, iterated in order and compared.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{borrow::Borrow, fmt};

/// A sorted-vector map. Lookups are binary searches; building from an iterator sorts once, so
/// large maps should be built that way rather than by repeated `insert`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SortedMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: Ord, V> SortedMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of entries with distinct keys, in any order.
    pub fn from_distinct(mut entries: Vec<(K, V)>) -> Self {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        debug_assert!(entries.is_sorted_by(|a, b| a.0 < b.0), "duplicate keys");
        Self(entries)
    }

    /// A map of entries already sorted by key, without duplicates.
    pub fn from_sorted(entries: Vec<(K, V)>) -> Self {
        debug_assert!(entries.is_sorted_by(|a, b| a.0 < b.0), "entries not strictly sorted");
        Self(entries)
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Inserts, returning the previous value.
    /// Makes room for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn as_slice(&self) -> &[(K, V)] {
        &self.0
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    /// Later entries win over earlier ones with the same key, as with repeated inserts.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        sort_keeping_last(&mut entries);
        Self(entries)
    }
}

/// Sorts by key in place; of entries with equal keys only the last survives.
fn sort_keeping_last<K: Ord, V>(entries: &mut Vec<(K, V)>) {
    if entries.is_sorted_by(|a, b| a.0 < b.0) {
        return;
    }
    // Stable: equal keys keep their order, so the last one is the latest.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // `dedup_by` keeps the earlier entry; hand it the later value first.
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(&mut later.1, &mut kept.1);
        }
        same
    });
}

impl<K: Ord, V> Extend<(K, V)> for SortedMap<K, V> {
    /// Later entries win, as with repeated inserts. Appends and sorts once: cheap when either
    /// side is small, which is how diffs grow.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.0.extend(iter);
        sort_keeping_last(&mut self.0);
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for SortedMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for SortedMap<K, V> {
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("key not in SortedMap")
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SortedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for SortedMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for SortedMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<K, V>::deserialize(deserializer)?;
        Ok(Self(map.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_an_ordered_map() {
        let mut map: SortedMap<u32, &str> = [(3, "c"), (1, "a"), (3, "C")].into();
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(map[&3], "C", "the later duplicate wins");
        assert_eq!(map.insert(2, "b"), None);
        assert_eq!(map.insert(2, "B"), Some("b"));
        assert_eq!(
            map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, "a"), (2, "B"), (3, "C")]
        );
        assert_eq!(map.remove(&1), Some("a"));
        assert!(!map.contains_key(&1) && map.get(&9).is_none());
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"2":"B","3":"C"}"#);
        assert_eq!(serde_json::from_str::<SortedMap<u32, String>>(&json).unwrap().len(), 2);
        map.extend([(4, "d"), (2, "b2"), (4, "D")]);
        assert_eq!(
            map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(2, "b2"), (3, "C"), (4, "D")],
            "extend: later entries win"
        );
    }
}
