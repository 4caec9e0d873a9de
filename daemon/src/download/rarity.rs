//! A set of chunks bucketed by availability (how many sources hold each),
//! for rarest-first choice: insert, remove and a random pick from the
//! rarest non-empty bucket each cost O(1) (plus the number of buckets,
//! at most the number of sources). The plan keeps one for every chunk
//! still to hand out, and one per source that holds only some chunks.
//!
//! Pure state; the caller says which bucket a chunk is in (its current
//! availability), so one availability count serves every set.

use super::plan::ChunkId;

/// Position of a chunk that is not in the set.
const ABSENT: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub struct Rarity {
    /// `buckets[k]`: the chunks of the set that `k` sources hold, unordered.
    buckets: Vec<Vec<ChunkId>>,
    /// Per chunk of the plan, its position in its bucket, or [`ABSENT`].
    at: Vec<u32>,
    len: usize,
}

impl Rarity {
    /// An empty set over a plan of `chunks` chunks.
    pub fn new(chunks: usize) -> Self {
        Self {
            buckets: Vec::new(),
            at: vec![ABSENT; chunks],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: ChunkId) -> bool {
        self.at[id] != ABSENT
    }

    /// Adds `id`, which `held_by` sources hold (no-op if present).
    pub fn insert(&mut self, id: ChunkId, held_by: usize) {
        if self.contains(id) {
            return;
        }
        if self.buckets.len() <= held_by {
            self.buckets.resize_with(held_by + 1, Vec::new);
        }
        let bucket = &mut self.buckets[held_by];
        self.at[id] = bucket.len() as u32;
        bucket.push(id);
        self.len += 1;
    }

    /// Removes `id`, which is in bucket `held_by` if present.
    pub fn remove(&mut self, id: ChunkId, held_by: usize) {
        let position = self.at[id];
        if position == ABSENT {
            return;
        }
        let bucket = &mut self.buckets[held_by];
        debug_assert_eq!(
            bucket[position as usize], id,
            "chunk {id} not in bucket {held_by}"
        );
        bucket.swap_remove(position as usize);
        if let Some(&moved) = bucket.get(position as usize) {
            self.at[moved] = position;
        }
        self.at[id] = ABSENT;
        self.len -= 1;
    }

    /// A chunk from the rarest bucket that has one `acceptable`, starting
    /// at a random place in the bucket (so downloaders that start together
    /// spread over the rare chunks instead of all asking for the same).
    /// Does not remove it.
    pub fn pick(
        &self,
        rng: &mut fastrand::Rng,
        acceptable: impl FnMut(ChunkId) -> bool,
    ) -> Option<ChunkId> {
        self.pick_held_by_at_most(usize::MAX, rng, acceptable)
    }

    /// [`Rarity::pick`] among the chunks at most `max_held_by` sources
    /// hold (the buckets past it are not looked at).
    pub fn pick_held_by_at_most(
        &self,
        max_held_by: usize,
        rng: &mut fastrand::Rng,
        mut acceptable: impl FnMut(ChunkId) -> bool,
    ) -> Option<ChunkId> {
        let buckets = self.buckets.iter().take(max_held_by.saturating_add(1));
        for bucket in buckets.filter(|b| !b.is_empty()) {
            let start = rng.usize(..bucket.len());
            let found = (0..bucket.len())
                .map(|i| bucket[(start + i) % bucket.len()])
                .find(|&id| acceptable(id));
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

impl Rarity {
    /// Up to `max` `acceptable` chunks that at most `max_held_by` sources
    /// hold, the rarest first, each bucket entered at a random place. Does
    /// not remove them.
    pub fn sample(
        &self,
        rng: &mut fastrand::Rng,
        max: usize,
        max_held_by: usize,
        mut acceptable: impl FnMut(ChunkId) -> bool,
    ) -> Vec<ChunkId> {
        let mut chosen = Vec::new();
        let buckets = self.buckets.iter().take(max_held_by.saturating_add(1));
        for bucket in buckets.filter(|b| !b.is_empty()) {
            let start = rng.usize(..bucket.len());
            for i in 0..bucket.len() {
                if chosen.len() == max {
                    return chosen;
                }
                let id = bucket[(start + i) % bucket.len()];
                if acceptable(id) {
                    chosen.push(id);
                }
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pick_within_a_bound_looks_only_at_the_buckets_under_it() {
        let mut set = Rarity::new(10);
        set.insert(0, 1);
        set.insert(1, 3);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut looked = Vec::new();
        let picked = set.pick_held_by_at_most(2, &mut rng, |id| {
            looked.push(id);
            id == 1
        });
        assert_eq!(
            (picked, looked),
            (None, vec![0]),
            "bucket 3 is not looked at"
        );
        assert_eq!(set.pick_held_by_at_most(3, &mut rng, |id| id == 1), Some(1));
        assert_eq!(set.sample(&mut rng, 5, 1, |_| true), vec![0]);
        assert_eq!(set.sample(&mut rng, 5, usize::MAX, |_| true), vec![0, 1]);
    }

    #[test]
    fn picks_come_from_the_rarest_bucket_and_spread_over_it() {
        let mut set = Rarity::new(100);
        for id in 0..90 {
            set.insert(id, 3);
        }
        for id in 90..100 {
            set.insert(id, 1);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let id = set.pick(&mut rng, |_| true).unwrap();
            assert!(id >= 90, "picked {id}, which three sources hold");
            seen.insert(id);
        }
        assert!(seen.len() >= 8, "random start spreads: {seen:?}");
        // Unacceptable chunks are passed over, then rarer ones run out.
        assert!(set.pick(&mut rng, |id| id < 90).is_some_and(|id| id < 90));
        for id in 90..100 {
            set.remove(id, 1);
        }
        assert_eq!(set.len(), 90);
        assert!(set.pick(&mut rng, |_| true).is_some_and(|id| id < 90));
    }

    #[test]
    fn removal_keeps_positions_consistent() {
        let mut set = Rarity::new(10);
        for id in 0..10 {
            set.insert(id, 2);
        }
        for id in [3, 0, 9, 5] {
            set.remove(id, 2);
            assert!(!set.contains(id));
            set.remove(id, 2); // absent: no-op
        }
        assert_eq!(set.len(), 6);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut left = Vec::new();
        while let Some(id) = set.pick(&mut rng, |_| true) {
            set.remove(id, 2);
            left.push(id);
        }
        left.sort();
        assert_eq!(left, [1, 2, 4, 6, 7, 8]);
    }
}
