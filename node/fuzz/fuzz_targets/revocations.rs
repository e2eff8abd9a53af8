//! Certificate revocation lists.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::{revocation::RevocationList, testkit::fuzz};

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = RevocationList::parse(data) {
        assert_eq!(
            l.to_bytes(),
            data,
            "a parsed list re-encodes to other bytes"
        );
        let _ = l.verify(wardswarm_fuzz::root(), fuzz::WARD);
        for e in &l.revoked {
            assert!(l.revokes(&e.peer).is_some(), "a listed peer is not found");
        }
    }
});
