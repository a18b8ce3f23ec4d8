//! The pinned maps as statics, expanded from the contract (`oxsdn_common::for_each_map!`),
//! so their names, types, sizes and flags are those userspace opens.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

/// The eBPF map type of a contract kind (arrays are indexed by `u32`).
macro_rules! map_type {
    (Array, $k:ty, $v:ty) => { Array<$v> };
    (PerCpuArray, $k:ty, $v:ty) => { PerCpuArray<$v> };
    (HashMap, $k:ty, $v:ty) => { HashMap<$k, $v> };
    (LruHashMap, $k:ty, $v:ty) => { LruHashMap<$k, $v> };
    (LpmTrie, $k:ty, $v:ty) => { LpmTrie<$k, $v> };
    (RingBuf, $k:ty, $v:ty) => { RingBuf };
}

macro_rules! pinned_maps {
    ($( $(#[$doc:meta])* $name:ident $field:ident : $kind:ident < $k:ty, $v:ty > [$max:expr, $flags:expr]; )*) => {$(
        $(#[$doc])*
        #[map]
        pub static $name: map_type!($kind, $k, $v) = <map_type!($kind, $k, $v)>::pinned($max, $flags);
    )*};
}

oxsdn_common::for_each_map!(pinned_maps);
