//! The certificates of the HTTPS listeners: on disk (readable, the key matching, not expired,
//! the chain in order, the names the config routes covered), readable by the running holdfast,
//! and as served (the same as on disk, or renewed but not loaded); the CA of Authenticated
//! Origin Pulls. Judged by plain functions with their table tests ([`judge`], [`order`],
//! [`may_read`], [`judge_readable`], [`judge_pulls`]); [`served`], [`Reader::of`] and
//! [`Mode::of`] do the I/O.

use super::report::{Finding, Layer};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::{X509Ref, X509VerifyResult};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Under this many days left, a certificate is warned about.
pub const WARN_DAYS: i64 = 14;

/// What doctor found of one certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDisk {
    pub file: String,
    /// Its names and expiry (Unix seconds), or why it cannot be used.
    pub loaded: Result<(Vec<String>, i64), String>,
    /// Whether a listener serves this very certificate: `None` when not asked or no answer.
    pub served_same: Option<bool>,
}

/// What one certificate means: `now` in Unix seconds; `uncovered` the routed host names no
/// certificate of the config holds (reported once, with the default certificate).
pub fn judge(c: &OnDisk, now: i64, uncovered: &[String]) -> Vec<Finding> {
    let check = format!("certificate {}", c.file);
    let (names, not_after) = match &c.loaded {
        Err(why) if why.contains("expired") => {
            return vec![Finding::fail(
                Layer::Tls,
                check,
                Some(526),
                why.clone(),
                "renew it (certbot renew, or a new Cloudflare Origin CA certificate) and reload",
            )]
        }
        Err(why) => {
            return vec![Finding::fail(
                Layer::Tls,
                check,
                Some(525),
                format!("{why}: HTTPS cannot start with it (the next restart fails)"),
                "fix the file's path, permissions or key (the key must be this certificate's), then reload",
            )]
        }
        Ok(loaded) => loaded,
    };
    let days = (not_after - now) / 86_400;
    let mut out = vec![match days < WARN_DAYS {
        true => Finding::warn(
            Layer::Tls,
            check.clone(),
            format!("{}: expires in {days} days", names.join(", ")),
            "renew it now: once expired, Full (strict) shows 526",
        )
        .code(526),
        false => Finding::ok(
            Layer::Tls,
            check.clone(),
            format!("{}: {days} days left", names.join(", ")),
        ),
    }];
    match c.served_same {
        Some(false) => out.push(Finding::warn(
            Layer::Tls,
            format!("{check} served"),
            "the listener serves another certificate than the file holds (renewed but not loaded?)",
            "holdfast reload (holdfast picks up changed files by itself: if it did not, its log says why)",
        )),
        Some(true) => out.push(Finding::ok(
            Layer::Tls,
            format!("{check} served"),
            "the listener serves this very certificate",
        )),
        None => {}
    }
    if !uncovered.is_empty() {
        out.push(Finding::warn(
            Layer::Tls,
            "names",
            format!("no certificate holds {}", uncovered.join(", ")),
            "add a certificate for them (listen.certificates): under Full (strict), Cloudflare shows 526 for those sites",
        ).code(526));
    }
    out
}

/// Whether a chain is in the order TLS sends it: the leaf first, then each certificate's
/// issuer. `None` when it is; otherwise what is out of place.
pub fn order(chain: &[impl AsRef<X509Ref>]) -> Option<String> {
    let subject = |c: &X509Ref| {
        c.subject_name()
            .entries()
            .last()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_else(|| "?".into())
    };
    chain.windows(2).enumerate().find_map(|(i, pair)| {
        let (cert, next) = (pair[0].as_ref(), pair[1].as_ref());
        (next.issued(cert) != X509VerifyResult::OK).then(|| {
            format!(
                "certificate {} ({}) is followed by {} ({}), which did not issue it",
                i + 1,
                subject(cert),
                i + 2,
                subject(next)
            )
        })
    })
}

/// The chain's order, as a finding when it is wrong.
pub fn judge_order(file: &str, out_of_order: Option<&str>) -> Option<Finding> {
    out_of_order.map(|why| {
        Finding::warn(
            Layer::Tls,
            format!("certificate {file} chain"),
            format!("{why}: clients that do not reorder it fail to verify it"),
            "put the leaf first, then its intermediate(s), each followed by its issuer (certbot's fullchain.pem is in order)",
        )
        .code(526)
    })
}

/// Who reads the files: the running holdfast's user, groups, and whether it may read any file
/// (CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub pid: u32,
    pub uid: u32,
    pub gids: Vec<u32>,
    pub any_file: bool,
}

impl Reader {
    /// The process `pid`'s, from `/proc/PID/status` (the file-system uid and gid, the
    /// supplementary groups, the effective capabilities).
    pub fn of(pid: u32) -> Option<Reader> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Reader::parse(pid, &status)
    }

    pub fn parse(pid: u32, status: &str) -> Option<Reader> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::split_whitespace)
        };
        // Real, effective, saved, file-system: access is checked with the last.
        let uid = field("Uid:")?.nth(3)?.parse().ok()?;
        let gid: u32 = field("Gid:")?.nth(3)?.parse().ok()?;
        let mut gids: Vec<u32> = field("Groups:")
            .map(|g| g.filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default();
        gids.push(gid);
        let caps = u64::from_str_radix(field("CapEff:")?.next()?, 16).ok()?;
        // CAP_DAC_OVERRIDE is bit 1, CAP_DAC_READ_SEARCH bit 2.
        let any_file = caps & 0b110 != 0;
        Some(Reader {
            pid,
            uid,
            gids,
            any_file,
        })
    }
}

