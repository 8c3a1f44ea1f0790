//! Scrubbing a stream chunk by chunk must give exactly what scrubbing it whole gives, for
//! any split, and leave no raw form of the secret.
#![no_main]

use keygate_vault::echo::EchoScrubber;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const SECRET: &str = "sk-proj-FUZZsecret0123456789abcdef/+=";

fuzz_target!(|input: (Vec<u8>, Vec<u8>, u8)| {
    let (before, after, chunk) = input;
    let Some(scrubber) = EchoScrubber::new(&[SECRET]) else { return };
    let scrubber = Arc::new(scrubber);
    let mut text = before;
    text.extend_from_slice(SECRET.as_bytes());
    text.extend_from_slice(&after);
    let whole = scrubber.scrub(&text);
    assert!(!whole.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    let mut stream = scrubber.stream();
    let mut out = Vec::new();
    for piece in text.chunks(usize::from(chunk.max(1))) {
        out.extend(stream.push(piece));
    }
    out.extend(stream.finish());
    assert_eq!(out, whole);
});
