//! What the sections' table tests share: a config from TOML text and a hand-made [`Found`],
//! its problems as `(key path, reason)`.
use super::io::Found;
use super::validate;
use crate::model::Config;
use crate::Problem;
use std::path::Path;

/// Where the test configs live: paths in them are relative to it.
pub const DIR: &str = "/etc/holdfast";

/// A minimal valid pool, for rows about other sections.
pub const POOL: &str = "[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:8080\" }]\n";

pub fn load(text: &str, found: &Found) -> Result<Config, Vec<Problem>> {
    let raw = crate::file::parse(text).map_err(|p| vec![p])?;
    validate(raw, Path::new(DIR), found)
}

/// The config `text` makes; panics with its problems.
pub fn config(text: &str, found: &Found) -> Config {
    load(text, found).unwrap_or_else(|p| panic!("{text}\n{p:?}"))
}

/// Checks each row: `text` (with `found`) is rejected with a problem at `path` whose reason
/// holds `reason`, or accepted when `path` is empty.
pub fn rows<T: AsRef<str>, P: AsRef<str>>(rows: &[(T, P, &str)], found: &Found) {
    for (text, path, reason) in rows {
        let (text, path) = (text.as_ref(), path.as_ref());
        match (load(text, found), path) {
            (Ok(_), "") => {}
            (Ok(_), _) => panic!("accepted, expected {path}: {reason}\n{text}"),
            (Err(problems), "") => panic!("rejected: {problems:?}\n{text}"),
            (Err(problems), _) => assert!(
                problems
                    .iter()
                    .any(|p| p.path == path && p.reason.contains(reason)),
                "expected {path}: {reason}, got {problems:?}\n{text}"
            ),
        }
    }
}
