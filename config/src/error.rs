//! Config errors: every problem carries the key path it is about and the rule it breaks.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `pools.app.tiers[1].backends[0].address`; empty for the whole file.
    pub path: String,
    /// Why it is wrong, in a short lowercase sentence.
    pub reason: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn new(file: &Path, problems: Vec<Problem>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems,
        }
    }
}

impl fmt::Display for ConfigError {
    /// One line per problem: `FILE: PATH: REASON`, the form editors and CI logs link to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.path.as_str() {
                "" => write!(f, "{}: {}", self.file.display(), p.reason)?,
                path => write!(f, "{}: {}: {}", self.file.display(), path, p.reason)?,
            }
        }
        Ok(())
    }
}
