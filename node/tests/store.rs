//! The verified chunk store: fills in any order, refuses corrupt data, survives restarts.

use std::{cell::RefCell, io::Read, ops::Range, rc::Rc};

use wardswarm_node::{
    groups::GroupSet,
    outboard::{self, GROUP_BYTES},
    store::{Incoming, ReceiveError, ServeError, Store},
    Hash,
};

/// Interesting sizes at BLAKE3/bao boundaries.
const SIZES: &[u64] = &[
    1,
    1023,
    1024,
    1025,
    GROUP_BYTES - 1,
    GROUP_BYTES,
    GROUP_BYTES + 1,
    5 * GROUP_BYTES + 777,
    64 * GROUP_BYTES,
];

fn data(len: u64, seed: u64) -> Vec<u8> {
    wardswarm_node::testkit::bytes(len as usize, seed)
}

/// A complete source store holding `bytes`.
fn source(bytes: &[u8]) -> (tempfile::TempDir, Store, Hash) {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().join("src-files");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::write(d.join("data"), bytes).expect("write");
    let ob = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("ob"))
        .expect("ob");
    let root = outboard::create(bytes, bytes.len() as u64, &ob).expect("outboard");
    let store = Store::open(dir.path().join("store")).expect("store");
    store
        .import(root, bytes.len() as u64, &d.join("data"), &d.join("ob"))
        .expect("import");
    (dir, store, root)
}

fn encode(store: &Store, root: &Hash, groups: &[Range<u64>]) -> Vec<u8> {
    let mut v = Vec::new();
    store
        .get(root)
        .expect("entry")
        .serve(groups, &mut v)
        .expect("serve");
    v
}

#[test]
fn fills_in_any_order_and_serves_what_it_has() {
    for &len in SIZES {
        let bytes = data(len, len);
        let (_d, src, root) = source(&bytes);
        let dir = tempfile::tempdir().expect("tmp");
        let dst = Store::open(dir.path()).expect("store");
        let e = dst.create(root, len).expect("create");
        let n = e.group_count();
        // Back to front, one group at a time, then a relay: a third store fills from the second.
        for g in (0..n).rev() {
            let wire = encode(&src, &root, &[g..g + 1]);
            let mut seen = vec![];
            e.receive(&[g..g + 1], &wire[..], |x| seen.push(x))
                .expect("verified");
            assert_eq!(seen, vec![g], "len {len}");
            // Proof overhead is bounded even for single groups.
            assert!(
                wire.len() as u64
                    <= outboard::group_bytes(g, len).end - outboard::group_bytes(g, len).start
                        + 64 * 64
            );
        }
        assert!(e.is_complete(), "len {len}");
        assert_eq!(
            std::fs::read(e.data_path()).expect("read"),
            bytes,
            "len {len}"
        );
        let relay_dir = tempfile::tempdir().expect("tmp");
        let relay = Store::open(relay_dir.path()).expect("store");
        let r = relay.create(root, len).expect("create");
        r.receive(&[0..n], &encode(&dst, &root, &[0..n])[..], |_| {})
            .expect("relay verified");
        assert!(r.is_complete());
    }
}

#[test]
fn whole_artifact_costs_about_point_four_percent() {
    let len = 256 * GROUP_BYTES;
    let bytes = data(len, 3);
    let (_d, src, root) = source(&bytes);
    let wire = encode(&src, &root, &[0..256]);
    let overhead = wire.len() as f64 / len as f64 - 1.0;
    assert!(overhead < 0.0045, "overhead {overhead}");
}

#[test]
fn groups_held_already_are_verified_again_but_not_written_again() {
    let len = 8 * GROUP_BYTES + 100;
    let bytes = data(len, 19);
    let (_d, src, root) = source(&bytes);
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    let written = e
        .receive(&[3..4], &encode(&src, &root, &[3..4])[..], |_| {})
        .expect("verified");
    assert_eq!(written, GROUP_BYTES);
    // A response that holds group 3 again writes only the groups new to the store.
    let mut seen = vec![];
    let written = e
        .receive(&[2..6], &encode(&src, &root, &[2..6])[..], |g| seen.push(g))
        .expect("verified");
    assert_eq!(written, 3 * GROUP_BYTES);
    assert_eq!(seen, vec![2, 4, 5]);
    // A held group is still checked: a corrupt copy of it fails the response.
    let mut wire = encode(&src, &root, &[3..5]);
    let at = wire.len() / 4;
    wire[at] ^= 1;
    assert!(matches!(
        e.receive(&[3..5], &wire[..], |_| {}),
        Err(ReceiveError::Corrupt(_))
    ));
    let mut all = Vec::new();
    std::fs::File::open(e.data_path())
        .expect("open")
        .read_to_end(&mut all)
        .expect("read");
    let held = 2 * GROUP_BYTES as usize..6 * GROUP_BYTES as usize;
    assert_eq!(all[held.clone()], bytes[held]);
}

