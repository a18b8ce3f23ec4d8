//! VNID allocation.
//!
//! A VNID is "used" while some NetNamespace carries it: the allocator is rebuilt from the
//! records at every allocation, so ids are released implicitly and never leak.

use std::collections::HashSet;

use rand::Rng;

use crate::{Error, Result};

/// The VNID of `default` and of global projects.
pub const GLOBAL_VNID: u32 = 0;
/// First allocatable VNID; 1-9 are reserved.
pub const MIN_VNID: u32 = 10;
/// Largest VNID that fits a VXLAN VNI.
pub const MAX_VNID: u32 = (1 << 24) - 1;

/// Allocates VNIDs in `[min, max]` that are not in use, Kubernetes service-IP allocator
/// style: a random starting point, then the first free id scanning upwards with
/// wrap-around. Random starts make it unlikely that a VNID freed a moment ago is handed
/// to another project straight away, while nodes may still hold rules for it.
#[derive(Clone, Debug)]
pub struct VnidAllocator {
    min: u32,
    max: u32,
    /// Used ids inside `[min, max]`; ids outside the range are ignored.
    used: HashSet<u32>,
}

impl VnidAllocator {
    /// An allocator over `[MIN_VNID, MAX_VNID]`.
    pub fn new(used: impl IntoIterator<Item = u32>) -> Self {
        Self::with_range(MIN_VNID, MAX_VNID, used)
    }

    /// An allocator over `[min, max]` (a smaller range is for tests).
    pub fn with_range(min: u32, max: u32, used: impl IntoIterator<Item = u32>) -> Self {
        assert!(min <= max, "empty VNID range [{min}, {max}]");
        let used = used
            .into_iter()
            .filter(|id| (min..=max).contains(id))
            .collect();
        VnidAllocator { min, max, used }
    }

    /// Returns a free VNID and counts it as used from now on.
    pub fn allocate(&mut self) -> Result<u32> {
        let start = rand::thread_rng().gen_range(self.min..=self.max);
        self.allocate_from(start)
    }

    fn allocate_from(&mut self, start: u32) -> Result<u32> {
        let size = u64::from(self.max - self.min) + 1;
        if self.used.len() as u64 >= size {
            return Err(Error::VnidsExhausted {
                min: self.min,
                max: self.max,
            });
        }
        // Terminates within used.len() + 1 steps: there is a free id.
        let offset = u64::from(start - self.min);
        let id = (0..size)
            .map(|i| self.min + ((offset + i) % size) as u32)
            .find(|id| !self.used.contains(id))
            .ok_or(Error::VnidsExhausted {
                min: self.min,
                max: self.max,
            })?;
        self.used.insert(id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!((GLOBAL_VNID, MIN_VNID, MAX_VNID), (0, 10, 16_777_215));
    }

    #[test]
    fn scans_up_from_start_and_wraps() {
        let mut a = VnidAllocator::with_range(10, 14, [12, 13]);
        assert_eq!(a.allocate_from(12).unwrap(), 14);
        assert_eq!(a.allocate_from(13).unwrap(), 10);
        assert_eq!(a.allocate_from(10).unwrap(), 11);
        assert!(matches!(
            a.allocate_from(10),
            Err(Error::VnidsExhausted { min: 10, max: 14 })
        ));
    }

    #[test]
    fn exhaustion_with_small_range() {
        let mut a = VnidAllocator::with_range(10, 12, []);
        let mut got: Vec<u32> = (0..3).map(|_| a.allocate().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![10, 11, 12]);
        let err = a.allocate().unwrap_err();
        assert!(matches!(err, Error::VnidsExhausted { min: 10, max: 12 }));
        assert_eq!(
            err.to_string(),
            "no free VNID in [10, 12]: every VNID is in use"
        );
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