/// A file's or directory's owner and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Mode {
    /// The file's, and every directory's on its way from `/`.
    pub fn of(file: &Path) -> Option<(Mode, Vec<Mode>)> {
        use std::os::unix::fs::MetadataExt;
        let mode = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| Mode {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
            })
        };
        let file = std::fs::canonicalize(file).ok()?;
        let dirs = file.ancestors().skip(1).filter_map(mode).collect();
        Some((mode(&file)?, dirs))
    }
}

/// Whether `reader` may read a file of `file`'s mode, searching each of `dirs` to get to it.
pub fn may_read(reader: &Reader, file: &Mode, dirs: &[Mode]) -> bool {
    if reader.any_file {
        return true;
    }
    let allowed = |m: &Mode, bit: u32| {
        let shift = if m.uid == reader.uid {
            6
        } else if reader.gids.contains(&m.gid) {
            3
        } else {
            0
        };
        m.mode & (bit << shift) != 0
    };
    dirs.iter().all(|d| allowed(d, 0o1)) && allowed(file, 0o4)
}

/// A file of the TLS set-up the running holdfast could not read: the next reload (a renewed
/// certificate) and the next start fail on it.
pub fn judge_readable(file: &str, reader: &Reader, mode: &Mode) -> Finding {
    Finding::fail(
        Layer::Tls,
        format!("{file} readable"),
        Some(525),
        format!(
            "holdfast (pid {}, uid {}) cannot read it (owner {}, group {}, mode {:04o}): a \
             renewed certificate will not load, and the next start fails",
            reader.pid, reader.uid, mode.uid, mode.gid, mode.mode
        ),
        "give holdfast's group read access (`chgrp GROUP FILE && chmod 0640 FILE`) and the \
         directories on its way search access",
    )
}

/// Authenticated Origin Pulls on a listener: its CA file and mode.
pub fn judge_pulls(
    listener: &str,
    ca: &str,
    mode: &str,
    loaded: &Result<usize, String>,
) -> Finding {
    let check = format!("origin pulls on {listener}");
    match loaded {
        Ok(n) => Finding::ok(
            Layer::Tls,
            check,
            format!(
                "{mode}: client certificates checked against {ca} ({n} CA certificate{})",
                if *n == 1 { "" } else { "s" }
            ),
        ),
        Err(why) => Finding::fail(
            Layer::Tls,
            check,
            Some(525),
            format!("{ca}: {why}: the listener cannot check Cloudflare's client certificate"),
            "point origin_pulls at Cloudflare's origin-pull CA (PEM), readable by holdfast, and reload",
        ),
    }
}

