//! What the fuzz targets share: the fixtures (`wardswarm_node::testkit::fuzz`) built once per
//! process, and the store the transfer targets receive into.

use std::sync::{Arc, OnceLock};

use wardswarm_node::{
    hash::Hash,
    outboard,
    root::TrustRoot,
    store::{Entry, Store},
    testkit::fuzz,
};

/// The fixtures' trust root.
pub fn root() -> &'static TrustRoot {
    static R: OnceLock<TrustRoot> = OnceLock::new();
    R.get_or_init(fuzz::root)
}

/// The fixture artifact's root and outboard.
pub fn artifact() -> &'static (Vec<u8>, Hash, Vec<u8>) {
    static A: OnceLock<(Vec<u8>, Hash, Vec<u8>)> = OnceLock::new();
    A.get_or_init(|| {
        let data = fuzz::artifact();
        let (root, ob) = outboard::create_in_memory(&data);
        (data, root, ob)
    })
}

/// A fresh, empty store entry for the fixture artifact (the store lives in a temporary folder for
/// the life of the process).
pub fn empty_entry() -> Arc<Entry> {
    static S: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    let (_, store) = S.get_or_init(|| {
        // In memory where the machine has it: each input recreates the entry's files.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary folder");
        let store = Store::open(dir.path().join("store")).expect("store");
        (dir, store)
    });
    let (data, root, _) = artifact();
    let _ = store.remove(root);
    store.create(*root, data.len() as u64).expect("entry")
}

/// Every group the entry says it has must verify against the signed root: the one thing a
/// transfer may never get wrong, whatever the input.
pub fn assert_only_verified(e: &Entry) {
    let have = e.have();
    let all = [0..e.group_count()];
    let valid = e.validate(&all).expect("validate");
    for g in 0..e.group_count() {
        assert!(
            !have.contains(g) || valid.contains(g),
            "group {g} is marked verified but does not verify"
        );
    }
}
