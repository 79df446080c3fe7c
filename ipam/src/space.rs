//! Local free space: the addresses this peer owns in the ring and has not
//! handed out, kept as a map of disjoint, coalesced free intervals so that
//! "lowest free address in this subnet" (weave's linear allocation order,
//! which its tests rely on) is a logarithmic lookup, not a scan.

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::AddrRange;

/// Free intervals `start -> end` (exclusive), disjoint and non-adjacent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    free: BTreeMap<u32, u32>,
}

impl Space {
    /// Free space = `owned` minus every address in `taken`.
    pub fn rebuild(owned: &[AddrRange], taken: &BTreeSet<u32>) -> Space {
        let mut s = Space::default();
        for r in owned {
            let mut cur = r.start;
            for a in taken.range(r.start..r.end) {
                if *a > cur {
                    s.free.insert(cur, *a);
                }
                cur = a + 1;
            }
            if cur < r.end {
                s.free.insert(cur, r.end);
            }
        }
        s.coalesce_all();
        s
    }

    fn coalesce_all(&mut self) {
        let old = std::mem::take(&mut self.free);
        for (s, e) in old {
            match self.free.last_key_value().map(|(a, b)| (*a, *b)) {
                Some((ls, le)) if le == s => {
                    self.free.insert(ls, e);
                }
                _ => {
                    self.free.insert(s, e);
                }
            }
        }
    }

    /// The interval containing `addr`, if free.
    fn containing(&self, addr: u32) -> Option<(u32, u32)> {
        let (s, e) = self.free.range(..=addr).next_back()?;
        (addr < *e).then_some((*s, *e))
    }

    /// True if `addr` is owned and free.
    pub fn is_free(&self, addr: u32) -> bool {
        self.containing(addr).is_some()
    }

    /// Takes the lowest free address inside `within`.
    pub fn take_lowest(&mut self, within: AddrRange) -> Option<u32> {
        let addr = self.lowest_in(within)?;
        self.take(addr);
        Some(addr)
    }

    /// Lowest free address in `within`, without taking it.
    pub fn lowest_in(&self, within: AddrRange) -> Option<u32> {
        if within.is_empty() {
            return None;
        }
        if let Some((_, e)) = self.containing(within.start) {
            let _ = e;
            return Some(within.start);
        }
        let (s, _) = self.free.range(within.start..within.end).next()?;
        Some(*s)
    }

    /// Marks `addr` used; false if it was not free.
    pub fn take(&mut self, addr: u32) -> bool {
        let Some((s, e)) = self.containing(addr) else {
            return false;
        };
        self.free.remove(&s);
        if s < addr {
            self.free.insert(s, addr);
        }
        if addr + 1 < e {
            self.free.insert(addr + 1, e);
        }
        true
    }

    /// Removes a whole range from free space (when donating it).
    pub fn take_range(&mut self, r: AddrRange) {
        if r.is_empty() {
            return;
        }
        let overlapping: Vec<(u32, u32)> = self
            .free
            .range(..r.end)
            .filter(|(_, e)| **e > r.start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in overlapping {
            self.free.remove(&s);
            if s < r.start {
                self.free.insert(s, r.start);
            }
            if r.end < e {
                self.free.insert(r.end, e);
            }
        }
    }

    /// Returns `addr` to free space (caller guarantees we own it).
    pub fn give(&mut self, addr: u32) {
        if self.is_free(addr) {
            return;
        }
        let mut start = addr;
        let mut end = addr + 1;
        if let Some((s, e)) = self.free.range(..addr).next_back().map(|(s, e)| (*s, *e))
            && e == addr
        {
            self.free.remove(&s);
            start = s;
        }
        if let Some(e) = self.free.remove(&end) {
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Free addresses inside `r`.
    pub fn free_in(&self, r: AddrRange) -> u32 {
        if r.is_empty() {
            return 0;
        }
        let mut n = 0u32;
        if let Some((s, e)) = self.containing(r.start) {
            n += AddrRange::new(s, e).intersect(&r).size();
        }
        for (s, e) in self.free.range(r.start.saturating_add(1)..r.end) {
            n += AddrRange::new(*s, *e).intersect(&r).size();
        }
        n
    }

    /// Free intervals clipped to `r`, in order.
    pub fn free_ranges_in(&self, r: AddrRange) -> Vec<AddrRange> {
        let mut out = Vec::new();
        // Ranges derived from peer input may be empty or inverted after
        // clipping; BTreeMap::range panics on inverted bounds.
        if r.is_empty() {
            return out;
        }
        if let Some((s, e)) = self.containing(r.start) {
            out.push(AddrRange::new(s, e).intersect(&r));
        }
        for (s, e) in self.free.range(r.start.saturating_add(1)..r.end) {
            out.push(AddrRange::new(*s, *e).intersect(&r));
        }
        out
    }

    /// Total free addresses.
    pub fn total_free(&self) -> u64 {
        self.free.iter().map(|(s, e)| u64::from(e - s)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_first_and_give_back() {
        let owned = [AddrRange::new(10, 20), AddrRange::new(30, 34)];
        let taken: BTreeSet<u32> = [10, 12].into();
        let mut s = Space::rebuild(&owned, &taken);
        assert_eq!(s.total_free(), 8 + 4);
        assert_eq!(s.take_lowest(AddrRange::new(0, 100)), Some(11));
        assert_eq!(s.take_lowest(AddrRange::new(0, 100)), Some(13));
        assert_eq!(s.take_lowest(AddrRange::new(25, 100)), Some(30));
        assert!(!s.take(30));
        s.give(11);
        s.give(30);
        assert_eq!(s.lowest_in(AddrRange::new(0, 100)), Some(11));
        assert_eq!(s.free_in(AddrRange::new(0, 100)), 11);
        s.take_range(AddrRange::new(15, 32));
        assert_eq!(
            s.free_ranges_in(AddrRange::new(0, 100)),
            vec![
                AddrRange::new(11, 12),
                AddrRange::new(14, 15),
                AddrRange::new(32, 34)
            ]
        );
        // Empty and inverted ranges (clipped peer input) are harmless.
        assert!(s.free_ranges_in(AddrRange::new(50, 40)).is_empty());
        assert_eq!(s.free_in(AddrRange::new(50, 40)), 0);
        assert_eq!(s.lowest_in(AddrRange::new(50, 40)), None);
        s.take_range(AddrRange::new(50, 40));
        s.give(12);
        s.give(13);
        assert_eq!(
            s.free_ranges_in(AddrRange::new(0, 100))[0],
            AddrRange::new(11, 15)
        );
    }
}
