//! Any bytes a backend sends as a response head are judged without a panic, and an accepted
//! head never claims more bytes than it was given.
#![no_main]

use holdfast_h1::response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head_request, bytes) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => return,
    };
    if let Ok(Some(answer)) = response::parse(bytes, head_request) {
        assert!(answer.len <= bytes.len());
        assert!((100..1000).contains(&answer.status));
    }
});
