//! What `holdfast status` shows: one running holdfast read from its `/status` document, or
//! several side by side (`holdfast status --all ADDR...`), and whether the fleet agrees: the
//! same config (by its hash) and the same view of every backend. Plain values, no I/O: the
//! command asks each instance (`control.rs`) and prints what is made here.

use serde_json::Value;
use std::fmt::Write;

/// One instance, as its `/status` document describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub pid: u64,
    pub version: String,
    pub uptime_s: u64,
    pub draining: bool,
    /// The config file's SHA-256.
    pub hash: String,
    /// The SHA-256 of what the config says outside `[listen]` and `[log]`: what the fleet
    /// must agree on (each machine has its own addresses).
    pub serving_hash: String,
    pub generation: u64,
    pub config_path: String,
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub default: bool,
    /// The tier serving now, by name; `None` when no tier can.
    pub active: Option<String>,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub tier: String,
    pub name: String,
    pub address: String,
    /// What the checks say (`up`, `down`...), or what an operator asked (`drained`, `forced
    /// out`), which wins.
    pub state: String,
    pub in_flight: u64,
    /// The last check that failed, when one did.
    pub why: Option<String>,
}

impl Backend {
    /// How the fleet table names it: `pool/tier/name`.
    fn key(&self, pool: &str) -> String {
        format!("{pool}/{}/{}", self.tier, self.name)
    }
}

impl View {
    /// Reads a `/status` document; `None` when it is not one.
    pub fn parse(doc: &Value) -> Option<View> {
        let config = doc.get("config")?;
        let process = doc.get("process")?;
        let draining = doc["draining"].as_bool().unwrap_or(false);
        let pools: Vec<Pool> = doc["pools"]
            .as_array()?
            .iter()
            .map(pool)
            .collect::<Option<_>>()?;
        Some(View {
            pid: process["pid"].as_u64()?,
            version: process["version"].as_str().unwrap_or("?").to_string(),
            uptime_s: process["uptime_s"].as_u64().unwrap_or(0),
            draining,
            hash: config["hash"].as_str()?.to_string(),
            serving_hash: config["serving_hash"]
                .as_str()
                .or(config["hash"].as_str())?
                .to_string(),
            generation: config["generation"].as_u64()?,
            config_path: config["path"].as_str().unwrap_or("?").to_string(),
            pools,
        })
    }

    /// The first 12 hex digits of the config file's hash: enough to tell two configs apart.
    pub fn short_hash(&self) -> &str {
        short(&self.hash)
    }

    /// The same of the serving hash.
    pub fn short_serving_hash(&self) -> &str {
        short(&self.serving_hash)
    }

    /// Not stopping, and the default pool has a tier that can serve: what `/healthz` says 200 to.
    pub fn serving(&self) -> bool {
        self.health() == Health::Serving
    }

    fn health(&self) -> Health {
        let default_serves = self.pools.iter().any(|p| p.default && p.active.is_some());
        match (self.draining, default_serves) {
            (true, _) => Health::Stopping,
            (false, true) => Health::Serving,
            (false, false) => Health::Fallback,
        }
    }

