//! `[trust]`: whose word about the visitor's address is taken, and the refresh of Cloudflare's ranges.

use super::common::{cidrs, Problems};
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::path::Path;
use std::time::Duration;

pub(super) fn validate_trust(raw: file::Trust, base_dir: &Path, p: &mut Problems) -> Trust {
    let file::Trust {
        cloudflare,
        trusted_proxies,
        visitor_ip_header,
        forwarded_for_header,
        real_ip_header,
        refresh_url,
        refresh_interval,
        refresh_file,
    } = raw;
    let cloudflare = cloudflare.unwrap_or(true);
    let refresh = match refresh_url {
        None => {
            if refresh_interval.is_some() || refresh_file.is_some() {
                p.add(
                    "trust.refresh_url",
                    "refresh_interval and refresh_file need a refresh_url",
                );
            }
            None
        }
        Some(url) => {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                p.add(
                    "trust.refresh_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
            if !cloudflare {
                p.add(
                    "trust.refresh_url",
                    "refreshes Cloudflare's ranges: needs cloudflare = true",
                );
            }
            let interval = refresh_interval.unwrap_or(d::RANGE_REFRESH_INTERVAL);
            if interval < Duration::from_secs(1) {
                p.add("trust.refresh_interval", "must be at least 1s");
            }
            Some(RangeRefresh {
                url,
                interval,
                file: refresh_file.map(|f| base_dir.join(f)),
            })
        }
    };
    let mut header = |key: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        if !is_token(&value) {
            p.add(
                format!("trust.{key}"),
                format!("{value:?} is not a header name"),
            );
        }
        value
    };
    let visitor_ip_header = header("visitor_ip_header", visitor_ip_header, d::VISITOR_IP_HEADER);
    let forwarded_for_header = header(
        "forwarded_for_header",
        forwarded_for_header,
        d::FORWARDED_FOR_HEADER,
    );
    let real_ip_header = header("real_ip_header", real_ip_header, d::REAL_IP_HEADER);
    let proxies = cidrs(
        "trust.trusted_proxies",
        &trusted_proxies.unwrap_or_default(),
        p,
    );
    Trust {
        cloudflare,
        refresh,
        proxies,
        visitor_ip_header,
        forwarded_for_header,
        real_ip_header,
    }
}

/// Whether `name` can be a header name (RFC 9110 5.1: a token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, DIR, POOL};

    #[test]
    fn trust_rules() {
        let with = |trust: &str| format!("[trust]\n{trust}\n{POOL}");
        let url = r#"refresh_url = "https://www.cloudflare.com/ips-v4""#;
        let cases = [
            (with(""), "", ""),
            (with(url), "", ""),
            (
                with(r#"refresh_interval = "1h""#),
                "trust.refresh_url",
                "need a refresh_url",
            ),
            (
                with(r#"refresh_url = "ftp://x""#),
                "trust.refresh_url",
                "is not an http",
            ),
            (
                with(&format!("{url}\ncloudflare = false")),
                "trust.refresh_url",
                "needs cloudflare = true",
            ),
            (
                with(&format!("{url}\nrefresh_interval = \"500ms\"")),
                "trust.refresh_interval",
                "at least 1s",
            ),
            (
                with(r#"visitor_ip_header = "Bad Header""#),
                "trust.visitor_ip_header",
                "is not a header name",
            ),
            (
                with(r#"real_ip_header = """#),
                "trust.real_ip_header",
                "is not a header name",
            ),
            (
                with(r#"trusted_proxies = ["10.0.0.0/33"]"#),
                "trust.trusted_proxies[0]",
                "is not a CIDR",
            ),
        ];
        rows(&cases, &Found::default());
    }

    #[test]
    fn ranges_lose_their_host_bits_and_files_are_relative() {
        let text = format!(
            "[trust]\ntrusted_proxies = [\"10.1.2.3/8\", \"192.0.2.7\"]\nrefresh_url = \"https://x/\"\nrefresh_file = \"ranges.txt\"\n{POOL}"
        );
        let trust = config(&text, &Found::default()).trust;
        let want: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        assert_eq!(trust.proxies, want);
        assert!(trust.cloudflare);
        let refresh = trust.refresh.expect("refresh");
        assert_eq!(
            refresh.file,
            Some(std::path::Path::new(DIR).join("ranges.txt"))
        );
    }
}
