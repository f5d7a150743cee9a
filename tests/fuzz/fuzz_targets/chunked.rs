//! The chunked scanner gives the same verdict however the body is split into reads, never
//! claims more bytes than it was given, and what it accepts ends with the last-chunk framing.
#![no_main]

use holdfast_h1::chunked::ChunkedScanner;
use libfuzzer_sys::fuzz_target;

/// Scans `body` in pieces of the sizes given; the number of bytes of the body and whether it
/// ended, or the error.
fn scan(body: &[u8], cuts: &[u8]) -> Result<(usize, bool), holdfast_h1::chunked::ChunkError> {
    let mut scanner = ChunkedScanner::default();
    let (mut at, mut taken) = (0, 0);
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    while at < body.len() && !scanner.is_done() {
        let end = (at + sizes.next().unwrap_or(body.len())).min(body.len());
        let n = scanner.scan(&body[at..end])?;
        assert!(n <= end - at);
        if n < end - at {
            assert!(
                scanner.is_done(),
                "bytes left over before the end of the body"
            );
        }
        taken += n;
        at = end;
    }
    Ok((taken, scanner.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let (cuts, body) = data.split_at(data.len().min(4));
    let split = scan(body, if cuts.is_empty() { &[0] } else { cuts });
    let whole_at_once = {
        let mut s = ChunkedScanner::default();
        s.scan(body).map(|n| (n, s.is_done()))
    };
    assert_eq!(whole_at_once.is_ok(), split.is_ok(), "{body:?}");
    if let (Ok(a), Ok(b)) = (whole_at_once, split) {
        assert_eq!(a, b, "{body:?}");
        if a.1 {
            assert!(body[..a.0].ends_with(b"\r\n\r\n"), "{body:?}");
        }
    }
});