    /// `holdfast status` of one instance, as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "holdfast {}, pid {}, up {}: {}",
            self.version,
            self.pid,
            duration(self.uptime_s),
            match self.health() {
                Health::Stopping => "stopping (/healthz 503)",
                Health::Serving => "serving (/healthz 200)",
                Health::Fallback => "no backend of the default pool can serve (/healthz 503)",
            }
        );
        let _ = writeln!(
            out,
            "config {}: generation {}, hash {}",
            self.config_path,
            self.generation,
            self.short_hash()
        );
        for pool in &self.pools {
            let _ = writeln!(
                out,
                "pool {}{}: {}",
                pool.name,
                if pool.default { " (default)" } else { "" },
                match &pool.active {
                    Some(tier) => format!("serving from tier {tier}"),
                    None => "no tier can serve: visitors get the fallback".to_string(),
                }
            );
            let name_width = pool.backends.iter().map(|b| b.name.len()).max();
            let tier_width = pool.backends.iter().map(|b| b.tier.len()).max();
            for b in &pool.backends {
                let mut line = format!(
                    "  {:tw$}  {:nw$}  {:10}",
                    b.tier,
                    b.name,
                    b.state,
                    tw = tier_width.unwrap_or(0),
                    nw = name_width.unwrap_or(0),
                );
                if b.name != b.address {
                    let _ = write!(line, "  {}", b.address);
                }
                if b.in_flight > 0 {
                    let _ = write!(line, "  {} in flight", b.in_flight);
                }
                if let Some(why) = &b.why {
                    let _ = write!(line, "  ({why})");
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        out
    }
}

/// What an instance answers with, as `/healthz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Serving,
    /// No backend of the default pool can serve: the fallback (or a kept copy) answers.
    Fallback,
    Stopping,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Serving => "serving",
            Health::Fallback => "fallback",
            Health::Stopping => "stopping",
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn pool(doc: &Value) -> Option<Pool> {
    let tiers = doc["tiers"].as_array()?;
    let active = doc["active_tier"]
        .as_u64()
        .and_then(|i| tiers.get(usize::try_from(i).ok()?))
        .map(|t| t["name"].as_str().unwrap_or("?").to_string());
    let mut backends = Vec::new();
    for tier in tiers {
        let tier_name = tier["name"].as_str().unwrap_or("?");
        for b in tier["backends"].as_array()? {
            let state = b["admin"]["shown"]
                .as_str()
                .or(b["status"].as_str())
                .unwrap_or("?");
            let why = b["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["result"] == "fail")
                .map(|c| {
                    let kind = c["kind"].as_str().unwrap_or("check");
                    match c["detail"].as_str() {
                        Some(detail) => format!("{kind}: {detail}"),
                        None => kind.to_string(),
                    }
                });
            backends.push(Backend {
                tier: tier_name.to_string(),
                name: b["name"].as_str()?.to_string(),
                address: b["address"].as_str().unwrap_or("?").to_string(),
                state: state.to_string(),
                in_flight: b["in_flight"].as_u64().unwrap_or(0),
                why,
            });
        }
    }
    Some(Pool {
        name: doc["name"].as_str()?.to_string(),
        default: doc["default"].as_bool().unwrap_or(false),
        active,
        backends,
    })
}

/// `3h12m`, `2d4h`, `42s`: the two largest units.
fn duration(s: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut left = s;
    for (size, name) in units {
        if left >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.concat()
}

/// Several instances side by side, and where they disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The table: a header row (the instances), then one row per property and per backend.
    pub rows: Vec<Vec<String>>,
    /// What is not the same everywhere, one sentence each: empty when the fleet agrees.
    pub differences: Vec<String>,
    /// What differs and is expected to: config files that differ only in `[listen]` or
    /// `[log]` (each machine's own addresses).
    pub notes: Vec<String>,
    /// Instances that could not be asked, or did not answer with a status document.
    pub unreachable: Vec<String>,
}

impl Fleet {
    /// `views`: each instance's label (its admin address) and what asking it gave.
    pub fn of(views: &[(String, Result<View, String>)]) -> Fleet {
        let mut rows = vec![std::iter::once(String::new())
            .chain(views.iter().map(|(label, _)| label.clone()))
            .collect::<Vec<_>>()];
        let row = |name: &str, cell: &dyn Fn(&View) -> String| {
            std::iter::once(name.to_string())
                .chain(views.iter().map(|(_, v)| match v {
                    Ok(v) => cell(v),
                    Err(_) => "-".to_string(),
                }))
                .collect::<Vec<_>>()
        };
        rows.push(
            std::iter::once("answer".to_string())
                .chain(views.iter().map(|(_, v)| match v {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.clone(),
                }))
                .collect(),
        );
        let answered: Vec<(&str, &View)> = views
            .iter()
            .filter_map(|(label, v)| v.as_ref().ok().map(|v| (label.as_str(), v)))
            .collect();
        // What is not the same on every instance that answered: one sentence.
        let differ = |what: &str, cell: &dyn Fn(&View) -> String| -> Option<String> {
            let first = cell(answered.first()?.1);
            answered.iter().any(|(_, v)| cell(v) != first).then(|| {
                let each: Vec<String> = answered
                    .iter()
                    .map(|(label, v)| format!("{} on {label}", cell(v)))
                    .collect();
                format!("{what}: {}", each.join(", "))
            })
        };
        let mut differences = Vec::new();
        // A row the fleet must agree on: in the table, and a difference when it does not.
        let mut compared =
            |rows: &mut Vec<Vec<String>>, name: &str, cell: &dyn Fn(&View) -> String| {
                rows.push(row(name, cell));
                differences.extend(differ(name, cell));
            };
        rows.push(row("pid", &|v| v.pid.to_string()));
        compared(&mut rows, "version", &|v| v.version.clone());
        rows.push(row("up", &|v| duration(v.uptime_s)));
        compared(&mut rows, "health", &|v| v.health().as_str().to_string());
        compared(&mut rows, "serving hash", &|v| {
            v.short_serving_hash().to_string()
        });
        // Each machine's own addresses make its file differ: a note, not a disagreement.
        rows.push(row("file hash", &|v| v.short_hash().to_string()));
        rows.push(row("generation", &|v| v.generation.to_string()));

        // Every backend any instance knows, in the order the first one that knows it lists it.
        let mut keys: Vec<String> = Vec::new();
        for (_, v) in &answered {
            for pool in &v.pools {
                for b in &pool.backends {
                    let key = b.key(&pool.name);
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        let state_of = |v: &View, key: &str| -> String {
            v.pools
                .iter()
                .flat_map(|p| p.backends.iter().map(move |b| (b.key(&p.name), b)))
                .find(|(k, _)| k == key)
                .map_or_else(|| "(not configured)".to_string(), |(_, b)| b.state.clone())
        };
        for key in &keys {
            compared(&mut rows, key, &|v| state_of(v, key));
        }
        let mut notes = Vec::new();
        let serving_agree =
            differ("serving hash", &|v| v.short_serving_hash().to_string()).is_none();
        if serving_agree && differ("file hash", &|v| v.short_hash().to_string()).is_some() {
            notes.push(
                "the config files differ only in [listen] or [log] (each machine's own addresses and limits)"
                    .to_string(),
            );
        }
        let unreachable = views
            .iter()
            .filter_map(|(label, v)| v.as_ref().err().map(|e| format!("{label}: {e}")))
            .collect();
        Fleet {
            rows,
            differences,
            notes,
            unreachable,
        }
    }

    /// The table and the verdict, as text.
    pub fn render(&self) -> String {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                let _ = write!(line, "{cell:width$}  ");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        for u in &self.unreachable {
            let _ = writeln!(out, "not asked: {u}");
        }
        match self.differences.is_empty() {
            true if self.unreachable.is_empty() => {
                let _ = writeln!(
                    out,
                    "the fleet agrees: the same config and the same view of every backend"
                );
            }
            true => {
                let _ = writeln!(out, "those that answered agree");
            }
            false => {
                for d in &self.differences {
                    let _ = writeln!(out, "differs: {d}");
                }
            }
        }
        out
    }

    /// The exit code of `holdfast status --all`: 0 when every instance answered and all agree,
    /// 1 when they disagree, 2 when one could not be asked.
    pub fn exit_code(&self) -> u8 {
        match (self.unreachable.is_empty(), self.differences.is_empty()) {
            (false, _) => 2,
            (true, false) => 1,
            (true, true) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(hash: &str, web2: &str, drained: bool) -> Value {
        json!({
            "draining": false,
            "process": { "pid": 42, "version": "0.1.0", "uptime_s": 11_532 },
            "config": { "hash": format!("{hash}-file"), "serving_hash": hash, "generation": 3, "path": "/etc/holdfast/holdfast.toml" },
            "pools": [{
                "name": "app", "default": true, "can_serve": true, "active_tier": 0,
                "tiers": [
                    { "name": "primary", "backends": [
                        { "name": "web-1", "address": "10.0.0.11:8080", "status": "up",
                          "in_flight": 3, "admin": null, "checks": [] },
                        { "name": "web-2", "address": "10.0.0.12:8080", "status": web2,
                          "in_flight": 0,
                          "admin": if drained { json!({ "state": "drain", "shown": "drained" }) } else { Value::Null },
                          "checks": [{ "kind": "tcp", "result": "fail", "detail": "connection refused" }] },
                    ]},
                    { "name": "backup", "backends": [
                        { "name": "10.0.1.10:443", "address": "10.0.1.10:443", "status": "up",
                          "in_flight": 0, "admin": null, "checks": [] },
                    ]},
                ],
            }],
        })
    }

    #[test]
    fn one_instance_reads_as_a_sentence_per_pool_and_a_line_per_backend() {
        let view = View::parse(&doc("3f2a9c1d0b7e55aa", "down", false)).expect("a status");
        assert!(view.serving());
        assert_eq!(
            view.render(),
            "holdfast 0.1.0, pid 42, up 3h12m: serving (/healthz 200)\n\
             config /etc/holdfast/holdfast.toml: generation 3, hash 3f2a9c1d0b7e\n\
             pool app (default): serving from tier primary\n  \
             primary  web-1          up          10.0.0.11:8080  3 in flight\n  \
             primary  web-2          down        10.0.0.12:8080  (tcp: connection refused)\n  \
             backup   10.0.1.10:443  up\n"
        );
        let drained = View::parse(&doc("a", "up", true)).expect("a status");
        assert_eq!(
            drained.pools[0].backends[1].state, "drained",
            "the operator's word wins"
        );
        assert!(View::parse(&json!({"error": "no"})).is_none());
    }

    #[test]
    fn a_fleet_agrees_or_says_where_it_does_not() {
        let view = |hash, web2| View::parse(&doc(hash, web2, false)).expect("a status");
        let a = "10.0.0.1:9180".to_string();
        let b = "10.0.0.2:9180".to_string();
        type Case = (Vec<(String, Result<View, String>)>, Vec<&'static str>, u8);
        let cases: Vec<Case> = vec![
            (
                vec![
                    (a.clone(), Ok(view("h1", "up"))),
                    (b.clone(), Ok(view("h1", "up"))),
                ],
                vec![],
                0,
            ),
            (
                vec![
                    (a.clone(), Ok(view("h1", "up"))),
                    (b.clone(), Ok(view("h2", "down"))),
                ],
                vec![
                    "serving hash: h1 on 10.0.0.1:9180, h2 on 10.0.0.2:9180",
                    "app/primary/web-2: up on 10.0.0.1:9180, down on 10.0.0.2:9180",
                ],
                1,
            ),
            (
                vec![
                    (a.clone(), Ok(view("h1", "up"))),
                    (b.clone(), Err("connection refused".to_string())),
                ],
                vec![],
                2,
            ),
        ];
        for (views, differences, code) in cases {
            let fleet = Fleet::of(&views);
            assert_eq!(fleet.differences, differences);
            assert_eq!(fleet.exit_code(), code);
            assert_eq!(fleet.rows[0], vec!["".to_string(), a.clone(), b.clone()]);
        }
        // Files that differ only in [listen]: the same serving hash, a note, no disagreement.
        let mut own_addresses = view("h1", "up");
        own_addresses.hash = "other-file".to_string();
        let fleet = Fleet::of(&[
            (a.clone(), Ok(view("h1", "up"))),
            (b.clone(), Ok(own_addresses)),
        ]);
        assert_eq!((fleet.exit_code(), fleet.notes.len()), (0, 1), "{fleet:?}");
        let fleet = Fleet::of(&[
            (a.clone(), Ok(view("h1", "up"))),
            (b, Ok(view("h2", "down"))),
        ]);
        let text = fleet.render();
        let row = |key: &str| {
            text.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|cells| cells.first() == Some(&key))
        };
        assert_eq!(
            row("app/primary/web-2"),
            Some(vec!["app/primary/web-2", "up", "down"])
        );
        assert!(text.contains("differs: serving hash"), "{text}");
    }

    #[test]
    fn durations_show_their_two_largest_units() {
        for (s, shown) in [
            (0, "0s"),
            (42, "42s"),
            (61, "1m1s"),
            (11_532, "3h12m"),
            (187_200, "2d4h"),
        ] {
            assert_eq!(duration(s), shown);
        }
    }
}
