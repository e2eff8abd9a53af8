//! Membership certificates, as admission checks them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::{membership::Certificate, testkit::fuzz};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certificate::parse(data) {
        assert_eq!(
            c.to_bytes(),
            data,
            "a parsed certificate re-encodes to other bytes"
        );
        let peer = c.peer.clone();
        let _ = c.verify(wardswarm_fuzz::root(), &peer, fuzz::WARD, fuzz::now());
    }
});
