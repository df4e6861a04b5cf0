//! A set of message numbers kept as disjoint, merged ranges: what is done beyond the lowest message not done
//! (`each` runs end out of order, so done-ness has holes until the runs before them end).

use std::collections::BTreeMap;

use super::Seq;

/// Disjoint half-open ranges `[start, end)`, merged when they touch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end
    ranges: BTreeMap<Seq, Seq>,
}

impl RangeSet {
    /// Add `[start, end)`.
    pub fn insert(&mut self, mut start: Seq, mut end: Seq) {
        if start >= end {
            return;
        }
        // A range that begins at or before `start` and reaches it merges with the new one.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Ranges that begin inside the new one are swallowed.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    pub fn contains(&self, seq: Seq) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| seq < e)
    }

    /// If a range begins at `low`, remove it and return its end (the new lowest number not in the set).
    pub fn take_from(&mut self, low: Seq) -> Option<Seq> {
        self.ranges.remove(&low)
    }

    /// Forget everything below `low`.
    pub fn drop_below(&mut self, low: Seq) {
        let kept = self.ranges.split_off(&low);
        if let Some((_, &e)) = self.ranges.iter().next_back() {
            if e > low {
                self.ranges.insert(low, e);
            }
        }
        self.ranges.retain(|&s, _| s >= low);
        self.ranges.extend(kept);
    }

    /// How many numbers in `[start, end)` the set holds.
    pub fn count_in(&self, start: Seq, end: Seq) -> u64 {
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.ranges
            .range(first..end)
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Seq, Seq)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_they_touch_or_overlap() {
        let mut s = RangeSet::default();
        s.insert(5, 7);
        s.insert(10, 12);
        s.insert(7, 10);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(5, 12)]);
        s.insert(1, 3);
        s.insert(2, 6);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(1, 12)]);
        s.insert(20, 25);
        s.insert(0, 30);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(0, 30)]);
    }

    #[test]
    fn membership_counts_and_the_low_watermark() {
        let mut s = RangeSet::default();
        s.insert(3, 5);
        s.insert(8, 9);
        assert!(!s.contains(2) && s.contains(3) && s.contains(4) && !s.contains(5));
        assert_eq!(s.count_in(0, 100), 3);
        assert_eq!(s.count_in(4, 9), 2);
        assert_eq!(s.take_from(2), None);
        assert_eq!(s.take_from(3), Some(5));
        s.drop_below(8);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(8, 9)]);
        let mut t = RangeSet::default();
        t.insert(1, 10);
        t.drop_below(4);
        assert_eq!(t.iter().collect::<Vec<_>>(), [(4, 10)]);
    }

    #[test]
    fn a_random_set_agrees_with_a_plain_one() {
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..200 {
            let mut s = RangeSet::default();
            let mut plain = std::collections::BTreeSet::new();
            for _ in 0..30 {
                let a = next(60);
                let b = a + next(8);
                s.insert(a, b);
                plain.extend(a..b);
            }
            for x in 0..70 {
                assert_eq!(s.contains(x), plain.contains(&x), "{x} in {s:?}");
            }
            assert_eq!(s.count_in(10, 40), plain.range(10..40).count() as u64);
            let ranges: Vec<_> = s.iter().collect();
            assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{ranges:?}");
        }
    }
}
