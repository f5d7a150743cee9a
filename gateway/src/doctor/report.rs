//! What `holdfast doctor` found: one [`Finding`] per check, each with its verdict, the error
//! Cloudflare would show because of it, what was seen and the fix; printed grouped by layer, or
//! as one JSON document. A plain type: no I/O, table-tested.

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// Not a 52x now, but close to one, or something to fix soon.
    Warn,
    /// Cloudflare would show an error (or visitors the fallback) because of it.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// Where a check looks, in the order a 521 is usually tracked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    Process,
    Listeners,
    Firewall,
    Backends,
    Tls,
    Resources,
    Request,
}

impl Layer {
    pub const ALL: [Layer; 7] = [
        Layer::Process,
        Layer::Listeners,
        Layer::Firewall,
        Layer::Backends,
        Layer::Tls,
        Layer::Resources,
        Layer::Request,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Process => "process",
            Layer::Listeners => "listeners",
            Layer::Firewall => "firewall",
            Layer::Backends => "backends",
            Layer::Tls => "tls",
            Layer::Resources => "resources",
            Layer::Request => "request",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub layer: Layer,
    /// What was checked, e.g. `listener 0.0.0.0:443 (https)`.
    pub check: String,
    pub verdict: Verdict,
    /// The error Cloudflare would show because of it (520 to 526), if any.
    pub code: Option<u16>,
    /// What was seen.
    pub found: String,
    /// The fix, in one sentence, when something is to be done.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(layer: Layer, check: impl Into<String>, found: impl Into<String>) -> Finding {
        Finding {
            layer,
            check: check.into(),
            verdict: Verdict::Ok,
            code: None,
            found: found.into(),
            fix: None,
        }
    }

    pub fn warn(
        layer: Layer,
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            verdict: Verdict::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(layer, check, found)
        }
    }

    pub fn fail(
        layer: Layer,
        check: impl Into<String>,
        code: Option<u16>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            verdict: Verdict::Fail,
            code,
            fix: Some(fix.into()),
            ..Finding::ok(layer, check, found)
        }
    }

    /// With the error Cloudflare would show (a warning may name one too).
    pub fn code(mut self, code: u16) -> Finding {
        self.code = Some(code);
        self
    }
}

/// Everything doctor found, and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub config: String,
    pub findings: Vec<Finding>,
    pub took: Duration,
}

