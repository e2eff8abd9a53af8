//! Release manifests: parsing, validation, signatures and the device's verdict.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::{manifest::SignedManifest, testkit::fuzz, verify::DevicePolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(sm) = SignedManifest::parse(data) else {
        return;
    };
    assert_eq!(
        sm.to_bytes(),
        data,
        "a parsed manifest re-encodes to other bytes"
    );
    let _ = sm.release_id();
    let root = wardswarm_fuzz::root();
    if sm.check_signatures(root).is_ok() {
        let policy = DevicePolicy {
            root,
            product: Some("infusion-pump"),
            hardware: "pump-rev-c",
            committed_counter: 1,
            now: fuzz::now(),
        };
        let _ = policy.accept_manifest(data);
    }
});
