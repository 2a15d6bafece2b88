//! A forest of treaps in one arena: ordered maps whose every node is a fixed
//! size slot of one `Vec`, so their memory is counted exactly by capacity.
//!
//! Many small trees (one per page, say) share the arena; a tree is named by
//! its root slot, [`NIL`] for an empty tree. Node priorities come from a
//! private xorshift generator, so expected depth is logarithmic whatever the
//! insertion order.

/// The empty tree, and "no child".
pub(crate) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node<K, V> {
    key: K,
    val: V,
    left: u32,
    right: u32,
    prio: u32,
}

/// The arena; see the module doc.
pub(crate) struct Forest<K, V> {
    nodes: Vec<Node<K, V>>,
    free: u32,
    live: usize,
    rng: u32,
}

impl<K: Ord + Copy, V: Copy> Forest<K, V> {
    /// An empty arena.
    pub(crate) fn new() -> Self {
        Forest {
            nodes: Vec::new(),
            free: NIL,
            live: 0,
            rng: 0x9E37_79B9,
        }
    }

    /// Nodes in use, over all trees.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Bytes the arena allocated.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<K, V>>()
    }

    /// Bytes of one node.
    pub(crate) const fn node_bytes() -> usize {
        std::mem::size_of::<Node<K, V>>()
    }

    fn n(&self, i: u32) -> &Node<K, V> {
        &self.nodes[i as usize]
    }

    fn nm(&mut self, i: u32) -> &mut Node<K, V> {
        &mut self.nodes[i as usize]
    }

    fn alloc(&mut self, key: K, val: V) -> u32 {
        // xorshift32: cheap, and good enough to balance a treap.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        let node = Node {
            key,
            val,
            left: NIL,
            right: NIL,
            prio: x,
        };
        self.live += 1;
        if self.free != NIL {
            let i = self.free;
            self.free = self.n(i).left;
            *self.nm(i) = node;
            i
        } else {
            let i = u32::try_from(self.nodes.len()).expect("treap arena exceeds 2^32 nodes");
            assert!(i != NIL, "treap arena exceeds 2^32 - 1 nodes");
            self.nodes.push(node);
            i
        }
    }

    fn release(&mut self, i: u32) {
        self.live -= 1;
        let free = self.free;
        self.nm(i).left = free;
        self.free = i;
    }

    /// Splits `t` into keys `< key` and keys `>= key`.
    fn split(&mut self, t: u32, key: &K) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.n(t).key < *key {
            let (a, b) = self.split(self.n(t).right, key);
            self.nm(t).right = a;
            (t, b)
        } else {
            let (a, b) = self.split(self.n(t).left, key);
            self.nm(t).left = b;
            (a, t)
        }
    }

    /// Joins two trees whose keys are all ordered `a < b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.n(a).prio > self.n(b).prio {
            let r = self.merge(self.n(a).right, b);
            self.nm(a).right = r;
            a
        } else {
            let l = self.merge(a, self.n(b).left);
            self.nm(b).left = l;
            b
        }
    }

    fn ins(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        if self.n(n).prio > self.n(t).prio {
            let key = self.n(n).key;
            let (l, r) = self.split(t, &key);
            let node = self.nm(n);
            node.left = l;
            node.right = r;
            return n;
        }
        if self.n(n).key < self.n(t).key {
            let l = self.ins(self.n(t).left, n);
            self.nm(t).left = l;
        } else {
            let r = self.ins(self.n(t).right, n);
            self.nm(t).right = r;
        }
        t
    }

    /// Inserts `key` (which must not be present) into tree `root`; returns the
    /// new root.
    pub(crate) fn insert(&mut self, root: u32, key: K, val: V) -> u32 {
        debug_assert!(self.get(root, &key).is_none(), "duplicate key");
        let n = self.alloc(key, val);
        self.ins(root, n)
    }

    /// Removes `key` from tree `root`; returns the new root and the value.
    pub(crate) fn remove(&mut self, root: u32, key: &K) -> (u32, Option<V>) {
        if root == NIL {
            return (NIL, None);
        }
        let k = self.n(root).key;
        if *key < k {
            let (l, v) = self.remove(self.n(root).left, key);
            self.nm(root).left = l;
            (root, v)
        } else if k < *key {
            let (r, v) = self.remove(self.n(root).right, key);
            self.nm(root).right = r;
            (root, v)
        } else {
            let v = self.n(root).val;
            let m = self.merge(self.n(root).left, self.n(root).right);
            self.release(root);
            (m, Some(v))
        }
    }

    /// The value stored under `key`.
    pub(crate) fn get(&self, mut t: u32, key: &K) -> Option<V> {
        while t != NIL {
            let n = self.n(t);
            match key.cmp(&n.key) {
                std::cmp::Ordering::Less => t = n.left,
                std::cmp::Ordering::Greater => t = n.right,
                std::cmp::Ordering::Equal => return Some(n.val),
            }
        }
        None
    }

    /// The entry with the greatest key `<= key`.
    pub(crate) fn floor(&self, mut t: u32, key: &K) -> Option<(K, V)> {
        let mut best = None;
        while t != NIL {
            let n = self.n(t);
            if n.key <= *key {
                best = Some((n.key, n.val));
                t = n.right;
            } else {
                t = n.left;
            }
        }
        best
    }

    /// Calls `f` on every entry of tree `t`, in key order.
    pub(crate) fn for_each(&self, t: u32, f: &mut impl FnMut(&K, &V)) {
        if t == NIL {
            return;
        }
        let n = self.n(t);
        self.for_each(n.left, f);
        f(&n.key, &n.val);
        self.for_each(n.right, f);
    }

    /// Calls `f` on every entry with `lo <= key < hi`, in key order.
    pub(crate) fn range(&self, t: u32, lo: &K, hi: &K, f: &mut impl FnMut(&K, &V)) {
        if t == NIL {
            return;
        }
        let n = self.n(t);
        if *lo < n.key {
            self.range(n.left, lo, hi, f);
        }
        if *lo <= n.key && n.key < *hi {
            f(&n.key, &n.val);
        }
        if n.key < *hi {
            self.range(n.right, lo, hi, f);
        }
    }

    /// The key of tree `t` if it holds exactly one entry.
    pub(crate) fn only(&self, t: u32) -> Option<K> {
        if t == NIL {
            return None;
        }
        let n = self.n(t);
        (n.left == NIL && n.right == NIL).then_some(n.key)
    }

    /// Frees every node of tree `t`.
    pub(crate) fn clear(&mut self, t: u32) {
        if t == NIL {
            return;
        }
        let (l, r) = (self.n(t).left, self.n(t).right);
        self.clear(l);
        self.clear(r);
        self.release(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn matches_btreemap() {
        let mut f: Forest<u64, u64> = Forest::new();
        let mut m = BTreeMap::new();
        let mut root = NIL;
        let mut x = 12345u64;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (x >> 33) % 2000;
            if let Some(old) = m.remove(&k) {
                let (r, v) = f.remove(root, &k);
                root = r;
                assert_eq!(v, Some(old));
            } else {
                let len = 1 + (x >> 20) % 50;
                root = f.insert(root, k, len);
                m.insert(k, len);
            }
            if step % 997 == 0 {
                let mut got = Vec::new();
                f.for_each(root, &mut |k, v| got.push((*k, *v)));
                let want: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(got, want);
                let p = (x >> 7) % 2100;
                assert_eq!(
                    f.floor(root, &p),
                    m.range(..=p).next_back().map(|(k, v)| (*k, *v))
                );
                let mut r = Vec::new();
                f.range(root, &100, &300, &mut |k, _| r.push(*k));
                let want: Vec<_> = m.range(100..300).map(|(k, _)| *k).collect();
                assert_eq!(r, want);
            }
        }
        assert_eq!(f.live(), m.len());
        f.clear(root);
        assert_eq!(f.live(), 0);
    }
}
