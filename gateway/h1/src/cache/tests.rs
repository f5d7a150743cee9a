use super::*;

const STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

fn request(lines: &str) -> Vec<u8> {
    format!("GET /page?x=1 HTTP/1.1\r\nHost: Example.COM:443\r\n{lines}\r\n").into_bytes()
}

fn response(status: u16, lines: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\n{lines}\r\n").into_bytes()
}

#[test]
fn what_is_kept() {
    // (request lines, response status and lines, kept or why not)
    let rows: [(&str, u16, &str, Result<(), Skip>); 23] = [
        ("Cookie: _ga=1\r\n", 200, "", Err(Skip::Cookie)),
        (
            "Cookie: _ga=1\r\n",
            200,
            "Cache-Control: public\r\n",
            Ok(()),
        ),
        (
            "Cookie: _ga=1\r\n",
            200,
            "Cache-Control: s-maxage=60\r\n",
            Ok(()),
        ),
        ("", 200, "", Ok(())),
        ("", 200, "Cache-Control: public, max-age=60\r\n", Ok(())),
        ("", 404, "", Ok(())),
        ("", 302, "Location: /x\r\n", Err(Skip::Status)),
        ("", 500, "", Err(Skip::Status)),
        ("", 200, "Cache-Control: no-store\r\n", Err(Skip::NoStore)),
        (
            "",
            200,
            "cache-control: max-age=5\r\nCache-Control: NO-STORE\r\n",
            Err(Skip::NoStore),
        ),
        ("", 200, "Cache-Control: private\r\n", Err(Skip::Private)),
        (
            "",
            200,
            "Cache-Control: private=\"Set-Cookie\"\r\n",
            Err(Skip::Private),
        ),
        (
            "",
            200,
            "Cache-Control: no-cache\r\n",
            Err(Skip::MustRevalidate),
        ),
        (
            "",
            200,
            "Cache-Control: max-age=60, must-revalidate\r\n",
            Err(Skip::MustRevalidate),
        ),
        ("", 200, "Set-Cookie: session=abc\r\n", Err(Skip::SetCookie)),
        (
            "Authorization: Bearer x\r\n",
            200,
            "",
            Err(Skip::Authorization),
        ),
        (
            "Authorization: Bearer x\r\n",
            200,
            "Cache-Control: public\r\n",
            Ok(()),
        ),
        (
            "Authorization: Bearer x\r\n",
            200,
            "Cache-Control: s-maxage=10\r\n",
            Ok(()),
        ),
        ("", 200, "Vary: *\r\n", Err(Skip::VaryStar)),
        ("", 200, "Vary: Accept-Encoding, *\r\n", Err(Skip::VaryStar)),
        (
            "Cache-Control: no-store\r\n",
            200,
            "",
            Err(Skip::RequestNoStore),
        ),
        ("Content-Length: 3\r\n", 200, "", Err(Skip::RequestBody)),
        (
            "Transfer-Encoding: chunked\r\n",
            200,
            "",
            Err(Skip::RequestBody),
        ),
    ];
    for (req, status, res, want) in rows {
        let got = keep(&request(req), &response(status, res), &STATUSES, false).map(|_| ());
        assert_eq!(got, want, "{req:?} {status} {res:?}");
    }
    let cookie = request("Cookie: _ga=1\r\n");
    assert!(
        keep(&cookie, &response(200, ""), &STATUSES, true).is_ok(),
        "cookies ignored"
    );
    let head = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        keep(head, &response(200, ""), &STATUSES, false),
        Err(Skip::Method)
    );
    assert_eq!(
        keep(b"GET / HTTP/1.1\r\n", &response(200, ""), &STATUSES, false),
        Err(Skip::Malformed)
    );
}

