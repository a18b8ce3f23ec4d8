//! VNID allocation: a `RangeAllocator` over `[MIN_VNID, MAX_VNID]` (see `allocator` for
//! the policy and why VNIDs never leak).

use crate::{allocator::RangeAllocator, Error, Result};

/// The VNID of `default` and of global projects.
pub const GLOBAL_VNID: u32 = 0;
/// First allocatable VNID; 1-9 are reserved.
pub const MIN_VNID: u32 = 10;
/// Largest VNID that fits a VXLAN VNI.
pub const MAX_VNID: u32 = (1 << 24) - 1;

/// Allocates VNIDs in `[min, max]` that are not in use: a random starting point, then the
/// first free id scanning upwards with wrap-around.
#[derive(Clone, Debug)]
pub struct VnidAllocator {
    min: u32,
    max: u32,
    ids: RangeAllocator,
}

impl VnidAllocator {
    /// An allocator over `[MIN_VNID, MAX_VNID]`.
    pub fn new(used: impl IntoIterator<Item = u32>) -> Self {
        Self::with_range(MIN_VNID, MAX_VNID, used)
    }

    /// An allocator over `[min, max]` (a smaller range is for tests); ids in `used`
    /// outside the range (0, reserved ids) are ignored.
    pub fn with_range(min: u32, max: u32, used: impl IntoIterator<Item = u32>) -> Self {
        assert!(min <= max, "empty VNID range [{min}, {max}]");
        let ids = RangeAllocator::new(min, max, used);
        VnidAllocator { min, max, ids }
    }

    /// Returns a free VNID and counts it as used from now on.
    pub fn allocate(&mut self) -> Result<u32> {
        self.ids.allocate().ok_or_else(|| self.exhausted())
    }

    fn exhausted(&self) -> Error {
        Error::VnidsExhausted { min: self.min, max: self.max }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn constants() {
        assert_eq!((GLOBAL_VNID, MIN_VNID, MAX_VNID), (0, 10, 16_777_215));
    }

    #[test]
    fn exhaustion_with_small_range() {
        let mut a = VnidAllocator::with_range(10, 12, []);
        let mut got: Vec<u32> = (0..3).map(|_| a.allocate().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![10, 11, 12]);
        let err = a.allocate().unwrap_err();
        assert!(matches!(err, Error::VnidsExhausted { min: 10, max: 12 }));
        assert_eq!(err.to_string(), "no free VNID in [10, 12]: every VNID is in use");
    }

    #[test]
    fn ignores_ids_outside_range_and_duplicates() {
        // 0 (global), reserved ids and duplicates (joined projects) don't count.
        let mut a = VnidAllocator::with_range(10, 11, [0, 1, 9, 10, 10, 99]);
        assert_eq!(a.allocate().unwrap(), 11);
        assert!(a.allocate().is_err());
    }

    #[test]
    fn full_range_allocations_are_in_range_and_distinct() {
        let mut a = VnidAllocator::new([GLOBAL_VNID]);
        let ids: HashSet<u32> = (0..1000).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| (MIN_VNID..=MAX_VNID).contains(id)));
    }
}
