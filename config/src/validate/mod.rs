//! From the file structs to the model: applies defaults and checks every rule, collecting all
//! problems (not only the first) so one `holdfast check` run shows everything to fix.
//!
//! Two passes: [`gather`] does the I/O (reads the files the config names, resolves backend host
//! names); [`validate`] then applies the rules, one module per section of the file, to the file
//! and what was found, doing no I/O itself: each section has its table test.

mod address;
mod common;
mod fallback;
mod health;
mod io;
mod listen;
mod log;
mod notify;
mod pools;
mod routes;
mod stale;
#[cfg(test)]
mod table;
mod trust;

pub use io::{gather, Found};

use crate::file;
use crate::model::*;
use crate::Problem;
use common::Problems;
use std::path::Path;

/// Builds the model from `raw` and what the I/O pass found for it ([`gather`]); paths are
/// relative to `base_dir`. Does no I/O.
pub fn validate(raw: file::File, base_dir: &Path, found: &Found) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    let file::File {
        listen,
        routes,
        fallback,
        pools,
        trust,
        notify,
        log,
    } = raw;

    let listen = listen::validate_listen(listen, base_dir, found, &mut p);
    let fallback = fallback::validate_fallback(fallback, base_dir, found, &mut p);
    let pools: Vec<Pool> = pools
        .into_iter()
        .map(|(name, pool)| pools::validate_pool(name, pool, base_dir, found, &mut p))
        .collect();
    let routes = routes::validate_routes(routes, &pools, &mut p);
    let trust = trust::validate_trust(trust, base_dir, &mut p);
    let notify = notify::validate_notify(notify, &mut p);
    let log = log::validate_log(log, base_dir, &mut p);

    if p.0.is_empty() {
        Ok(Config {
            listen,
            pools,
            routes,
            fallback,
            trust,
            notify,
            log,
        })
    } else {
        Err(p.0)
    }
}