#[test]
fn corrupt_data_is_refused_before_it_is_written() {
    let len = 8 * GROUP_BYTES + 100;
    let bytes = data(len, 9);
    let (_d, src, root) = source(&bytes);
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    let mut wire = encode(&src, &root, &[2..6]);
    // Flip a byte near the end: groups 2..4 verify, group 5 is refused.
    let at = wire.len() - 10;
    wire[at] ^= 1;
    let mut seen = vec![];
    match e.receive(&[2..6], &wire[..], |g| seen.push(g)) {
        Err(ReceiveError::Corrupt(msg)) => assert!(msg.contains("chunk group 5"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(seen, vec![2, 3, 4]);
    let have = e.have();
    assert!(!have.contains(5));
    // Truncated: transient, not corrupt.
    let wire = encode(&src, &root, &[6..8]);
    assert!(matches!(
        e.receive(&[6..8], &wire[..wire.len() / 2], |_| {}),
        Err(ReceiveError::Truncated(_))
    ));
    // Serving a group we do not have is refused.
    assert!(matches!(
        e.serve(&[5..6], Vec::new()),
        Err(ServeError::Store(_))
    ));
}

#[test]
fn restart_keeps_verified_groups_and_drops_lost_ones() {
    let len = 16 * GROUP_BYTES;
    let bytes = data(len, 5);
    let (_d, src, root) = source(&bytes);
    let dir = tempfile::tempdir().expect("tmp");
    {
        let dst = Store::open(dir.path()).expect("store");
        let e = dst.create(root, len).expect("create");
        e.receive(&[0..4], &encode(&src, &root, &[0..4])[..], |_| {})
            .expect("ok");
        e.receive(&[10..12], &encode(&src, &root, &[10..12])[..], |_| {})
            .expect("ok");
        // No sync: a process kill keeps the page cache; this is what a kill -9 leaves.
    }
    let dst = Store::open(dir.path()).expect("reopen");
    let e = dst.get(&root).expect("entry survives");
    let mut expected = GroupSet::new(16);
    expected.insert_range(0..4);
    expected.insert_range(10..12);
    assert_eq!(e.have(), expected);

    // Simulate a power cut that lost the data of group 11 but kept its bit.
    drop(e);
    drop(dst);
    let dp = dir.path().join(root.to_hex()).join("data");
    let f = std::fs::File::options()
        .write(true)
        .open(&dp)
        .expect("open");
    std::os::unix::fs::FileExt::write_all_at(
        &f,
        &vec![0u8; GROUP_BYTES as usize],
        11 * GROUP_BYTES,
    )
    .expect("zero");
    let dst = Store::open(dir.path()).expect("reopen");
    let e = dst.get(&root).expect("entry");
    assert!(
        !e.have().contains(11),
        "a bit without its data is dropped on open"
    );
    assert!(e.have().contains(10));
    // And corrupted local data is never served: it is dropped at send time too.
    std::os::unix::fs::FileExt::write_all_at(&f, b"rot", 1).expect("rot");
    assert!(matches!(
        e.serve(&[0..1], Vec::new()),
        Err(ServeError::LocalCorruption { dropped: 1 })
    ));
    assert!(!e.have().contains(0));

    // Leftovers of an interrupted creation are cleaned up, and a length mismatch is refused.
    std::fs::create_dir(dir.path().join(".abcd.new-xyz")).expect("mkdir");
    let dst = Store::open(dir.path()).expect("reopen");
    assert!(!dir.path().join(".abcd.new-xyz").exists());
    assert!(dst.create(root, len + 1).is_err());
}

#[test]
fn a_set_of_runs_travels_in_one_response() {
    let len = 12 * GROUP_BYTES + 5;
    let bytes = data(len, 21);
    let (_d, src, root) = source(&bytes);
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    let runs = [1..3, 5..7, 11..13];
    let mut seen = vec![];
    e.receive(&runs, &encode(&src, &root, &runs)[..], |g| seen.push(g))
        .expect("verified");
    assert_eq!(seen, vec![1, 2, 5, 6, 11, 12]);
    // The same runs asked of a store that lacks one of them are refused before anything is sent.
    assert!(matches!(
        e.serve(&[1..3, 3..4], Vec::new()),
        Err(ServeError::Store(_))
    ));
}

/// A response that arrives in pieces, as from a slow peer: `drained` at the end of each piece. At
/// each wait for the next piece it notes how many groups had been reported.
struct Pieces {
    next: std::collections::VecDeque<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
    seen: Rc<RefCell<Vec<u64>>>,
    reported_at_waits: Vec<usize>,
}

impl Incoming for Pieces {
    fn drained(&self) -> bool {
        self.at == self.piece.len()
    }
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.drained() {
            // Waiting for the peer's next bytes: what came before must be reported by now.
            self.reported_at_waits.push(self.seen.borrow().len());
            match self.next.pop_front() {
                Some(p) => (self.piece, self.at) = (p, 0),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len() - self.at);
        out[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn groups_are_written_and_reported_before_the_response_waits_for_the_peer() {
    // 40 groups: more than one batch, so batches are written both when full and before a wait.
    let len = 40 * GROUP_BYTES;
    let bytes = data(len, 31);
    let (_d, src, root) = source(&bytes);
    let wire = encode(&src, &root, &[0..40]);
    // Three pieces: about 4 groups, about 16 more, the rest. A batch holds 16 groups, so only a write
    // before each wait reports the first two pieces' groups in full.
    let (cut_a, cut_b) = (wire.len() / 10, wire.len() / 2);
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    let seen = Rc::new(RefCell::new(vec![]));
    let mut pieces = Pieces {
        next: [&wire[..cut_a], &wire[cut_a..cut_b], &wire[cut_b..]]
            .map(<[u8]>::to_vec)
            .into(),
        piece: vec![],
        at: 0,
        seen: seen.clone(),
        reported_at_waits: vec![],
    };
    let written = {
        let s = seen.clone();
        e.receive(&[0..40], &mut pieces, move |g| s.borrow_mut().push(g))
            .expect("verified")
    };
    assert_eq!(written, len);
    assert_eq!(*seen.borrow(), (0..40).collect::<Vec<_>>());
    // Before the first wait nothing had arrived; every later wait saw what had fully arrived reported.
    let waits = &pieces.reported_at_waits;
    assert_eq!(waits[0], 0, "{waits:?}");
    assert!(
        waits[1] >= 3,
        "the first piece's groups reported before waiting: {waits:?}"
    );
    assert!(
        waits[2] >= 19,
        "the second piece's groups reported before waiting: {waits:?}"
    );
    drop(e);
    drop(dst);
    // Everything reported is on disk: a reopened store re-validates all 40 groups.
    let dst = Store::open(dir.path()).expect("reopen");
    let e = dst.get(&root).expect("entry");
    assert!(e.is_complete());
    assert_eq!(std::fs::read(e.data_path()).expect("read"), bytes);
}

#[test]
fn full_batches_go_past_the_page_cache_and_small_ones_and_the_tail_do_not() {
    // 40 groups and a short last one: one response writes 256 KiB batches, the last one short.
    let len = 40 * GROUP_BYTES + 777;
    let bytes = data(len, 41);
    let (_d, src, root) = source(&bytes);
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    let n = e.group_count();
    // Single groups first: batches of one group stay in the page cache. The whole response then
    // writes only the groups new to the store: 0..3 (small), 4..20 and 20..36 (full), 36 and
    // 38..41 (small, with the short tail).
    for g in [3, 37] {
        e.receive(&[g..g + 1], &encode(&src, &root, &[g..g + 1])[..], |_| {})
            .expect("verified");
    }
    assert_eq!(e.direct_bytes(), 0, "a batch of one group is not direct");
    let mut seen = Vec::new();
    e.receive(&[0..n], &encode(&src, &root, &[0..n])[..], |g| seen.push(g))
        .expect("verified");
    assert_eq!(seen.len() as u64, n - 2, "each new group reported once");
    assert!(e.is_complete());
    let direct = wardswarm_node::fsutil::open_direct(&e.data_path(), true).is_some();
    if direct {
        // 16 groups per full batch.
        assert!(
            e.direct_bytes() >= 2 * 16 * GROUP_BYTES,
            "full batches went direct: {} bytes",
            e.direct_bytes()
        );
        assert_eq!(e.direct_bytes() % 4096, 0);
    }
    assert_eq!(std::fs::read(e.data_path()).expect("read"), bytes);
    // What was written direct serves and survives a reopen like the rest.
    e.sync().expect("sync");
    drop(e);
    drop(dst);
    let again = Store::open(dir.path()).expect("reopen");
    let e = again.get(&root).expect("entry");
    assert!(e.is_complete(), "every group re-validated on open");
    let relay_dir = tempfile::tempdir().expect("tmp");
    let relay = Store::open(relay_dir.path()).expect("store");
    let r = relay.create(root, len).expect("create");
    r.receive(&[0..n], &encode(&again, &root, &[0..n])[..], |_| {})
        .expect("relay verified");
    assert_eq!(std::fs::read(r.data_path()).expect("read"), bytes);
}

#[test]
fn the_gateways_wan_intake_stays_in_the_page_cache() {
    // Plain bytes from the origin, in one piece: the gateway serves them to the ward next.
    let len = 40 * GROUP_BYTES;
    let bytes = data(len, 43);
    let (d, _src, root) = source(&bytes);
    let ob = std::fs::read(d.path().join("src-files").join("ob")).expect("outboard");
    let dir = tempfile::tempdir().expect("tmp");
    let dst = Store::open(dir.path()).expect("store");
    let e = dst.create(root, len).expect("create");
    e.receive_plain(0, &bytes, &ob, |_| {}).expect("verified");
    assert!(e.is_complete());
    assert_eq!(
        e.direct_bytes(),
        0,
        "full batches, but kept in the page cache"
    );
    assert_eq!(std::fs::read(e.data_path()).expect("read"), bytes);
}
