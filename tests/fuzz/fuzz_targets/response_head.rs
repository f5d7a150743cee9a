//! Any bytes a backend sends as a response head are judged without a panic; an accepted head
//! never claims more bytes than it was given, and the head forwarded to the visitor reads the
//! same way again: same status and framing, and no `Content-Length` in a chunked one (RFC 9112
//! 6.3), so that Cloudflare cannot read the answer two ways.
#![no_main]

use holdfast_h1::{response, rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, bytes) = match data.split_first() {
        Some((flags, rest)) => (*flags, rest),
        None => return,
    };
    let head_request = flags & 1 == 1;
    let Ok(Some(answer)) = response::parse(bytes, head_request) else {
        return;
    };
    assert!(answer.len <= bytes.len());
    assert!((100..1000).contains(&answer.status));
    let mut out = Vec::new();
    if !rewrite::response_head(&bytes[..answer.len], flags & 2 == 2, flags & 4 == 4, &mut out) {
        return;
    }
    let again = response::parse_forwarded(&out, head_request)
        .expect("a forwarded head is accepted again")
        .expect("a forwarded head is complete");
    assert_eq!(again.len, out.len());
    assert_eq!(again.status, answer.status);
    // A close-delimited body stays close-delimited: the gateway closes after it.
    assert_eq!(again.framing, answer.framing, "{:?}", String::from_utf8_lossy(&out));
    if again.framing == response::BodyFraming::Chunked {
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(!text.contains("\ncontent-length:"), "{text:?}");
    }
});
