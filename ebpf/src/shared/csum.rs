//! Internet checksum arithmetic, as the kernel's csum_* functions.

/// One's complement addition (the kernel's csum_add).
#[inline(always)]
pub fn csum_add(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + carry as u32
}

/// The checksum difference of replacing `old` by `new` (values as in memory).
#[inline(always)]
pub fn csum_change(old: u32, new: u32) -> u32 {
    csum_add(!old, new)
}

/// Folds a 32-bit sum into a 16-bit checksum (the kernel's csum_fold).
#[inline(always)]
pub fn csum_fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
