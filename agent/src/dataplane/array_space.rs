//! Which indexes of one slot's share of an array map (rows, cells) are free: tables the
//! compiler freed leave holes, which the next tables fill, so that a long run of in-place
//! updates keeps the slot as full as its live tables make it.

use std::collections::{BTreeMap, BTreeSet};

/// Ranges of indexes, relative to the slot's base: `0..end` has been handed out, less the
/// holes given back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArraySpace {
    /// Holes by start: their length.
    holes: BTreeMap<usize, usize>,
    /// The same holes by (length, start), to find the smallest that fits.
    by_len: BTreeSet<(usize, usize)>,
    end: usize,
}

impl ArraySpace {
    /// `0..end` all in use.
    pub fn packed(end: usize) -> ArraySpace {
        ArraySpace {
            end,
            ..ArraySpace::default()
        }
    }

    /// One past the highest index ever handed out: the slot needs this many.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Where `len` consecutive indexes start: the smallest hole that fits (best fit keeps
    /// the large holes for long tables), else after everything.
    pub fn take(&mut self, len: usize) -> usize {
        if len == 0 {
            return self.end;
        }
        let Some(&(hole_len, start)) = self.by_len.range((len, 0)..).next() else {
            let start = self.end;
            self.end += len;
            return start;
        };
        self.remove_hole(start, hole_len);
        if hole_len > len {
            self.add_hole(start + len, hole_len - len);
        }
        start
    }

    /// Gives back `start..start + len`, which nothing refers to any more.
    pub fn give_back(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        let (mut start, mut len) = (start, len);
        if let Some((&before, &before_len)) = self.holes.range(..start).next_back()
            && before + before_len == start
        {
            self.remove_hole(before, before_len);
            start = before;
            len += before_len;
        }
        if let Some(&after_len) = self.holes.get(&(start + len)) {
            self.remove_hole(start + len, after_len);
            len += after_len;
        }
        if start + len == self.end {
            self.end = start;
        } else {
            self.add_hole(start, len);
        }
    }

    fn add_hole(&mut self, start: usize, len: usize) {
        self.holes.insert(start, len);
        self.by_len.insert((len, start));
    }

    fn remove_hole(&mut self, start: usize, len: usize) {
        self.holes.remove(&start);
        self.by_len.remove(&(len, start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_filled_smallest_first_and_merge_with_their_neighbours() {
        let mut space = ArraySpace::packed(10);
        space.give_back(2, 3); // 2..5
        space.give_back(7, 1); // 7..8
        assert_eq!(space.take(1), 7);
        assert_eq!(space.take(4), 10);
        assert_eq!(space.end(), 14);
        assert_eq!(space.take(2), 2);
        space.give_back(5, 2); // 4..7 with the rest of the first hole
        assert_eq!(space.take(3), 4);
        assert_eq!(space.take(1), 14);
    }

    #[test]
    fn what_is_given_back_at_the_end_shrinks_it() {
        let mut space = ArraySpace::packed(10);
        space.give_back(4, 2);
        space.give_back(6, 4);
        assert_eq!(space.end(), 4);
        assert_eq!(space.take(2), 4);
    }

    #[test]
    fn taking_and_giving_back_never_hands_out_an_index_twice() {
        // A small deterministic generator: the property must hold for any order.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n) as usize
        };
        let mut space = ArraySpace::default();
        let mut held: Vec<(usize, usize)> = Vec::new();
        let mut owner: Vec<bool> = Vec::new();
        for _ in 0..20_000 {
            if held.is_empty() || next(3) > 0 {
                let len = 1 + next(20);
                let start = space.take(len);
                if owner.len() < start + len {
                    owner.resize(start + len, false);
                }
                for used in &mut owner[start..start + len] {
                    assert!(!*used, "index handed out twice");
                    *used = true;
                }
                held.push((start, len));
            } else {
                let (start, len) = held.swap_remove(next(held.len() as u64));
                owner[start..start + len].fill(false);
                space.give_back(start, len);
            }
            assert!(space.end() <= owner.len());
            assert!(owner[space.end()..].iter().all(|used| !used));
        }
    }
}
