//! Plain data that crosses the kernel/userspace boundary in map keys and values.
//!
//! `wire!` declares such a struct once: `#[repr(C)]`, no hidden padding (checked at
//! compile time: the fields' sizes add up to the struct's), and its layout as text
//! (`Wire::LAYOUT`, the field list as written), which the layout version of the pinned
//! maps is derived from: changing a field's name, type or order changes the version.

/// A type with a fixed, padding-free layout that both sides read byte for byte.
pub trait Wire: Copy + 'static {
    /// The field list as declared (or the scalar's name).
    const LAYOUT: &'static str;
}

/// No data: the key of a map without keys (a ring buffer).
impl Wire for () {
    const LAYOUT: &'static str = "()";
}

impl Wire for u8 {
    const LAYOUT: &'static str = "u8";
}

impl Wire for u32 {
    const LAYOUT: &'static str = "u32";
}

impl Wire for u64 {
    const LAYOUT: &'static str = "u64";
}

/// Declares `#[repr(C)]` structs of plain data shared with the eBPF programs.
#[macro_export]
macro_rules! wire {
    ($(
        $(#[$attr:meta])*
        pub struct $name:ident { $( $(#[$fattr:meta])* pub $field:ident : $ty:ty ),* $(,)? }
    )*) => {$(
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name { $( $(#[$fattr])* pub $field: $ty ),* }

        impl $crate::wire::Wire for $name {
            const LAYOUT: &'static str = stringify!($name { $($field: $ty),* });
        }

        // No implicit padding: the kernel copies keys and values byte for byte, and a
        // hash map compares keys so, padding included.
        const _: () = assert!(core::mem::size_of::<$name>() == 0 $(+ core::mem::size_of::<$ty>())*);

        // SAFETY: `#[repr(C)]` plain integers and byte arrays without padding (checked
        // above): every bit pattern is a valid value.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name {}
    )*};
}
