//! What an operator asked of a backend (HAProxy's `set server state drain|maint|ready`), as a
//! plain type: the data path sees only whether the backend is usable, which is its checks'
//! verdict and this together.
//!
//! | action | new requests | requests in flight | checks | shown as |
//! |---|---|---|---|---|
//! | `drain` | none | finish, tunnels too | go on, shown | `draining` while any is in flight, then `drained` |
//! | `down` | none | finish | go on, shown | `forced out` |
//! | `up` | as the checks say (through slow start) | - | - | as the checks say |
//!
//! Taking out the last backend of a pool that can serve is refused unless forced: visitors would
//! get the fallback.

use std::time::SystemTime;

/// Where an operator put a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admin {
    /// Nothing asked: the checks decide.
    #[default]
    Auto,
    /// No new requests; those in flight finish.
    Drain,
    /// Forced out.
    Down,
}

impl Admin {
    pub const ALL: [Admin; 3] = [Admin::Auto, Admin::Drain, Admin::Down];

    /// As in `/status`, the state file and the metric's documentation.
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Auto => "none",
            Admin::Drain => "drain",
            Admin::Down => "down",
        }
    }

    pub fn from_name(name: &str) -> Option<Admin> {
        Admin::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The value of `holdfast_backend_admin_state`: 0 none, 1 drain, 2 down.
    pub fn gauge(self) -> i64 {
        match self {
            Admin::Auto => 0,
            Admin::Drain => 1,
            Admin::Down => 2,
        }
    }

    /// Whether the backend may take new requests as far as the operator goes.
    pub fn admits(self) -> bool {
        self == Admin::Auto
    }

    /// What an operator sees: `None` when the checks decide alone.
    pub fn shown(self, in_flight: usize) -> Option<&'static str> {
        match (self, in_flight) {
            (Admin::Auto, _) => None,
            (Admin::Drain, 0) => Some("drained"),
            (Admin::Drain, _) => Some("draining"),
            (Admin::Down, _) => Some("forced out"),
        }
    }
}

/// What an operator can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drain,
    Down,
    Up,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Drain, Action::Down, Action::Up];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drain => "drain",
            Action::Down => "down",
            Action::Up => "up",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Where it puts the backend.
    pub fn target(self) -> Admin {
        match self {
            Action::Drain => Admin::Drain,
            Action::Down => Admin::Down,
            Action::Up => Admin::Auto,
        }
    }
}

/// An operator's mark on a backend: where, who asked (the peer's address) and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub admin: Admin,
    pub by: String,
    pub at: SystemTime,
}

/// Whether `action` may be taken on a backend (`usable`: it may serve now) of a pool in which
/// `others` other backends may serve now: taking out the last one is refused unless `force`.
pub fn allowed(action: Action, usable: bool, others: usize, force: bool) -> Result<(), String> {
    let takes_out = action != Action::Up;
    if takes_out && usable && others == 0 && !force {
        return Err(format!(
            "it is the last backend of its pool that can serve: visitors would get the fallback \
             answer; add ?force=1 (holdfast backend {} --force) to {} it anyway",
            action.as_str(),
            action.as_str()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_backend_that_can_serve_is_kept_unless_forced() {
        use Action::*;
        // (action, usable, others usable, force) -> allowed
        let cases = [
            ((Drain, true, 1, false), true),
            ((Down, true, 2, false), true),
            ((Drain, true, 0, false), false),
            ((Down, true, 0, false), false),
            ((Down, true, 0, true), true),
            ((Drain, true, 0, true), true),
            // Already out (checks, or another action): nothing more is lost.
            ((Down, false, 0, false), true),
            ((Up, true, 0, false), true),
            ((Up, false, 0, false), true),
        ];
        for ((action, usable, others, force), ok) in cases {
            assert_eq!(
                allowed(action, usable, others, force).is_ok(),
                ok,
                "{action:?} usable={usable} others={others} force={force}"
            );
        }
    }

    #[test]
    fn what_an_operator_sees() {
        assert_eq!(Admin::Auto.shown(3), None);
        assert_eq!(Admin::Drain.shown(2), Some("draining"));
        assert_eq!(Admin::Drain.shown(0), Some("drained"));
        assert_eq!(Admin::Down.shown(0), Some("forced out"));
        for a in Admin::ALL {
            assert_eq!(Admin::from_name(a.as_str()), Some(a));
        }
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.as_str()), Some(a));
        }
        assert_eq!(Action::Up.target(), Admin::Auto);
        assert!(Admin::Auto.admits() && !Admin::Drain.admits() && !Admin::Down.admits());
    }
}