#[test]
fn what_a_kept_copy_holds() {
    let kept = keep(
        &request(""),
        &response(
            200,
            "Connection: close, X-Per-Hop\r\nX-Per-Hop: 1\r\nTransfer-Encoding: chunked\r\n\
             Age: 30\r\nETag: \"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Vary: Accept-Language, accept-encoding\r\nContent-Type: text/html\r\n\
             Cache-Control: max-age=60, stale-if-error=600\r\nX-Holdfast-Stale: 1\r\n",
        ),
        &STATUSES,
        false,
    )
    .expect("kept");
    assert_eq!(kept.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&kept.lines),
        "ETag: \"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Vary: Accept-Language, accept-encoding\r\nContent-Type: text/html\r\n\
         Cache-Control: max-age=60, stale-if-error=600\r\n",
        "hop-by-hop headers, those Connection names, Content-Length, Age and the marker out"
    );
    assert_eq!(kept.vary, ["accept-language", "accept-encoding"]);
    assert_eq!(kept.age, 30);
    assert_eq!(kept.limit, Some(Duration::from_secs(60 + 600 - 30)));
    assert_eq!(kept.etag.as_deref(), Some(&b"\"v1\""[..]));
    assert_eq!(
        kept.last_modified,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
    );
    let plain = keep(&request(""), &response(200, ""), &STATUSES, false).expect("kept");
    assert_eq!(
        plain.limit, None,
        "no stale-if-error: only max_age bounds it"
    );
}

#[test]
fn how_long_a_copy_serves() {
    let kept = |age, limit| Kept {
        status: 200,
        lines: Vec::new(),
        vary: Vec::new(),
        age,
        limit,
        etag: None,
        last_modified: None,
    };
    let s = Duration::from_secs;
    // (age when kept, its limit, kept for, max_age, servable)
    let rows = [
        (0, None, s(10), s(60), true),
        (0, None, s(60), s(60), true),
        (0, None, s(61), s(60), false),
        (50, None, s(11), s(60), false),
        (0, Some(s(5)), s(6), s(60), false),
        (0, Some(s(5)), s(5), s(60), true),
        (0, Some(s(500)), s(100), s(60), false),
    ];
    for (age, limit, resident, max_age, want) in rows {
        assert_eq!(
            servable(&kept(age, limit), resident, max_age),
            want,
            "{age} {limit:?} {resident:?} {max_age:?}"
        );
    }
}

#[test]
fn lookups() {
    let l = lookup("https", &request("If-None-Match: \"v1\"\r\n")).expect("a lookup");
    assert_eq!(l.url, "https://example.com/page?x=1");
    assert!(!l.head_only);
    assert_eq!(l.if_none_match.as_deref(), Some(&b"\"v1\""[..]));
    let head = lookup("http", b"HEAD / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").expect("a lookup");
    assert_eq!((head.url.as_str(), head.head_only), ("http://[::1]/", true));
    let none = [
        &b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
    ];
    for r in none {
        assert_eq!(lookup("http", r), None, "{:?}", String::from_utf8_lossy(r));
    }
    assert!(lookup(
        "http",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    )
    .is_some());
}

#[test]
fn vary_keys() {
    let vary = vec!["accept-language".to_string(), "accept-encoding".to_string()];
    let url = "https://example.com/";
    let fr = vary_key(
        url,
        &vary,
        &request("Accept-Language: fr\r\nAccept-Encoding: gzip\r\n"),
    );
    let en = vary_key(
        url,
        &vary,
        &request("Accept-Language: en\r\nAccept-Encoding: gzip\r\n"),
    );
    let none = vary_key(url, &vary, &request(""));
    assert_eq!(
        fr,
        "https://example.com/\naccept-language:fr\naccept-encoding:gzip"
    );
    assert_ne!(fr, en);
    assert_eq!(
        none,
        "https://example.com/\naccept-language:\naccept-encoding:"
    );
    let two_lines = vary_key(
        url,
        &vary[..1],
        &request("Accept-Language: fr\r\naccept-language: en\r\n"),
    );
    assert_eq!(two_lines, "https://example.com/\naccept-language:fr, en");
}

