//! `[[notify]]`: who is told of events (a webhook, a command), of which, and how insistently.

use super::common::{positive, Problems};
use crate::defaults as d;
use crate::file;
use crate::model::*;

pub(super) fn validate_notify(raw: Vec<file::Notify>, p: &mut Problems) -> Vec<Notify> {
    raw.into_iter()
        .enumerate()
        .map(|(i, n)| validate_one(n, &format!("notify[{i}]"), p))
        .collect()
}

fn validate_one(raw: file::Notify, at: &str, p: &mut Problems) -> Notify {
    let file::Notify {
        url,
        exec,
        events,
        timeout,
        retries,
        min_interval,
    } = raw;
    if url.is_none() && exec.is_none() {
        p.add(at, "needs a url (a webhook), an exec (a command), or both");
    }
    if let Some(url) = &url {
        let scheme = url.starts_with("https://") || url.starts_with("http://");
        if !scheme || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                format!("{at}.url"),
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
    }
    if exec.as_ref().is_some_and(Vec::is_empty) {
        p.add(format!("{at}.exec"), "names no program");
    }
    let exec = exec.unwrap_or_default();
    if let Some(program) = exec.first().filter(|p| !p.starts_with('/')) {
        p.add(
            format!("{at}.exec[0]"),
            format!("{program:?} is not an absolute path (no shell and no PATH search: name the program itself)"),
        );
    }
    let mut kinds = Vec::new();
    for (i, name) in events.iter().flatten().enumerate() {
        match EventKind::from_name(name) {
            Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Some(_) => p.add(
                format!("{at}.events[{i}]"),
                format!("{name:?} is listed twice"),
            ),
            None => {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                p.add(
                    format!("{at}.events[{i}]"),
                    format!("{name:?} is not an event ({})", names.join(", ")),
                )
            }
        }
    }
    if events.is_none() {
        kinds = EventKind::ALL.to_vec();
    } else if kinds.is_empty() {
        p.add(
            format!("{at}.events"),
            "names no event: leave it out for all",
        );
    }
    let timeout = positive(timeout, d::NOTIFY_TIMEOUT, &format!("{at}.timeout"), p);
    if timeout > d::NOTIFY_TIMEOUT_MAX {
        p.add(format!("{at}.timeout"), "must be at most 1m");
    }
    let retries = retries.unwrap_or(d::NOTIFY_RETRIES);
    if retries > d::NOTIFY_RETRIES_MAX {
        p.add(
            format!("{at}.retries"),
            format!("must be at most {}", d::NOTIFY_RETRIES_MAX),
        );
    }
    Notify {
        url,
        exec,
        events: kinds,
        timeout,
        retries: retries.min(d::NOTIFY_RETRIES_MAX),
        min_interval: min_interval.unwrap_or(d::NOTIFY_MIN_INTERVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, POOL};
    use crate::model::EventKind;
    use std::time::Duration;

    #[test]
    fn notify_rules() {
        let with = |notify: &str| format!("{POOL}[[notify]]\n{notify}\n");
        let cases = [
            // `[log]`, which has no section module of its own.
            (format!("[log]\nformat = \"json\"\n{POOL}"), "", ""),
            (
                format!("[log]\nformat = \"xml\"\n{POOL}"),
                "log.format",
                "is not \"text\" or \"json\"",
            ),
            (with(r#"url = "https://hooks.example/h""#), "", ""),
            (
                with(r#"exec = ["/usr/bin/logger", "-t", "holdfast"]"#),
                "",
                "",
            ),
            (
                with(r#"events = ["backend_down"]"#),
                "notify[0]",
                "needs a url",
            ),
            (
                with(r#"url = "ftp://x""#),
                "notify[0].url",
                "is not an http",
            ),
            (
                with(r#"url = "https://a b""#),
                "notify[0].url",
                "is not an http",
            ),
            (
                with(r#"exec = ["logger"]"#),
                "notify[0].exec[0]",
                "not an absolute path",
            ),
            (
                with("url = \"https://h/\"\nevents = [\"backend_down\", \"oops\"]"),
                "notify[0].events[1]",
                "\"oops\" is not an event",
            ),
            (
                with("url = \"https://h/\"\nevents = [\"backend_up\", \"backend_up\"]"),
                "notify[0].events[1]",
                "listed twice",
            ),
            (
                with("url = \"https://h/\"\nevents = []"),
                "notify[0].events",
                "names no event",
            ),
            (
                with("url = \"https://h/\"\ntimeout = \"0s\""),
                "notify[0].timeout",
                "longer than 0s",
            ),
            (
                with("url = \"https://h/\"\ntimeout = \"2m\""),
                "notify[0].timeout",
                "at most 1m",
            ),
            (
                with("url = \"https://h/\"\nretries = 11"),
                "notify[0].retries",
                "at most 10",
            ),
            (
                format!("{POOL}[[notify]]\nurl = \"https://h/\"\n[[notify]]\nurl = \"x\"\n"),
                "notify[1].url",
                "is not an http",
            ),
        ];
        rows(&cases, &Found::default());
    }

    #[test]
    fn a_target_as_the_model_has_it() {
        let text = format!(
            "{POOL}[[notify]]\nurl = \"http://127.0.0.1:9/h\"\nevents = [\"backend_down\", \"fallback\"]\nmin_interval = \"10s\"\n[[notify]]\nexec = [\"/bin/true\"]\n"
        );
        let notify = config(&text, &Found::default()).notify;
        assert_eq!(notify.len(), 2);
        assert_eq!(
            notify[0].events,
            vec![EventKind::BackendDown, EventKind::Fallback]
        );
        assert_eq!(notify[0].min_interval, Duration::from_secs(10));
        assert_eq!(
            (notify[0].timeout, notify[0].retries),
            (Duration::from_secs(5), 3)
        );
        assert_eq!(notify[1].events, EventKind::ALL.to_vec(), "all by default");
        assert_eq!(notify[1].exec, vec!["/bin/true".to_string()]);
    }
}
