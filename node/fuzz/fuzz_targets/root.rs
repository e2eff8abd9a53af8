//! The trust root: parsing, self-signature, and a rotation from the fixture root.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::root::TrustRoot;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = TrustRoot::parse_unverified(data) {
        assert_eq!(
            r.to_bytes(),
            data,
            "a parsed root re-encodes to other bytes"
        );
        let _ = r.check_self_signed();
        let _ = r.fingerprint();
    }
    let _ = wardswarm_fuzz::root().verify_successor(data);
});