impl Report {
    /// 0: nothing would cause a 52x; 1: something would.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.findings.iter().any(|f| f.verdict == Verdict::Fail))
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.findings
            .iter()
            .filter(|f| f.verdict == verdict)
            .count()
    }

    /// One line per check, grouped by layer; the fix under each that has one; a summary last.
    pub fn text(&self) -> String {
        let mut out = format!("holdfast doctor: {}\n", self.config);
        for layer in Layer::ALL {
            let mut of_layer = self.findings.iter().filter(|f| f.layer == layer).peekable();
            if of_layer.peek().is_none() {
                continue;
            }
            let _ = writeln!(out, "\n{}", layer.as_str());
            for f in of_layer {
                let verdict = match f.verdict {
                    Verdict::Ok => "ok  ",
                    Verdict::Warn => "WARN",
                    Verdict::Fail => "FAIL",
                };
                let code = f.code.map_or("   ".to_string(), |c| c.to_string());
                let _ = writeln!(out, "  {verdict} {code}  {}: {}", f.check, f.found);
                if let Some(fix) = &f.fix {
                    let _ = writeln!(out, "            fix: {fix}");
                }
            }
        }
        let (fails, warns) = (self.count(Verdict::Fail), self.count(Verdict::Warn));
        let mut codes: Vec<u16> = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .filter_map(|f| f.code)
            .collect();
        codes.sort_unstable();
        codes.dedup();
        let _ = write!(
            out,
            "\n{} checks in {:.1} s: {fails} failed, {warns} warned",
            self.findings.len(),
            self.took.as_secs_f64()
        );
        match (fails, codes.is_empty()) {
            (0, _) => out.push_str(": nothing here would make Cloudflare show a 52x\n"),
            (_, true) => out.push('\n'),
            (_, false) => {
                let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
                let _ = writeln!(out, ": Cloudflare would show {}", codes.join(", "));
            }
        }
        out
    }

    /// The stable document of `--json`: `{"config", "ok", "took_s", "counts", "findings": [{
    /// "layer", "check", "verdict", "code", "found", "fix"}]}`.
    pub fn json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "layer": f.layer.as_str(),
                    "check": f.check,
                    "verdict": f.verdict.as_str(),
                    "code": f.code,
                    "found": f.found,
                    "fix": f.fix,
                })
            })
            .collect();
        json!({
            "config": self.config,
            "ok": self.exit_code() == 0,
            "took_s": self.took.as_secs_f64(),
            "counts": {
                "ok": self.count(Verdict::Ok),
                "warn": self.count(Verdict::Warn),
                "fail": self.count(Verdict::Fail),
            },
            "findings": findings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(findings: Vec<Finding>) -> Report {
        Report {
            config: "/etc/holdfast/holdfast.toml".into(),
            findings,
            took: Duration::from_millis(420),
        }
    }

    #[test]
    fn verdicts_make_the_exit_code_and_the_summary() {
        let ok = Finding::ok(Layer::Process, "running", "pid 7");
        let warn = Finding::warn(Layer::Resources, "somaxconn", "128", "raise it");
        let fail = Finding::fail(
            Layer::Listeners,
            "listener 127.0.0.1:443 (https)",
            Some(521),
            "on loopback only",
            "listen on 0.0.0.0:443",
        );
        // (findings, exit code, the summary's end)
        let rows: [(Vec<Finding>, u8, &str); 3] = [
            (
                vec![ok.clone()],
                0,
                "nothing here would make Cloudflare show a 52x\n",
            ),
            (vec![ok.clone(), warn.clone()], 0, "1 warned: nothing here"),
            (
                vec![ok.clone(), warn, fail.clone(), fail],
                1,
                "2 failed, 1 warned: Cloudflare would show 521\n",
            ),
        ];
        for (findings, code, end) in rows {
            let r = report(findings);
            assert_eq!(r.exit_code(), code);
            assert!(r.text().contains(end), "{}", r.text());
            assert_eq!(r.json()["ok"], code == 0);
        }
    }

    #[test]
    fn text_groups_by_layer_in_order_with_the_fix_under() {
        let r = report(vec![
            Finding::warn(Layer::Resources, "somaxconn", "128", "sysctl it"),
            Finding::fail(
                Layer::Backends,
                "app/web-1",
                Some(521),
                "refused",
                "start it",
            ),
            Finding::ok(Layer::Process, "running", "pid 7"),
        ]);
        let text = r.text();
        let at = |s: &str| {
            text.find(s)
                .unwrap_or_else(|| panic!("{s:?} not in {text}"))
        };
        assert!(at("\nprocess\n") < at("\nbackends\n") && at("\nbackends\n") < at("\nresources\n"));
        assert!(text.contains("  FAIL 521  app/web-1: refused\n            fix: start it\n"));
        assert!(text.contains("  ok        running: pid 7\n"));
        assert!(text.contains("  WARN      somaxconn: 128\n"));
    }

    #[test]
    fn json_has_its_keys() {
        let r = report(vec![Finding::fail(
            Layer::Tls,
            "cert.pem",
            Some(526),
            "expired",
            "renew it",
        )]);
        let doc = r.json();
        assert_eq!(doc["counts"], json!({"ok": 0, "warn": 0, "fail": 1}));
        assert_eq!(
            doc["findings"][0],
            json!({"layer": "tls", "check": "cert.pem", "verdict": "fail", "code": 526,
                   "found": "expired", "fix": "renew it"})
        );
        assert_eq!(doc["took_s"], 0.42);
    }
}
