//! Every wire frame: the first byte picks the message, the rest is its body (or, for `0`, a raw
//! length-prefixed stream for the frame reader).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wardswarm_node::net::{
    exchange::PeerList,
    wire::{self, Get, Have},
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => {
            let mut r = futures::io::Cursor::new(body);
            let _ = futures::executor::block_on(wire::read_frame(&mut r, 64 * 1024));
        }
        1 => {
            if let Ok(h) = Have::from_bytes(body) {
                assert_eq!(Have::from_bytes(&h.to_bytes()).expect("re-parse"), h);
            }
        }
        2 => {
            if let Ok(g) = Get::from_bytes(body) {
                assert_eq!(g.to_bytes(), body, "a GET re-encodes to other bytes");
                assert!(g.groups().count() as u64 <= wire::MAX_GET_GROUPS);
            }
        }
        _ => {
            if let Ok(l) = PeerList::from_bytes(body) {
                assert_eq!(PeerList::from_bytes(&l.to_bytes()).expect("re-parse"), l);
            }
        }
    }
});
