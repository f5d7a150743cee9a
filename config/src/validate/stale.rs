//! `[pools.NAME.stale]`: serve-stale's store and what it keeps.

use super::common::{positive, Problems};
use crate::defaults as d;
use crate::file;
use crate::model::StalePolicy;

pub(super) fn validate_stale(raw: file::Stale, at: &str, p: &mut Problems) -> StalePolicy {
    let file::Stale {
        max_bytes,
        max_object_bytes,
        max_age,
        statuses,
        ignore_cookies,
    } = raw;
    let max_bytes = max_bytes.unwrap_or(d::STALE_MAX_BYTES);
    if !(d::STALE_MAX_BYTES_MIN..=d::STALE_MAX_BYTES_LIMIT).contains(&max_bytes) {
        p.add(
            format!("{at}.max_bytes"),
            format!(
                "{max_bytes} is not between {} (64 KiB) and {} (64 GiB)",
                d::STALE_MAX_BYTES_MIN,
                d::STALE_MAX_BYTES_LIMIT
            ),
        );
    }
    let max_bytes = max_bytes.clamp(d::STALE_MAX_BYTES_MIN, d::STALE_MAX_BYTES_LIMIT);
    let max_object_bytes = max_object_bytes.unwrap_or(d::STALE_MAX_OBJECT_BYTES.min(max_bytes));
    if max_object_bytes == 0 || max_object_bytes > max_bytes {
        p.add(
            format!("{at}.max_object_bytes"),
            format!("{max_object_bytes} is not between 1 and max_bytes ({max_bytes})"),
        );
    }
    let max_age = positive(max_age, d::STALE_MAX_AGE, &format!("{at}.max_age"), p);
    let statuses = statuses.unwrap_or_else(|| d::STALE_STATUSES.to_vec());
    for (i, status) in statuses.iter().enumerate() {
        if !d::STALE_STATUSES_ALLOWED.contains(status) {
            let allowed: Vec<String> = d::STALE_STATUSES_ALLOWED
                .iter()
                .map(u16::to_string)
                .collect();
            p.add(
                format!("{at}.statuses[{i}]"),
                format!(
                    "{status} may not be kept: a shared cache keeps an answer without explicit \
                     freshness only with one of {} (RFC 9111 4.2.2; 206 is not kept)",
                    allowed.join(", ")
                ),
            );
        }
    }
    if statuses.is_empty() {
        p.add(
            format!("{at}.statuses"),
            "lists no status: nothing would be kept",
        );
    }
    StalePolicy {
        max_bytes,
        max_object_bytes: max_object_bytes.clamp(1, max_bytes),
        max_age,
        statuses,
        ignore_cookies: ignore_cookies.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::{config, rows, POOL};
    use super::super::Found;
    use crate::defaults as d;
    use crate::model::StalePolicy;
    use std::time::Duration;

    #[test]
    fn stale_rows() {
        let found = Found::default();
        let at = |keys: &str| format!("[pools.app.stale]\n{keys}\n{POOL}");
        rows(
            &[
                (at(""), "", ""),
                (
                    at("max_bytes = 1_048_576\nmax_object_bytes = 65536"),
                    "",
                    "",
                ),
                (
                    at("max_bytes = 1024"),
                    "pools.app.stale.max_bytes",
                    "1024 is not between 65536 (64 KiB)",
                ),
                (
                    at("max_bytes = 1_048_576\nmax_object_bytes = 2_000_000"),
                    "pools.app.stale.max_object_bytes",
                    "2000000 is not between 1 and max_bytes (1048576)",
                ),
                (
                    at("max_object_bytes = 0"),
                    "pools.app.stale.max_object_bytes",
                    "0 is not between 1",
                ),
                (
                    at("max_age = \"0s\""),
                    "pools.app.stale.max_age",
                    "longer than 0s",
                ),
                (
                    at("statuses = [200, 302]"),
                    "pools.app.stale.statuses[1]",
                    "302 may not be kept",
                ),
                (
                    at("statuses = [206]"),
                    "pools.app.stale.statuses[0]",
                    "206 is not kept",
                ),
                (
                    at("statuses = []"),
                    "pools.app.stale.statuses",
                    "nothing would be kept",
                ),
                (
                    at("max_size = 10"),
                    "pools.app.stale.max_size",
                    "unknown field `max_size`",
                ),
            ],
            &found,
        );
        assert_eq!(config(POOL, &found).pools[0].stale, None, "off by default");
        assert_eq!(
            config(&at(""), &found).pools[0].stale,
            Some(StalePolicy {
                max_bytes: d::STALE_MAX_BYTES,
                max_object_bytes: d::STALE_MAX_OBJECT_BYTES,
                max_age: d::STALE_MAX_AGE,
                statuses: d::STALE_STATUSES.to_vec(),
                ignore_cookies: false,
            }),
            "an empty table: the defaults"
        );
        let small = config(&at("max_bytes = 131072\nmax_age = \"10m\""), &found).pools[0]
            .stale
            .clone();
        assert_eq!(
            small.map(|s| (s.max_object_bytes, s.max_age)),
            Some((
                d::STALE_MAX_OBJECT_BYTES.min(131_072),
                Duration::from_secs(600)
            ))
        );
    }
}
