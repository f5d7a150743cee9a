//! `[log]`: the format of the process's events and of the access log, and where the access log
//! goes.

use super::common::Problems;
use crate::defaults as d;
use crate::file;
use crate::model::*;
use std::path::Path;

pub(super) fn validate_log(raw: file::Log, base_dir: &Path, p: &mut Problems) -> Log {
    let file::Log {
        format,
        access,
        access_query_max,
        access_queue,
    } = raw;
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            p.add(
                "log.format",
                format!("{other:?} is not \"text\" or \"json\""),
            );
            false
        }
    };
    let queue = access_queue.unwrap_or(d::ACCESS_QUEUE);
    if !(d::ACCESS_QUEUE_MIN..=d::ACCESS_QUEUE_MAX).contains(&queue) {
        p.add(
            "log.access_queue",
            format!(
                "{queue} is not between {} and {} lines",
                d::ACCESS_QUEUE_MIN,
                d::ACCESS_QUEUE_MAX
            ),
        );
    }
    let unused = |key: &str, p: &mut Problems| {
        p.add(
            format!("log.{key}"),
            "has no effect without log.access (\"stdout\" or a file's path)",
        )
    };
    let to = match access.as_deref() {
        None => {
            if access_query_max.is_some() {
                unused("access_query_max", p);
            }
            if access_queue.is_some() {
                unused("access_queue", p);
            }
            None
        }
        Some("stdout") => Some(AccessTarget::Stdout),
        Some("") => {
            p.add("log.access", "is empty: \"stdout\" or a file's path");
            None
        }
        Some(path) if path.ends_with('/') => {
            p.add(
                "log.access",
                format!("{path:?} names a directory: name the file"),
            );
            None
        }
        Some(path) => Some(AccessTarget::File(base_dir.join(path))),
    };
    let access = to.map(|to| AccessLog {
        to,
        query_max: access_query_max.unwrap_or(d::ACCESS_QUERY_MAX),
        queue,
    });
    Log { json, access }
}

#[cfg(test)]
mod tests {
    use super::super::table::{config, rows, DIR, POOL};
    use super::super::Found;
    use crate::model::{AccessLog, AccessTarget, Log};
    use std::path::PathBuf;

    #[test]
    fn log_rows() {
        let found = Found::default();
        let at = |log: &str| format!("{POOL}[log]\n{log}\n");
        rows(
            &[
                (at("format = \"json\""), "", ""),
                (
                    at("format = \"xml\""),
                    "log.format",
                    "is not \"text\" or \"json\"",
                ),
                (at("access = \"stdout\""), "", ""),
                (at("access = \"\""), "log.access", "is empty"),
                (
                    at("access = \"/var/log/\""),
                    "log.access",
                    "names a directory",
                ),
                (
                    at("access_query_max = 10"),
                    "log.access_query_max",
                    "no effect without log.access",
                ),
                (
                    at("access = \"stdout\"\naccess_queue = 1"),
                    "log.access_queue",
                    "1 is not between 16 and 1048576",
                ),
            ],
            &found,
        );
        assert_eq!(config(POOL, &found).log, Log::default(), "off by default");
        let log = config(
            &at("format = \"json\"\naccess = \"logs/access.log\"\naccess_query_max = 0"),
            &found,
        )
        .log;
        assert_eq!(
            log,
            Log {
                json: true,
                access: Some(AccessLog {
                    to: AccessTarget::File(PathBuf::from(DIR).join("logs/access.log")),
                    query_max: 0,
                    queue: crate::defaults::ACCESS_QUEUE,
                }),
            },
            "a relative path is the config's directory's"
        );
    }
}
