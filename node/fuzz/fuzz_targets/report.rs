//! Device status reports, as the gateway reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::agent::runtime::Report;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<Report>(data) {
        let again: Report =
            serde_json::from_slice(&serde_json::to_vec(&r).expect("encode")).expect("decode");
        assert_eq!(again, r, "a report does not survive a round trip");
    }
});
