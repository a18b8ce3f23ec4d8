//! What every `Store` must do, tested on each backend. Revisions are taken relative to
//! the store's revision at the start (a fresh file store is at 0, a fresh etcd at 1).

use std::{collections::HashSet, sync::Mutex, time::Duration};

use super::{
    testing::{del, delete_event, on_both_stores, put, put_event, recv, rev, value, Backing, Kind},
    Op, Store,
};

on_both_stores!(
    compare_and_swap_and_revisions,
    list_returns_sorted_keys_under_prefix,
    binary_values_round_trip,
    watch_reports_puts_and_deletes_in_order,
    watch_from_a_past_revision_catches_up,
    watch_sees_the_first_write,
    concurrent_cas_increments_lose_no_update,
);

fn compare_and_swap_and_revisions(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    let r = store.list("").unwrap().revision;
    // Create-if-absent.
    assert!(store.txn(&[rev("/a", 0)], &[put("/a", "1")]).unwrap());
    assert!(!store.txn(&[rev("/a", 0)], &[put("/a", "2")]).unwrap());
    assert_eq!(value(&*store, "/a"), Some(("1".into(), r + 1)));
    // All ops of a transaction share its revision.
    assert!(store.txn(&[rev("/a", r + 1)], &[put("/a", "2"), put("/b", "x")]).unwrap());
    assert_eq!(value(&*store, "/a"), Some(("2".into(), r + 2)));
    assert_eq!(value(&*store, "/b"), Some(("x".into(), r + 2)));
    // Stale compare: nothing applied, revision unchanged.
    assert!(!store.txn(&[rev("/a", r + 1)], &[del("/b")]).unwrap());
    assert_eq!(store.list("").unwrap().revision, r + 2);
    // Every compare must hold.
    assert!(!store.txn(&[rev("/a", r + 2), rev("/b", r + 1)], &[del("/b")]).unwrap());
    assert!(store.txn(&[rev("/a", r + 2), rev("/b", r + 2)], &[del("/b")]).unwrap());
    assert_eq!(store.get("/b").unwrap(), None);
    assert_eq!(store.list("").unwrap().revision, r + 3);
    // A transaction that changes nothing does not make a revision.
    assert!(store.txn(&[rev("/b", 0)], &[del("/b")]).unwrap());
    assert!(store.txn(&[], &[]).unwrap());
    assert_eq!(store.list("").unwrap().revision, r + 3);
    // Unconditional put.
    assert!(store.txn(&[], &[put("/a", "3")]).unwrap());
    assert_eq!(value(&*store, "/a"), Some(("3".into(), r + 4)));
    // Ops apply in order: of two on one key, the later wins.
    assert!(store.txn(&[], &[put("/a", "4"), put("/a", "5"), put("/c", "1"), del("/c")]).unwrap());
    assert_eq!(value(&*store, "/a"), Some(("5".into(), r + 5)));
    assert_eq!(store.get("/c").unwrap(), None);
    // Another handle on the same data sees the same data.
    let other = backing.open();
    assert_eq!(value(&*other, "/a"), Some(("5".into(), r + 5)));
}

fn list_returns_sorted_keys_under_prefix(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    let r = store.list("").unwrap().revision;
    store.txn(&[], &[put("/a/2", "2"), put("/a/1", "1"), put("/ab", "x"), put("/b", "y")]).unwrap();
    store.txn(&[], &[put("/a/3", "3")]).unwrap();
    let snap = store.list("/a/").unwrap();
    assert_eq!(snap.revision, r + 2);
    let keys: Vec<_> = snap.kvs.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    assert_eq!(keys, vec![("/a/1", r + 1), ("/a/2", r + 1), ("/a/3", r + 2)]);
    assert_eq!(store.list("/a").unwrap().kvs.len(), 4);
    assert_eq!(store.list("").unwrap().kvs.len(), 5);
    assert!(store.list("/c").unwrap().kvs.is_empty());
    assert_eq!(store.list("/c").unwrap().revision, r + 2);
}

fn binary_values_round_trip(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    let binary = vec![0xff, 0x00, 0x80];
    let empty = Vec::new();
    for value in [&binary, &empty] {
        let op = Op::Put { key: "/bin".into(), value: value.clone() };
        assert!(store.txn(&[], &[op]).unwrap());
        assert_eq!(&store.get("/bin").unwrap().unwrap().value, value);
        assert_eq!(&store.list("/bin").unwrap().kvs[0].value, value);
    }
}

