//! End-to-end tests: the real `holdfast` binary in front of real HTTP backends on loopback.
//! One test binary; each module is one capability.
#![allow(clippy::unwrap_used)]

#[path = "e2e/access_log.rs"]
mod access_log;
#[path = "e2e/actions.rs"]
mod actions;
#[path = "e2e/admin_access.rs"]
mod admin_access;
#[path = "e2e/certs.rs"]
mod certs;
#[path = "e2e/check.rs"]
mod check;
#[path = "e2e/datapath.rs"]
mod datapath;
#[path = "e2e/doctor.rs"]
mod doctor;
#[path = "e2e/exhaustion.rs"]
mod exhaustion;
#[path = "e2e/failover.rs"]
mod failover;
#[path = "e2e/fallback.rs"]
mod fallback;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/framing.rs"]
mod framing;
#[path = "e2e/h2_backends.rs"]
mod h2_backends;
#[path = "e2e/h2_clients.rs"]
mod h2_clients;
#[path = "e2e/hedge.rs"]
mod hedge;
#[path = "e2e/http2.rs"]
mod http2;
#[path = "e2e/logs.rs"]
mod logs;
#[path = "e2e/notify.rs"]
mod notify;
#[path = "e2e/overload.rs"]
mod overload;
#[path = "e2e/page.rs"]
mod page;
#[path = "e2e/reload.rs"]
mod reload;
#[path = "e2e/rescue.rs"]
mod rescue;
#[path = "e2e/retry.rs"]
mod retry;
#[path = "e2e/slow.rs"]
mod slow;
#[path = "e2e/spares.rs"]
mod spares;
#[path = "e2e/stale.rs"]
mod stale;
#[path = "e2e/systemd.rs"]
mod systemd;
#[path = "e2e/tiers.rs"]
mod tiers;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/trust.rs"]
mod trust;
#[path = "e2e/upgrade.rs"]
mod upgrade;
#[path = "e2e/visitors.rs"]
mod visitors;
