//! A peer's answer to a GET: the bao encoding of some runs of chunk groups, verified as it is
//! written. The first byte picks the runs asked for; nothing unverified may be marked as held.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let e = wardswarm_fuzz::empty_entry();
    let n = e.group_count();
    let start = u64::from(pick & 0x0f) % n;
    let end = (start + 1 + u64::from(pick >> 4)).min(n);
    let _ = e.receive(&[start..end], body, |_| {});
    wardswarm_fuzz::assert_only_verified(&e);
});
