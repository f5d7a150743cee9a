//! `[pools.NAME.health]`: the active checks, passive detection, hold-downs and slow start.

use super::common::{non_zero, not_shorter, percent, positive, Problems};
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::time::Duration;

pub(super) fn validate_health(raw: file::Health, at: &str, p: &mut Problems) -> HealthPolicy {
    let file::Health {
        tcp,
        http,
        passive_fall,
        status_fall,
        hold_down,
        hold_down_max,
        flap_window,
        failure_rate,
        max_ejection_percent,
        slow_start,
    } = raw;
    let mut checks = Vec::new();
    let tcp_enabled = tcp.as_ref().and_then(|t| t.enabled).unwrap_or(true);
    if tcp_enabled {
        let timing = tcp.as_ref().map(file::TcpCheck::timing);
        checks.push(check(CheckKind::Tcp, timing, &format!("{at}.tcp"), p));
    }
    if let Some(h) = http {
        let h_at = format!("{at}.http");
        let timing = h.timing();
        let file::HttpCheck {
            method,
            path,
            host,
            status,
            body,
            ..
        } = h;
        let method = method.unwrap_or_else(|| d::HTTP_CHECK_METHOD.to_string());
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            p.add(
                format!("{h_at}.method"),
                format!("{method:?} is not an HTTP method"),
            );
        }
        let path = path.unwrap_or_else(|| d::HTTP_CHECK_PATH.to_string());
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                format!("{h_at}.path"),
                format!("{path:?} must start with '/' and hold no spaces or control characters"),
            );
        }
        if let Some(host) = &host {
            if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
                p.add(
                    format!("{h_at}.host"),
                    format!("{host:?} is not a host name"),
                );
            }
        }
        let status = status.unwrap_or_default();
        for (i, s) in status.iter().enumerate() {
            if !(100..=599).contains(s) {
                p.add(
                    format!("{h_at}.status[{i}]"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        if body.as_deref() == Some("") {
            p.add(
                format!("{h_at}.body"),
                "must not be empty (leave it out to not check the body)",
            );
        }
        let kind = CheckKind::Http(HttpCheck {
            method,
            path,
            host,
            status,
            body,
        });
        checks.push(check(kind, Some(timing), &h_at, p));
    }
    if checks.is_empty() {
        p.add(
            at,
            "the TCP check is off and no HTTP check is set: a backend taken out could never come back",
        );
    }
    HealthPolicy {
        checks,
        passive_fall: non_zero(
            passive_fall,
            d::PASSIVE_FALL,
            &format!("{at}.passive_fall"),
            p,
        ),
        status_fall: non_zero(status_fall, d::STATUS_FALL, &format!("{at}.status_fall"), p),
        hold_down: validate_hold_down(hold_down, hold_down_max, flap_window, at, p),
        failure_rate: validate_failure_rate(failure_rate.unwrap_or_default(), at, p),
        max_ejection_percent: percent(
            max_ejection_percent,
            d::MAX_EJECTION_PERCENT,
            &format!("{at}.max_ejection_percent"),
            p,
        ),
        slow_start: slow_start.unwrap_or(Duration::ZERO),
    }
}

fn validate_failure_rate(raw: file::FailureRate, at: &str, p: &mut Problems) -> FailureRatePolicy {
    let at = format!("{at}.failure_rate");
    let percent = raw.percent.unwrap_or(d::FAILURE_RATE_PERCENT);
    if percent > 100 {
        p.add(
            format!("{at}.percent"),
            format!("{percent} is not a share in percent (0 turns the threshold off, at most 100)"),
        );
    }
    FailureRatePolicy {
        percent: percent.min(100),
        min_requests: non_zero(
            raw.min_requests,
            d::FAILURE_RATE_MIN_REQUESTS,
            &format!("{at}.min_requests"),
            p,
        )
        .get(),
        window: positive(
            raw.window,
            d::FAILURE_RATE_WINDOW,
            &format!("{at}.window"),
            p,
        ),
    }
}

fn validate_hold_down(
    base: Option<Duration>,
    max: Option<Duration>,
    window: Option<Duration>,
    at: &str,
    p: &mut Problems,
) -> HoldDown {
    let base = base.unwrap_or(d::HOLD_DOWN);
    let max = max.unwrap_or(d::HOLD_DOWN_MAX.max(base));
    not_shorter(
        (max, &format!("{at}.hold_down_max")),
        (base, "hold_down"),
        p,
    );
    let window = positive(window, d::FLAP_WINDOW, &format!("{at}.flap_window"), p);
    HoldDown { base, max, window }
}

fn check(kind: CheckKind, timing: Option<file::Timing>, at: &str, p: &mut Problems) -> Check {
    let file::Timing {
        interval,
        timeout,
        rise,
        fall,
        jitter,
    } = timing.unwrap_or(file::Timing {
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
        jitter: None,
    });
    let interval = positive(interval, d::CHECK_INTERVAL, &format!("{at}.interval"), p);
    let timeout = positive(timeout, d::CHECK_TIMEOUT, &format!("{at}.timeout"), p);
    if timeout > interval {
        p.add(
            format!("{at}.timeout"),
            "must not be longer than the interval",
        );
    }
    let jitter = jitter.unwrap_or_else(|| interval.mul_f64(d::JITTER_FRACTION));
    if jitter > interval {
        p.add(
            format!("{at}.jitter"),
            "must not be longer than the interval",
        );
    }
    Check {
        kind,
        interval,
        timeout,
        jitter,
        rise: non_zero(rise, d::RISE, &format!("{at}.rise"), p),
        fall: non_zero(fall, d::FALL, &format!("{at}.fall"), p),
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, POOL};
    use crate::model::CheckKind;
    use std::time::Duration;

    #[test]
    fn health_rules() {
        let with = |health: &str| format!("{health}\n{POOL}");
        let h = "pools.app.health";
        let cases = [
            (with(""), "", ""),
            (
                with("[pools.app.health.tcp]\nenabled = false"),
                h,
                "the TCP check is off and no HTTP check is set",
            ),
            (
                with("[pools.app.health.tcp]\nenabled = false\n[pools.app.health.http]"),
                "",
                "",
            ),
            (
                with("[pools.app.health.tcp]\ninterval = \"1s\"\ntimeout = \"3s\""),
                "pools.app.health.tcp.timeout",
                "must not be longer than the interval",
            ),
            (
                with("[pools.app.health.tcp]\ninterval = \"1s\"\njitter = \"2s\""),
                "pools.app.health.tcp.jitter",
                "must not be longer than the interval",
            ),
            (
                with("[pools.app.health.tcp]\nrise = 0"),
                "pools.app.health.tcp.rise",
                "at least 1",
            ),
            (
                with("[pools.app.health.tcp]\ninterval = \"0s\""),
                "pools.app.health.tcp.interval",
                "longer than 0s",
            ),
            (
                with("[pools.app.health.http]\nmethod = \"get\""),
                "pools.app.health.http.method",
                "is not an HTTP method",
            ),
            (
                with("[pools.app.health.http]\npath = \"health\""),
                "pools.app.health.http.path",
                "must start with '/'",
            ),
            (
                with("[pools.app.health.http]\npath = \"/a b\""),
                "pools.app.health.http.path",
                "no spaces",
            ),
            (
                with("[pools.app.health.http]\nhost = \"\""),
                "pools.app.health.http.host",
                "is not a host name",
            ),
            (
                with("[pools.app.health.http]\nstatus = [200, 99]"),
                "pools.app.health.http.status[1]",
                "99 is not an HTTP status",
            ),
            (
                with("[pools.app.health.http]\nbody = \"\""),
                "pools.app.health.http.body",
                "must not be empty",
            ),
            (
                with("[pools.app.health]\nhold_down = \"1m\"\nhold_down_max = \"30s\""),
                "pools.app.health.hold_down_max",
                "shorter than hold_down",
            ),
            (
                with("[pools.app.health.failure_rate]\npercent = 101"),
                "pools.app.health.failure_rate.percent",
                "is not a share in percent",
            ),
            (
                with("[pools.app.health.failure_rate]\nmin_requests = 0"),
                "pools.app.health.failure_rate.min_requests",
                "at least 1",
            ),
            (
                with("[pools.app.health]\nmax_ejection_percent = 150"),
                "pools.app.health.max_ejection_percent",
                "is not a share in percent",
            ),
            (
                with("[pools.app.health]\npassive_fall = 0"),
                "pools.app.health.passive_fall",
                "at least 1",
            ),
            (
                with("[pools.app.health]\nflap_window = \"0s\""),
                "pools.app.health.flap_window",
                "longer than 0s",
            ),
        ];
        rows(&cases, &Found::default());
    }

    #[test]
    fn checks_as_the_model_has_them() {
        let text = format!(
            "[pools.app.health]\nhold_down = \"2m\"\nslow_start = \"10s\"\n[pools.app.health.http]\npath = \"/healthz\"\ninterval = \"4s\"\n{POOL}"
        );
        let health = config(&text, &Found::default()).pools[0].health.clone();
        assert_eq!(
            health.checks.len(),
            2,
            "the TCP check stays on beside the HTTP one"
        );
        assert!(matches!(health.checks[0].kind, CheckKind::Tcp));
        let http = &health.checks[1];
        let CheckKind::Http(check) = &http.kind else {
            panic!("not an HTTP check");
        };
        assert_eq!(
            (check.method.as_str(), check.path.as_str()),
            ("GET", "/healthz")
        );
        assert_eq!(http.interval, Duration::from_secs(4));
        assert!(http.jitter <= http.interval && http.timeout <= http.interval);
        assert_eq!(health.slow_start, Duration::from_secs(10));
        assert_eq!(health.hold_down.base, Duration::from_secs(120));
        assert!(
            health.hold_down.max >= health.hold_down.base,
            "the longest hold-down follows a longer base"
        );
    }
}
