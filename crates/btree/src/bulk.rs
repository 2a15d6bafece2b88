//! Many records at once: each leaf is read and written once per run of
//! records that fall in it, instead of once per record. Media-error handling
//! uses it to record the loss of a block in thousands of files (and the
//! matching error-log records) in one transaction, and commits to record
//! the reverse-map records of the nodes they allocated.
use crate::node::Layout;
use crate::tree::BTree;
use crate::{NodeStore, Result, Summary, TreeError};
use daxfs_format::records::{Key, Record, TreeRoot};

impl<K: Key, V: Record, A: Summary<K, V>> BTree<K, V, A> {
    /// Inserts or replaces every `(key, value)` of `items`, whose keys must
    /// be strictly increasing, and returns how many replaced a record. The
    /// tree ends as after one [`BTree::insert`] per item; a leaf with room
    /// takes every item in its key range at once (and its ancestors'
    /// summaries are brought up to date once), and a full one splits through
    /// the ordinary insert.
    ///
    /// On an error some items may already be in: the caller discards the
    /// transaction, as for any failed change of several records.
    pub fn insert_sorted(
        &self,
        s: &mut dyn NodeStore,
        root: &mut TreeRoot,
        items: &[(K, V)],
    ) -> Result<usize> {
        if items.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(TreeError::Store(
                "insert_sorted: keys not strictly increasing".into(),
            ));
        }
        let mut i = 0;
        let mut replaced = 0;
        while i < items.len() {
            let height = self.height(root)?;
            if height == 0 {
                replaced += usize::from(self.insert(s, root, items[i].0, items[i].1)?.is_some());
                i += 1;
                continue;
            }
            let mut path = Vec::with_capacity(height as usize);
            let mut leaf = self.descend(s, root, height, &items[i].0, Some(&mut path))?;
            // The leaf holds keys below the nearest separator to the right of
            // the path: the next ancestor slot that has a right sibling.
            let mut hi = None;
            for (node, idx) in path.iter().rev() {
                if idx + 1 < node.count {
                    hi = Some(node.key(idx + 1)?);
                    break;
                }
            }
            let mut changed = false;
            let mut full = false;
            // Every key of the leaf before `from` is below the next item's.
            let mut from = 0;
            while i < items.len() && hi.is_none_or(|h| items[i].0 < h) {
                let (k, v) = &items[i];
                // Appends (an error log, new inodes) go past the leaf's last
                // key: no search, and every item up to the leaf's bound or
                // its room goes in at once.
                if leaf.count > 0 && leaf.key(leaf.count - 1)? < *k {
                    let room = leaf.cap().saturating_sub(leaf.count);
                    let run = items[i..]
                        .iter()
                        .take(room)
                        .take_while(|(k, _)| hi.is_none_or(|h| *k < h))
                        .count();
                    if run == 0 {
                        full = true;
                        break;
                    }
                    leaf.append(&items[i..i + run])?;
                    i += run;
                    from = leaf.count;
                    changed = true;
                    continue;
                }
                match leaf.search_from(from, k)? {
                    Ok(j) => {
                        leaf.set_val(j, v)?;
                        replaced += 1;
                        from = j + 1;
                    }
                    Err(pos) => {
                        if leaf.count >= leaf.cap() {
                            full = true;
                            break;
                        }
                        leaf.open_gap(pos, 1)?;
                        leaf.set_key(pos, k)?;
                        leaf.set_val(pos, v)?;
                        from = pos + 1;
                    }
                }
                changed = true;
                i += 1;
            }
            if changed {
                let sum = leaf.summary()?;
                let crc = self.store(s, leaf)?;
                self.propagate(s, root, &mut path, sum, crc)?;
            }
            if full {
                // The leaf splits (and maybe its ancestors) as for one insert;
                // past the largest key, with enough keys left to fill the new
                // leaf to its minimum, the full leaf stays full (appends to a
                // log end up with full leaves, not three-quarters full ones).
                let pack = items.len() - i >= Layout::<K, V, A>::min(0);
                replaced += usize::from(
                    self.insert_packing(s, root, items[i].0, items[i].1, pack)?
                        .is_some(),
                );
                i += 1;
            }
        }
        Ok(replaced)
    }
}
