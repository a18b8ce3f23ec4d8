//! Allocation of numbers from a range, Kubernetes service-IP allocator style: a random
//! starting point, then the first free number scanning upwards with wrap-around. Random
//! starts make it unlikely that a number freed a moment ago is handed out again straight
//! away, while nodes may still hold state for its previous owner. VNIDs and ClusterIPs
//! (as `u32`s) are both allocated this way.
//!
//! Numbers are "used" while some record carries them: an allocator is rebuilt from the
//! records for every operation, so numbers are released implicitly and never leak.

use std::collections::HashSet;

use rand::Rng;

#[derive(Clone, Debug)]
pub(crate) struct RangeAllocator {
    min: u32,
    /// How many numbers `[min, max]` holds (0 for an empty range); a `u64` because the
    /// full `u32` range holds 2^32.
    size: u64,
    /// Used numbers inside the range; numbers outside it are ignored.
    used: HashSet<u32>,
}

impl RangeAllocator {
    /// An allocator over `[min, max]`, empty if `min > max`.
    pub(crate) fn new(min: u32, max: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let size = if min > max { 0 } else { u64::from(max - min) + 1 };
        let used = used.into_iter().filter(|&n| n >= min && u64::from(n - min) < size).collect();
        RangeAllocator { min, size, used }
    }

    /// A free number, counted as used from now on; `None` when every number is used.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        let offset = rand::thread_rng().gen_range(0..self.size);
        self.allocate_from_offset(offset)
    }

    /// The first free number at or above `start` (which must be in the range), wrapping.
    #[cfg(test)]
    pub(crate) fn allocate_from(&mut self, start: u32) -> Option<u32> {
        self.allocate_from_offset(u64::from(start - self.min))
    }

    fn allocate_from_offset(&mut self, offset: u64) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        // Stops within used.len() + 1 steps: there is a free number. The sum stays below
        // 2^32 because `offset + i` is reduced modulo the range size first.
        let n =
            (0..self.size).map(|i| self.min + ((offset + i) % self.size) as u32).find(|n| !self.used.contains(n))?;
        self.used.insert(n);
        Some(n)
    }

    fn is_full(&self) -> bool {
        self.used.len() as u64 >= self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_up_from_start_and_wraps() {
        let mut a = RangeAllocator::new(10, 14, [12, 13]);
        assert_eq!(a.allocate_from(12), Some(14));
        assert_eq!(a.allocate_from(13), Some(10));
        assert_eq!(a.allocate_from(10), Some(11));
        assert_eq!(a.allocate_from(10), None);
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn random_allocations_fill_the_range() {
        let mut a = RangeAllocator::new(5, 9, []);
        let mut got: Vec<u32> = std::iter::from_fn(|| a.allocate()).collect();
        got.sort();
        assert_eq!(got, [5, 6, 7, 8, 9]);
    }

    #[test]
    fn ignores_numbers_outside_the_range() {
        let mut a = RangeAllocator::new(10, 11, [0, 9, 10, 10, 12, u32::MAX]);
        assert_eq!(a.allocate(), Some(11));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn empty_and_extreme_ranges() {
        assert_eq!(RangeAllocator::new(1, 0, []).allocate(), None);
        assert_eq!(RangeAllocator::new(7, 7, []).allocate(), Some(7));
        let mut top = RangeAllocator::new(u32::MAX - 1, u32::MAX, [u32::MAX]);
        assert_eq!(top.allocate(), Some(u32::MAX - 1));
        let mut full = RangeAllocator::new(0, u32::MAX, [0, 1]);
        assert_eq!(full.allocate_from(u32::MAX), Some(u32::MAX));
        assert_eq!(full.allocate_from(u32::MAX), Some(2), "wraps past 2^32 - 1");
    }
}
