//! `[fallback]`: what visitors get when no backend can answer.

use super::common::Problems;
use super::io::Found;
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Built-in fallback page, used unless `fallback.body_file` is set.
const BUILTIN_FALLBACK_PAGE: &str = include_str!("../fallback.html");

pub(super) fn validate_fallback(
    raw: file::Fallback,
    base_dir: &Path,
    found: &Found,
    p: &mut Problems,
) -> Fallback {
    let file::Fallback {
        status,
        retry_after,
        body_file,
        content_type,
    } = raw;
    let status = status.unwrap_or(d::FALLBACK_STATUS);
    match status {
        502 | 504 => p.add(
            "fallback.status",
            format!(
                "{status} would be replaced by Cloudflare's own error page; use 503, 500 or 429"
            ),
        ),
        500..=599 | 429 => {}
        _ => p.add(
            "fallback.status",
            format!("{status} is not an error status; use 503 (or another 5xx, or 429)"),
        ),
    }
    let retry_after = retry_after.unwrap_or(d::FALLBACK_RETRY_AFTER);
    if retry_after < Duration::from_secs(1) {
        p.add("fallback.retry_after", "must be at least 1s");
    }
    let body_path = body_file.as_ref().map(|name| base_dir.join(name));
    let (body, default_type): (Arc<[u8]>, &str) = match body_file {
        None => (
            Arc::from(BUILTIN_FALLBACK_PAGE.as_bytes()),
            "text/html; charset=utf-8",
        ),
        Some(name) => {
            let path = base_dir.join(&name);
            match found.bytes(&path) {
                Ok(bytes) if bytes.is_empty() => {
                    p.add("fallback.body_file", format!("{} is empty", path.display()));
                    (Arc::from(&b""[..]), "")
                }
                Ok(bytes) => (bytes, guess_content_type(&name)),
                Err(e) => {
                    p.add("fallback.body_file", format!("{}: {e}", path.display()));
                    (Arc::from(&b""[..]), "")
                }
            }
        }
    };
    // It goes into the answer's head as it is: a line break there would let the config write
    // headers (or a second answer) of its own.
    if let Some(value) = &content_type {
        if value.trim().is_empty() || value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            p.add(
                "fallback.content_type",
                format!("{value:?} is not a header value: it must not be empty nor hold control characters"),
            );
        }
    }
    Fallback {
        status,
        retry_after,
        content_type: content_type.unwrap_or_else(|| default_type.to_string()),
        body,
        body_file: body_path,
    }
}

fn guess_content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
    {
        Some(ext) if ext == "html" || ext == "htm" => "text/html; charset=utf-8",
        Some(ext) if ext == "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, DIR, POOL};

    fn found() -> Found {
        Found::default()
            .with_file(format!("{DIR}/empty.html"), Ok(b""))
            .with_file(format!("{DIR}/page.json"), Ok(b"{\"down\":true}"))
            .with_file(
                format!("{DIR}/big.html"),
                Err("is 99999999 bytes, more than the 1048576 allowed".into()),
            )
    }

    #[test]
    fn fallback_rules() {
        let with = |fallback: &str| format!("[fallback]\n{fallback}\n{POOL}");
        let cases = [
            (with(""), "", ""),
            (with("status = 429"), "", ""),
            (
                with("status = 502"),
                "fallback.status",
                "replaced by Cloudflare",
            ),
            (
                with("status = 504"),
                "fallback.status",
                "replaced by Cloudflare",
            ),
            (
                with("status = 200"),
                "fallback.status",
                "is not an error status",
            ),
            (
                with(r#"retry_after = "500ms""#),
                "fallback.retry_after",
                "at least 1s",
            ),
            (
                with(r#"body_file = "empty.html""#),
                "fallback.body_file",
                "is empty",
            ),
            (
                with(r#"body_file = "big.html""#),
                "fallback.body_file",
                "/etc/holdfast/big.html: is 99999999 bytes",
            ),
            (
                with(r#"content_type = "text/html\r\nX-Injected: 1""#),
                "fallback.content_type",
                "is not a header value",
            ),
            (
                with(r#"content_type = " ""#),
                "fallback.content_type",
                "must not be empty",
            ),
        ];
        rows(&cases, &found());
    }

    #[test]
    fn a_body_file_and_its_type() {
        let built_in = config(POOL, &found()).fallback;
        assert_eq!(built_in.status, 503);
        assert_eq!(built_in.content_type, "text/html; charset=utf-8");
        assert!(built_in.body_file.is_none() && !built_in.body.is_empty());
        let text = format!("[fallback]\nbody_file = \"page.json\"\n{POOL}");
        let from_file = config(&text, &found()).fallback;
        assert_eq!(&*from_file.body, b"{\"down\":true}");
        assert_eq!(from_file.content_type, "application/json");
        assert_eq!(guess_type("page.HTM"), "text/html; charset=utf-8");
        assert_eq!(guess_type("notice.txt"), "text/plain; charset=utf-8");
    }

    fn guess_type(name: &str) -> &'static str {
        super::guess_content_type(name)
    }
}
