//! `[routes]`: which pool serves which host.

use super::common::Problems;
use crate::file;
use crate::model::*;
use std::collections::HashMap;

pub(super) fn validate_routes(raw: file::Routes, pools: &[Pool], p: &mut Problems) -> Routes {
    let file::Routes { default, hosts } = raw;
    let index: HashMap<&str, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, pool)| (pool.name.as_str(), i))
        .collect();
    if pools.is_empty() {
        p.add("pools", "at least one pool is needed");
    }
    let default = match default {
        Some(name) => index.get(name.as_str()).copied().unwrap_or_else(|| {
            p.add(
                "routes.default",
                format!("no pool named {name:?} (pools: {})", names(&index)),
            );
            0
        }),
        None if pools.len() > 1 => {
            p.add(
                "routes.default",
                "several pools are defined: name the default one",
            );
            0
        }
        None => 0,
    };
    let mut table = HashMap::new();
    for (host, pool) in hosts {
        let path = format!("routes.hosts.{host:?}");
        let Some(&i) = index.get(pool.as_str()) else {
            p.add(
                path,
                format!("no pool named {pool:?} (pools: {})", names(&index)),
            );
            continue;
        };
        let key = host.to_ascii_lowercase();
        if key.is_empty() || key.contains(['/', ' ', ':']) && !key.starts_with('[') {
            p.add(
                path,
                "a host route is a host name without scheme, port or path",
            );
            continue;
        }
        if table.insert(key, i).is_some() {
            p.add(
                path,
                "this host is routed twice (host names are case-insensitive)",
            );
        }
    }
    Routes {
        hosts: table,
        default,
    }
}

fn names(index: &HashMap<&str, usize>) -> String {
    let mut v: Vec<&str> = index.keys().copied().collect();
    v.sort_unstable();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::io::Found;
    use super::super::table::{config, rows, POOL};

    const TWO: &str = "[[pools.app.tiers]]\nbackends = [{ address = \"127.0.0.1:8080\" }]\n[[pools.api.tiers]]\nbackends = [{ address = \"127.0.0.1:8081\" }]\n";

    #[test]
    fn route_rules() {
        let with = |routes: &str, pools: &str| format!("[routes]\n{routes}\n{pools}");
        let cases = [
            (with("", POOL), "", ""),
            (String::new(), "pools", "at least one pool"),
            (with("", TWO), "routes.default", "name the default one"),
            (with(r#"default = "api""#, TWO), "", ""),
            (
                with(r#"default = "nope""#, TWO),
                "routes.default",
                "no pool named \"nope\" (pools: api, app)",
            ),
            (
                with("[routes.hosts]\n\"a.example\" = \"nope\"", POOL),
                "routes.hosts.\"a.example\"",
                "no pool named",
            ),
            (
                with("[routes.hosts]\n\"a.example:8080\" = \"app\"", POOL),
                "routes.hosts.\"a.example:8080\"",
                "without scheme, port or path",
            ),
            (
                with("[routes.hosts]\n\"https://a.example\" = \"app\"", POOL),
                "routes.hosts.\"https://a.example\"",
                "without scheme, port or path",
            ),
            (
                with(
                    "[routes.hosts]\n\"A.example\" = \"app\"\n\"a.example\" = \"app\"",
                    POOL,
                ),
                "routes.hosts.\"a.example\"",
                "routed twice",
            ),
        ];
        rows(&cases, &Found::default());
    }

    #[test]
    fn hosts_are_matched_without_case() {
        let text = format!(
            "[routes]\ndefault = \"app\"\n[routes.hosts]\n\"API.Example\" = \"api\"\n{TWO}"
        );
        let config = config(&text, &Found::default());
        let api = config.pools.iter().position(|p| p.name == "api").unwrap();
        let app = config.pools.iter().position(|p| p.name == "app").unwrap();
        assert_eq!(config.routes.pool_for(Some("api.example")), api);
        assert_eq!(config.routes.pool_for(Some("other.example")), app);
    }
}
