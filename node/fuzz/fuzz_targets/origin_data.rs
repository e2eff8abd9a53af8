//! What the gateway takes from the origin over the WAN: a ranged run of artifact bytes and the
//! artifact's outboard, both untrusted. Layout: first group (1 byte), data length (2 bytes, big
//! endian), the data, then the outboard.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let first = u64::from(data[0]);
    let len = (usize::from(data[1]) << 8 | usize::from(data[2])).min(data.len() - 3);
    let (body, outboard) = data[3..].split_at(len);
    let e = wardswarm_fuzz::empty_entry();
    if first >= e.group_count() {
        return;
    }
    let _ = e.receive_plain(first, body, outboard, |_| {});
    wardswarm_fuzz::assert_only_verified(&e);
});
