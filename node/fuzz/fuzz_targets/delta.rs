//! The delta format, applied as a bounded stream to the fixture base.
#![no_main]
use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use wardswarm_node::{delta, testkit::fuzz};

/// Output past this is an error the applier must raise itself.
const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let base = fuzz::base();
    let Ok(mut a) = delta::apply(|| Ok(Cursor::new(data)), Cursor::new(&base[..]), LIMIT) else {
        return;
    };
    let mut out = Vec::new();
    if a.read_to_end(&mut out).is_ok() {
        assert!(out.len() as u64 <= LIMIT, "the limit was not enforced");
    }
});
