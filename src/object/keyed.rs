//! A set of values found by their [`ObjectKey`], which each value carries itself: the table
//! holds the values and nothing else, so a cache of a hundred thousand objects does not keep a
//! second copy of every key beside them.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::object::{FluxObject, ObjectKey};

/// A value that carries its key.
pub trait Keyed {
    fn key(&self) -> &ObjectKey;
}

impl Keyed for Arc<FluxObject> {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl<T> Keyed for (Arc<FluxObject>, T) {
    fn key(&self) -> &ObjectKey {
        &self.0.key
    }
}

/// Values of one kind of object, by key.
pub struct ByKey<T> {
    table: HashTable<T>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<T> Default for ByKey<T> {
    fn default() -> Self {
        ByKey { table: HashTable::new(), hasher: Default::default() }
    }
}

impl<T> std::fmt::Debug for ByKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByKey").field("len", &self.table.len()).finish()
    }
}

impl<T: Keyed> ByKey<T> {
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&T> {
        self.table.find(self.hasher.hash_one(key), |v| v.key() == key)
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.get(key).is_some()
    }

    /// Adds `value`, or replaces the value with the same key; returns the one replaced.
    pub fn insert(&mut self, value: T) -> Option<T> {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(value.key());
        match self.table.entry(hash, |v| v.key() == value.key(), |v| hasher.hash_one(v.key())) {
            hashbrown::hash_table::Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), value)),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(value);
                None
            }
        }
    }

    /// Makes room for `additional` more values at once (see [`crate::graph::Graph::reserve`]).
    pub fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.table.reserve(additional, |v| hasher.hash_one(v.key()));
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<T> {
        let hash = self.hasher.hash_one(key);
        self.table.find_entry(hash, |v| v.key() == key).ok().map(|e| e.remove().0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.table.iter()
    }

    pub fn retain(&mut self, keep: impl FnMut(&mut T) -> bool) {
        self.table.retain(keep);
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::ks;

    #[test]
    fn values_are_found_replaced_and_removed_by_their_own_key() {
        let mut t: ByKey<Arc<FluxObject>> = ByKey::default();
        assert!(t.insert(ks("f", "a", &[])).is_none());
        assert!(t.insert(ks("f", "b", &[])).is_none());
        let old = t.insert(ks("f", "a", &["b"])).expect("a was there");
        assert!(old.depends_on.is_empty());
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&ObjectKey::new("f", "a")).unwrap().depends_on.len(), 1);
        assert!(t.remove(&ObjectKey::new("f", "b")).is_some());
        assert!(!t.contains(&ObjectKey::new("f", "b")));
        assert!(t.remove(&ObjectKey::new("f", "b")).is_none());
        t.retain(|o| &*o.key.name != "a");
        assert!(t.is_empty());
    }
}
