//! holdfast's configuration, in three layers (see `../shared/STYLE.md`):
//!
//! 1. [`file`]: serde structs that mirror the TOML file exactly (unknown keys are errors);
//! 2. [`model`]: the validated model, made of real types, built from the file by [`load`] and
//!    [`from_toml_str`], never deserialised directly;
//! 3. runtime objects (health tables, selectors) are built from the model by the other crates.
//!
//! Every problem found is reported with the file, the key path (`pools.app.tiers[1].backends[0]`)
//! and the reason; nothing here panics on any input.

pub mod defaults;
mod duration;
mod error;
pub mod file;
pub mod model;
mod validate;

pub use error::{ConfigError, Problem};
pub use model::*;

use std::path::Path;

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            path,
            vec![Problem::new("", format!("cannot read file: {e}"))],
        )
    })?;
    from_toml_str(&text, path)
}

/// Parses and validates config text; `origin` names the file in error messages and anchors
/// relative paths (such as `fallback.body_file`).
pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let raw = file::parse(text).map_err(|p| ConfigError::new(origin, vec![p]))?;
    let base_dir = origin.parent().unwrap_or_else(|| Path::new("."));
    let found = validate::gather(&raw, base_dir);
    validate::validate(raw, base_dir, &found).map_err(|problems| ConfigError::new(origin, problems))
}