fn watch_reports_puts_and_deletes_in_order(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    let r = store.list("").unwrap().revision;
    store.txn(&[], &[put("/p/a", "1")]).unwrap(); // r+1
    store.txn(&[], &[put("/p/b", "1"), put("/q", "x")]).unwrap(); // r+2
    store.txn(&[], &[put("/p/a", "2")]).unwrap(); // r+3

    // Starting after r+1: the later changes, in revision order.
    let rx = store.watch("/p/", r + 1).unwrap();
    assert_eq!(recv(&rx), put_event("/p/b", "1", r + 2));
    assert_eq!(recv(&rx), put_event("/p/a", "2", r + 3));

    store.txn(&[], &[del("/p/a")]).unwrap(); // r+4
    assert_eq!(recv(&rx), delete_event("/p/a", r + 4));
    store.txn(&[], &[put("/q", "y")]).unwrap(); // r+5, outside the prefix
    store.txn(&[], &[put("/p/c", "1")]).unwrap(); // r+6
    assert_eq!(recv(&rx), put_event("/p/c", "1", r + 6));

    // Changes in quick succession, through another handle: in revision order.
    let other = backing.open();
    other.txn(&[], &[put("/p/x", "1")]).unwrap(); // r+7
    other.txn(&[], &[put("/p/y", "1")]).unwrap(); // r+8
    other.txn(&[], &[del("/p/c")]).unwrap(); // r+9
    assert_eq!(
        [recv(&rx), recv(&rx), recv(&rx)],
        [put_event("/p/x", "1", r + 7), put_event("/p/y", "1", r + 8), delete_event("/p/c", r + 9)]
    );
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "no more events");
}

/// A watcher that comes back (after its watch broke) and watches from the revision it
/// had seen gets what was written meanwhile.
fn watch_from_a_past_revision_catches_up(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    store.txn(&[], &[put("/p/a", "1")]).unwrap();
    let seen = store.list("/p/").unwrap().revision;
    let writer = backing.open();
    writer.txn(&[], &[put("/p/b", "1")]).unwrap(); // seen+1
    writer.txn(&[], &[put("/p/a", "2")]).unwrap(); // seen+2
    let rx = store.watch("/p/", seen).unwrap();
    assert_eq!(recv(&rx), put_event("/p/b", "1", seen + 1));
    assert_eq!(recv(&rx), put_event("/p/a", "2", seen + 2));
    writer.txn(&[], &[put("/p/c", "1")]).unwrap(); // seen+3
    assert_eq!(recv(&rx), put_event("/p/c", "1", seen + 3));
}

fn watch_sees_the_first_write(kind: Kind) {
    let backing = Backing::new(kind);
    let store = backing.open();
    let r = store.list("").unwrap().revision;
    let rx = store.watch("/", r).unwrap();
    store.txn(&[], &[put("/a", "1")]).unwrap();
    assert_eq!(recv(&rx), put_event("/a", "1", r + 1));
}

/// THREADS writers increment one counter with compare-and-swap, half of them through
/// one shared handle, the others through their own (another process, as it were).
fn concurrent_cas_increments_lose_no_update(kind: Kind) {
    const THREADS: usize = 8;
    const INCREMENTS: u64 = 25;
    const KEY: &str = "/counter";
    let backing = Backing::new(kind);
    let shared = backing.open();
    let r = shared.list("").unwrap().revision;
    let committed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let store = if i % 2 == 0 { shared.clone() } else { backing.open() };
            let committed = &committed;
            s.spawn(move || {
                for _ in 0..INCREMENTS {
                    let value = increment(&*store, KEY);
                    committed.lock().unwrap().push(value);
                }
            });
        }
    });
    let total = THREADS as u64 * INCREMENTS;
    let committed = committed.into_inner().unwrap();
    // Every increment committed a value no other did: none was lost or applied twice.
    assert_eq!(committed.iter().copied().collect::<HashSet<u64>>(), (1..=total).collect());
    assert_eq!(value(&*shared, KEY), Some((total.to_string(), r + total)));
    assert_eq!(shared.list("").unwrap().revision, r + total);
}

/// Adds one to the decimal counter at `key` (absent = 0) with compare-and-swap, retrying
/// at once when another writer committed first; the value it committed.
fn increment(store: &dyn Store, key: &str) -> u64 {
    loop {
        let current = value(store, key);
        let (next, mod_revision) = current.map_or((1, 0), |(v, r)| (v.parse::<u64>().unwrap() + 1, r));
        if store.txn(&[rev(key, mod_revision)], &[put(key, &next.to_string())]).unwrap() {
            return next;
        }
    }
}