/// The leaf certificate a listener at `addr` presents for `sni`, DER-encoded.
pub fn served(addr: SocketAddr, sni: &str, timeout: Duration) -> Option<Vec<u8>> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    let tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let mut config = connector.configure().ok()?;
    config.set_verify_hostname(false);
    let mut tls = config.connect(sni, tcp).ok()?;
    let der = tls.ssl().peer_certificate()?.to_der().ok();
    let _ = tls.shutdown();
    der
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Verdict;

    #[test]
    fn certificate_rows() {
        let now = 1_800_000_000;
        let day = 86_400;
        let cert = |loaded: Result<(Vec<String>, i64), String>, served| OnDisk {
            file: "/etc/holdfast/origin.pem".into(),
            loaded,
            served_same: served,
        };
        let names = vec!["example.com".to_string()];
        // (certificate, uncovered names, verdicts in order, codes in order)
        type Row = (OnDisk, Vec<String>, Vec<Verdict>, Vec<Option<u16>>);
        let rows: [Row; 7] = [
            (
                cert(Ok((names.clone(), now + 90 * day)), Some(true)),
                vec![],
                vec![Verdict::Ok, Verdict::Ok],
                vec![None, None],
            ),
            (
                cert(Ok((names.clone(), now + 90 * day)), None),
                vec![],
                vec![Verdict::Ok],
                vec![None],
            ),
            (
                cert(Ok((names.clone(), now + 5 * day)), None),
                vec![],
                vec![Verdict::Warn],
                vec![Some(526)],
            ),
            (
                cert(Ok((names.clone(), now + 90 * day)), Some(false)),
                vec![],
                vec![Verdict::Ok, Verdict::Warn],
                vec![None, None],
            ),
            (
                cert(Err("origin.pem: expired on Jan 1 2026".into()), None),
                vec![],
                vec![Verdict::Fail],
                vec![Some(526)],
            ),
            (
                cert(
                    Err("origin.pem: the key origin.key is not this certificate's".into()),
                    None,
                ),
                vec![],
                vec![Verdict::Fail],
                vec![Some(525)],
            ),
            (
                cert(Ok((names, now + 90 * day)), None),
                vec!["shop.example.net".into()],
                vec![Verdict::Ok, Verdict::Warn],
                vec![None, Some(526)],
            ),
        ];
        for (c, uncovered, verdicts, codes) in rows {
            let found = judge(&c, now, &uncovered);
            let got: Vec<Verdict> = found.iter().map(|f| f.verdict).collect();
            let got_codes: Vec<Option<u16>> = found.iter().map(|f| f.code).collect();
            assert_eq!((got, got_codes), (verdicts, codes), "{found:?}");
        }
    }

    /// A certificate for `name` valid for a month, signed by `issuer` (self-signed without one).
    fn build(
        name: &str,
        issuer: Option<&(
            openssl::x509::X509,
            openssl::pkey::PKey<openssl::pkey::Private>,
        )>,
    ) -> (
        openssl::x509::X509,
        openssl::pkey::PKey<openssl::pkey::Private>,
    ) {
        let now = 1_800_000_000;
        crate::certs::testing::build(name, issuer, now - 86_400, now + 30 * 86_400)
    }

    #[test]
    fn chain_order() {
        let root = build("Root CA", None);
        let inter = build("Intermediate CA", Some(&root));
        let leaf = build("example.com", Some(&inter));
        let (r, i, l) = (root.0.clone(), inter.0.clone(), leaf.0.clone());
        let rows: [(Vec<openssl::x509::X509>, Option<&str>); 5] = [
            (vec![l.clone()], None),
            (vec![l.clone(), i.clone()], None),
            (vec![l.clone(), i.clone(), r.clone()], None),
            (
                vec![l.clone(), r.clone(), i.clone()],
                Some("certificate 1 (example.com) is followed by 2 (Root CA), which did not issue it"),
            ),
            (
                vec![i.clone(), l.clone()],
                Some("certificate 1 (Intermediate CA) is followed by 2 (example.com), which did not issue it"),
            ),
        ];
        for (chain, want) in rows {
            assert_eq!(order(&chain).as_deref(), want);
        }
        let f = judge_order("/etc/holdfast/origin.pem", Some("out")).expect("a finding");
        assert_eq!((f.verdict, f.code), (Verdict::Warn, Some(526)));
        assert_eq!(judge_order("/etc/holdfast/origin.pem", None), None);
    }

    #[test]
    fn who_may_read() {
        let status = "Name:\tholdfast\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\n\
                      Groups:\t997 44 \nCapEff:\t0000000000000000\n";
        let reader = Reader::parse(7, status).expect("parsed");
        assert_eq!(
            reader,
            Reader {
                pid: 7,
                uid: 998,
                gids: vec![997, 44, 997],
                any_file: false
            }
        );
        let root = Reader::parse(
            1,
            "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\nCapEff:\t000001ffffffffff\n",
        )
        .expect("parsed");
        assert!(root.any_file);
        let mode = |uid, gid, mode| Mode { uid, gid, mode };
        let open_dir = mode(0, 0, 0o755);
        // (file, directories on the way, readable by uid 998 / groups 997, 44)
        let rows = [
            (mode(998, 998, 0o600), vec![open_dir], true),
            (mode(0, 997, 0o640), vec![open_dir], true),
            (mode(0, 44, 0o640), vec![open_dir], true),
            (mode(0, 0, 0o600), vec![open_dir], false),
            (mode(0, 0, 0o644), vec![open_dir], true),
            (mode(0, 0, 0o644), vec![mode(0, 0, 0o700), open_dir], false),
            (mode(0, 0, 0o644), vec![mode(0, 997, 0o710), open_dir], true),
            // The owner's bits decide for the owner, even when the others' would allow.
            (mode(998, 0, 0o044), vec![open_dir], false),
        ];
        for (file, dirs, want) in rows {
            assert_eq!(may_read(&reader, &file, &dirs), want, "{file:?} {dirs:?}");
            assert!(may_read(&root, &file, &dirs));
        }
        let f = judge_readable("/etc/holdfast/origin.key", &reader, &mode(0, 0, 0o600));
        assert_eq!((f.verdict, f.code), (Verdict::Fail, Some(525)));
        assert!(
            f.found.starts_with(
                "holdfast (pid 7, uid 998) cannot read it (owner 0, group 0, mode 0600)"
            ),
            "{}",
            f.found
        );
    }

    #[test]
    fn origin_pulls() {
        let ok = judge_pulls(
            "0.0.0.0:443",
            "/etc/holdfast/cf-origin-pull-ca.pem",
            "require",
            &Ok(1),
        );
        assert_eq!(ok.verdict, Verdict::Ok);
        assert_eq!(ok.found, "require: client certificates checked against /etc/holdfast/cf-origin-pull-ca.pem (1 CA certificate)");
        let bad = judge_pulls(
            "0.0.0.0:443",
            "/x.pem",
            "log",
            &Err("no certificate in it".into()),
        );
        assert_eq!((bad.verdict, bad.code), (Verdict::Fail, Some(525)));
    }
}
