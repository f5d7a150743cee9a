//! Keeps Cloudflare's ranges refreshed ([`crate::trust`] holds them): the last good list taken
//! from `trust.refresh_file` at start, then a fetch of `trust.refresh_url` every
//! `refresh_interval`, following the running config across reloads.

use crate::runtime::Runtime;
use crate::trust::{parse_ranges, Ranges, REFRESHED};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Takes the list a refresh kept in `file` (at start, before the first visitor; or when a reload
/// names another file). Whether there was a good one.
pub fn take_kept(file: &std::path::Path) -> bool {
    match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|b| parse_ranges(&b))
    {
        Ok((nets, _)) => {
            tracing::info!(file = %file.display(), ranges = nets.len(), "Cloudflare's ranges from the last good refresh");
            REFRESHED.store(Arc::new(Ranges::new(nets)));
            true
        }
        Err(e) => {
            tracing::info!(file = %file.display(), error = %e, "no earlier refresh of Cloudflare's ranges to start from");
            false
        }
    }
}

/// Keeps Cloudflare's ranges refreshed as the running config's `trust.refresh_url` says (each
/// round reads the config anew, so a reload applies): first the last good list from
/// `refresh_file`, then a fetch every `refresh_interval`. A good list replaces the refreshed
/// ranges and is written to the file; anything else is logged and counted, and changes nothing.
pub async fn keep_refreshed(runtime: Arc<ArcSwap<Runtime>>) {
    // Made when a config first asks for a refresh: the client loads the system's CA
    // certificates (a few MB).
    let mut client: Option<reqwest::Client> = None;
    // The process took the kept list at start (`take_kept`); a reload may name another file.
    let mut from_file: Option<PathBuf> = runtime
        .load()
        .config
        .trust
        .refresh
        .as_ref()
        .and_then(|r| r.file.clone());
    loop {
        let current = runtime.load_full();
        let Some(refresh) = current.config.trust.refresh.clone() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let client = match &client {
            Some(c) => c.clone(),
            None => match reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
            {
                Ok(c) => client.insert(c).clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh Cloudflare's ranges: the built-in ones are used");
                    return;
                }
            },
        };
        let metrics = &current.metrics;
        if refresh.file != from_file {
            from_file = refresh.file.clone();
            if let Some(file) = refresh.file.clone() {
                // File work on a blocking thread, off the runtime of the health checks.
                let _ = tokio::task::spawn_blocking(move || take_kept(&file)).await;
            }
        }
        let fetched = async {
            let answer = client
                .get(&refresh.url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !answer.status().is_success() {
                return Err(format!("answered {}", answer.status()));
            }
            let body = answer.bytes().await.map_err(|e| e.to_string())?;
            parse_ranges(&body).map(|(nets, _)| (nets, body))
        };
        match fetched.await {
            Ok((nets, body)) => {
                let before = REFRESHED.load().len();
                REFRESHED.store(Arc::new(Ranges::new(nets)));
                metrics.ranges_refreshed(true);
                tracing::info!(url = %refresh.url, ranges = REFRESHED.load().len(), before, "Cloudflare's ranges refreshed");
                if let Some(file) = refresh.file.clone() {
                    let kept = tokio::task::spawn_blocking(move || {
                        let tmp = file.with_extension("tmp");
                        let written =
                            std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, &file));
                        if let Err(e) = written {
                            tracing::warn!(file = %file.display(), error = %e, "cannot keep the refreshed ranges on disk");
                        }
                    });
                    let _ = kept.await;
                }
            }
            Err(e) => {
                metrics.ranges_refreshed(false);
                tracing::warn!(url = %refresh.url, error = %e, "refreshing Cloudflare's ranges failed; the ranges in use stay");
            }
        }
        // The next round after the interval, or as soon as a reload changes the settings.
        let started = tokio::time::Instant::now();
        while started.elapsed() < refresh.interval {
            tokio::time::sleep(Duration::from_millis(200).min(refresh.interval)).await;
            if runtime.load().config.trust.refresh.as_ref() != Some(&refresh) {
                break;
            }
        }
    }
}
