//! Durations as people write them in the file: `"2s"`, `"500ms"`, `"1m 30s"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Deserialises an optional human-readable duration.
pub fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e} (write e.g. \"2s\" or \"500ms\")"
        ))
    })
}