#[test]
fn answers() {
    let kept = keep(
        &request(""),
        &response(
            200,
            "ETag: W/\"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/html\r\n\
             Date: Sun, 06 Nov 1994 08:50:00 GMT\r\nAge: 7\r\n",
        ),
        &STATUSES,
        false,
    )
    .expect("kept");
    let ask = |lines: &str| lookup("https", &request(lines)).expect("a lookup");
    let full = answer(&kept, 5, Duration::from_secs(100), &ask(""));
    assert_eq!(full.status, 200);
    assert!(full.body);
    assert_eq!(
        String::from_utf8_lossy(&full.head),
        "HTTP/1.1 200 OK\r\nETag: W/\"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Content-Type: text/html\r\nDate: Sun, 06 Nov 1994 08:50:00 GMT\r\n\
         Content-Length: 5\r\nAge: 107\r\nX-Holdfast-Stale: 1\r\n"
    );
    // (request lines, status answered)
    let rows = [
        ("If-None-Match: \"v1\"\r\n", 304),
        ("If-None-Match: \"v0\", W/\"v1\"\r\n", 304),
        ("If-None-Match: *\r\n", 304),
        ("If-None-Match: \"v2\"\r\n", 200),
        // If-None-Match decides when both are there.
        (
            "If-None-Match: \"v2\"\r\nIf-Modified-Since: Mon, 07 Nov 1994 00:00:00 GMT\r\n",
            200,
        ),
        ("If-Modified-Since: Mon, 07 Nov 1994 00:00:00 GMT\r\n", 304),
        ("If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n", 304),
        ("If-Modified-Since: Sat, 05 Nov 1994 00:00:00 GMT\r\n", 200),
        ("If-Modified-Since: not a date\r\n", 200),
    ];
    for (lines, want) in rows {
        let got = answer(&kept, 5, Duration::ZERO, &ask(lines));
        assert_eq!(got.status, want, "{lines:?}");
        assert_eq!(got.body, want == 200, "{lines:?}");
    }
    let not_modified = answer(&kept, 5, Duration::ZERO, &ask("If-None-Match: \"v1\"\r\n"));
    assert_eq!(
        String::from_utf8_lossy(&not_modified.head),
        "HTTP/1.1 304 Not Modified\r\nETag: W/\"v1\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Date: Sun, 06 Nov 1994 08:50:00 GMT\r\nAge: 7\r\nX-Holdfast-Stale: 1\r\n",
        "no Content-Type or Content-Length on a 304"
    );
    // A 404 copy ignores conditions; a HEAD gets the head alone.
    let missing = keep(
        &request(""),
        &response(404, "ETag: \"v1\"\r\n"),
        &STATUSES,
        false,
    )
    .expect("kept");
    assert_eq!(
        answer(
            &missing,
            5,
            Duration::ZERO,
            &ask("If-None-Match: \"v1\"\r\n")
        )
        .status,
        404
    );
    let head = lookup(
        "https",
        b"HEAD /page?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .expect("a lookup");
    let headed = answer(&kept, 5, Duration::ZERO, &head);
    assert_eq!((headed.status, headed.body), (200, false));
    assert!(String::from_utf8_lossy(&headed.head).contains("Content-Length: 5\r\n"));
}

#[test]
fn urls_and_chunked_bodies() {
    let rows = [
        ("Example.COM", "/a?b", "https://example.com/a?b"),
        ("example.com:8443", "/", "https://example.com/"),
        ("[::1]:443", "/", "https://[::1]/"),
        ("[::1]", "/", "https://[::1]/"),
        (" a.test ", "/x", "https://a.test/x"),
    ];
    for (host, target, want) in rows {
        assert_eq!(url("https", host.as_bytes(), target.as_bytes()), want);
    }
    assert_eq!(
        dechunk(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n").as_deref(),
        Some(&b"hello world"[..])
    );
    assert_eq!(dechunk(b"0\r\n\r\n").as_deref(), Some(&b""[..]));
    assert_eq!(dechunk(b"5\r\nhel"), None, "cut short");
    assert_eq!(dechunk(b"zz\r\n"), None, "bad size");
}
