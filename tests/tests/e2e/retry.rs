//! Answers of a backend that cannot serve right now (502, 503, 504 by default): an idempotent
//! request goes on to the next backend and the visitor sees only the good answer; a request
//! that may not be repeated gets the answer as it is; when every backend answers so, the last
//! answer is passed on.

use holdfast_tests::raw::{Answer, RawBackend};
use holdfast_tests::{backend, client, Gateway};

/// Two tiers of one backend each, a TCP check that stays out of the way, `status_fall` and
/// the failure-rate threshold in percent (0: off).
fn two_tiers(
    first: (&str, std::net::SocketAddr),
    second: (&str, std::net::SocketAddr),
    status_fall: u32,
    failure_rate: u32,
) -> String {
    format!(
        r#"
[pools.app.health]
status_fall = {status_fall}
[pools.app.health.failure_rate]
percent = {failure_rate}
[pools.app.health.tcp]
interval = "60s"
[[pools.app.tiers]]
backends = [{{ address = "{}", name = "{}" }}]
[[pools.app.tiers]]
backends = [{{ address = "{}", name = "{}" }}]
"#,
        first.1, first.0, second.1, second.0
    )
}

fn unavailable(body: &'static str) -> impl Fn(&[u8]) -> Answer + Send + Sync + 'static {
    move |_| {
        Answer::keep(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_the_primary_never_reaches_a_visitor_of_an_idempotent_request() {
    let primary = RawBackend::start(unavailable("primary busy")).await;
    let backup = backend("backup").await;
    // status_fall out of the way: this test is about holding answers back, not ejecting.
    let gw = Gateway::start(&two_tiers(
        ("primary", primary.addr),
        ("backup", backup.addr()),
        1000,
        0,
    ))
    .await;
    let c = client();
    for i in 0..50 {
        let r = c.get(gw.url(&format!("/page/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-backend"], "backup");
    }
    assert_eq!(
        primary.requests().len(),
        50,
        "each went to the primary first"
    );
    assert_eq!(backup.served(), 50);
    assert_eq!(
        gw.metric(r#"holdfast_upstream_retryable_answers_total{backend="primary",pool="app"}"#)
            .await,
        50.0
    );

    // A POST may not be repeated: its visitor gets the primary's answer, the backup never sees it.
    let r = c.post(gw.url("/order")).body("one").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "primary busy");
    assert_eq!(backup.served(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_backend_answers_503_the_last_answer_is_passed_on() {
    let first = RawBackend::start(unavailable("first")).await;
    let second = RawBackend::start(unavailable("second")).await;
    let gw = Gateway::start(&two_tiers(
        ("first", first.addr),
        ("second", second.addr),
        1000,
        0,
    ))
    .await;
    let c = client();
    for _ in 0..5 {
        let r = c.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.text().await.unwrap(),
            "second",
            "the last backend's own answer"
        );
    }
    assert_eq!(first.requests().len(), 5);
    assert_eq!(second.requests().len(), 5);
}

/// A backend answering 503 to everything is taken out by real traffic after `status_fall`
/// answers in a row, so later requests go straight to the backup instead of asking it first;
/// whatever `passive_fall` is (each retry connects afresh, and a connect is no answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_in_a_row_is_taken_out_by_traffic() {
    for passive_fall in [1, 3] {
        let primary = RawBackend::start(unavailable("primary busy")).await;
        let backup = backend("backup").await;
        let pools = two_tiers(("primary", primary.addr), ("backup", backup.addr()), 3, 0).replace(
            "[pools.app.health]\n",
            &format!("[pools.app.health]\npassive_fall = {passive_fall}\n"),
        );
        let gw = Gateway::start(&pools).await;
        let c = client();
        for i in 0..20 {
            let r = c.get(gw.url(&format!("/{i}"))).send().await.unwrap();
            assert_eq!(r.status(), 200, "passive_fall {passive_fall}, request {i}");
        }
        assert_eq!(
            primary.requests().len(),
            3,
            "passive_fall {passive_fall}: the primary was asked until its third 503, then no more"
        );
        assert_eq!(backup.served(), 20);
        let down = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="bad_status",tier="primary",to="down"}"#;
        assert_eq!(gw.metric(down).await, 1.0);
        assert_eq!(gw.metric(r#"holdfast_active_tier{pool="app"}"#).await, 1.0);
    }
}

/// A backend failing one request in three never answers `status_fall` (5) 503s in a row, but
/// its failure rate (33 %) is above the pool's threshold (25 % of at least 20 requests, counted
/// from its first failure): it is taken out after about 24 requests, and no visitor saw one of
/// its 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failing_one_request_in_three_is_taken_out_by_its_failure_rate() {
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let primary = RawBackend::start(move |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n % 3 == 0 {
            Answer::keep(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        } else {
            Answer::keep(b"HTTP/1.1 200 OK\r\nX-Backend: primary\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&two_tiers(
        ("primary", primary.addr),
        ("backup", backup.addr()),
        5,
        25,
    ))
    .await;
    let c = client();
    for i in 0..60 {
        let r = c.get(gw.url(&format!("/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    let down = r#"holdfast_backend_transitions_total{backend="primary",pool="app",reason="failure_rate",tier="primary",to="down"}"#;
    assert_eq!(gw.metric(down).await, 1.0, "taken out by its failure rate");
    let asked = primary.requests().len();
    assert!(
        (20..=26).contains(&asked),
        "the primary was asked until its failures reached a quarter of 20 requests counted from its first failure: {asked}"
    );
    assert_eq!(backup.served(), (60 - asked + asked / 3) as u64);
}

fn ok_from(name: &'static str) -> impl Fn(&[u8]) -> Answer + Send + Sync + 'static {
    move |_| {
        Answer::keep(
            format!("HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok")
                .as_bytes(),
        )
    }
}

/// PUT and DELETE are sent again only when the pool lists them in `retry_methods`: then a PUT
/// whose body is small enough is read whole first, and after the primary's 503 the backup gets
/// the same request, body and all; by default the visitor gets the 503 and nothing is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_are_sent_again_only_when_configured() {
    let primary = RawBackend::start(unavailable("primary busy")).await;
    let backup = RawBackend::start(ok_from("backup")).await;
    let pools = |methods: &str| {
        format!(
            "[pools.app]\nretry_methods = {methods}\nretry_body_max_bytes = 1024\n{}",
            two_tiers(("primary", primary.addr), ("backup", backup.addr), 1000, 0)
        )
    };
    let c = client();

    // Default: GET, HEAD, OPTIONS, TRACE only.
    let gw = Gateway::start(&pools(r#"["GET", "HEAD", "OPTIONS", "TRACE"]"#)).await;
    let r = c.put(gw.url("/doc")).body("v1").send().await.unwrap();
    assert_eq!(r.status(), 503, "the primary's own answer");
    let r = c.delete(gw.url("/doc")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(backup.requests().is_empty(), "nothing was repeated");
    drop(gw);

    let gw = Gateway::start(&pools(r#"["GET", "PUT", "DELETE"]"#)).await;
    let body = "x".repeat(1000);
    let r = c
        .put(gw.url("/doc"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "backup");
    let r = c.delete(gw.url("/doc")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = backup.requests();
    assert_eq!(seen.len(), 2);
    let put = String::from_utf8_lossy(&seen[0]);
    assert!(put.starts_with("PUT /doc HTTP/1.1\r\n"), "{put}");
    assert!(
        put.ends_with(&format!("\r\n\r\n{body}")),
        "the body went again: {put}"
    );
    assert!(String::from_utf8_lossy(&seen[1]).starts_with("DELETE /doc "));

    // A body over retry_body_max_bytes streams to the first backend only: its 503 is passed on.
    let r = c
        .put(gw.url("/big"))
        .body("y".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(backup.requests().len(), 2);
}

/// What a visitor's requests can partly bring about (503s from an endpoint that answers so to
/// bad input) costs a pool at most `max_ejection_percent` of its backends (50 % by default):
/// with two primaries answering 503 to everything and a backup, `status_fall` takes one primary
/// out, the other stays in (two of three would be out), and every visitor still gets the
/// backup's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_detection_never_empties_a_pool_past_its_ejection_cap() {
    let first = RawBackend::start(unavailable("first")).await;
    let second = RawBackend::start(unavailable("second")).await;
    let backup = backend("backup").await;
    let gw = Gateway::start(&format!(
        r#"
[pools.app.health]
status_fall = 2
[pools.app.health.tcp]
interval = "60s"
[[pools.app.tiers]]
backends = [{{ address = "{}", name = "first" }}, {{ address = "{}", name = "second" }}]
[[pools.app.tiers]]
backends = [{{ address = "{}", name = "backup" }}]
"#,
        first.addr,
        second.addr,
        backup.addr()
    ))
    .await;
    let c = client();
    for i in 0..30 {
        let r = c.get(gw.url(&format!("/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(backup.served(), 30);
    let down = |name: &str| {
        format!(
            r#"holdfast_backend_transitions_total{{backend="{name}",pool="app",reason="bad_status",tier="primary",to="down"}}"#
        )
    };
    let ejected = gw.metric(&down("first")).await + gw.metric(&down("second")).await;
    assert_eq!(
        ejected, 1.0,
        "one primary out, the other kept in by the cap"
    );
    assert!(
        gw.log()
            .contains("kept in: the pool would be left with too few backends"),
        "the log says why the second stays in"
    );
}
