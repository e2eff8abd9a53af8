//! The origin's index.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::{index::Index, testkit::fuzz};

fuzz_target!(|data: &[u8]| {
    if let Ok(ix) = Index::parse(data) {
        assert_eq!(
            ix.to_bytes(),
            data,
            "a parsed index re-encodes to other bytes"
        );
    }
    let _ = Index::verify(data, wardswarm_fuzz::root(), fuzz::now(), Some(1));
});
