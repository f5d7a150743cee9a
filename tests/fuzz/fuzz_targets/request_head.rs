//! A request head judged valid is forwarded in a form that judges the same way: rewriting never
//! changes how the backend would frame the body, whatever bytes came in.
#![no_main]

use holdfast_h1::request::{self, Framing};
use holdfast_h1::rewrite::{self, Forwarding};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = request::parse(data) else {
        return;
    };
    assert!(head.len <= data.len());
    if let Some((a, b)) = head.host {
        assert!(a <= b && b <= head.len);
    }
    let text = String::from_utf8_lossy(&data[..head.len]).to_ascii_lowercase();
    let has_header = |name: &str| {
        text.split("\r\n")
            .skip(1)
            .any(|line| line.split(':').next() == Some(name))
    };
    match head.framing {
        Framing::Chunked => assert!(
            !has_header("content-length"),
            "chunked and a length: {text:?}"
        ),
        Framing::Length(_) => assert!(
            !has_header("transfer-encoding"),
            "a length and a coding: {text:?}"
        ),
        Framing::Empty => {}
    }
    let names = rewrite::HeaderNames::default();
    let fwd = Forwarding {
        client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        proto: "https",
        // Both the trusted peer's rules and anyone else's.
        trusted: data.len() % 2 == 0,
        names: &names,
    };
    let mut out = Vec::new();
    assert!(
        rewrite::request_head(&data[..head.len], fwd, &mut out).is_some(),
        "a valid head was not rewritten: {text:?}"
    );
    let again = request::parse_forwarded(&out)
        .unwrap_or_else(|r| {
            panic!(
                "the forwarded head is refused ({r:?}): {:?}",
                String::from_utf8_lossy(&out)
            )
        })
        .unwrap_or_else(|| {
            panic!(
                "the forwarded head is incomplete: {:?}",
                String::from_utf8_lossy(&out)
            )
        });
    assert_eq!(again.len, out.len());
    assert_eq!(
        again.framing,
        head.framing,
        "framing changed: {text:?} -> {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(again.head_method, head.head_method);
    assert_eq!(again.expect_continue, head.expect_continue);
});
