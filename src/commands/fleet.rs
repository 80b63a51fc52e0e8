//! `plan` and `report --fleet`: one move over several nodes. `plan` lists the source
//! once and cuts it into N key ranges ([`crate::plan`]); every node then runs the usual
//! commands with `--plan FILE --shard I` and publishes its report; `report --fleet`
//! merges the reports into one verdict ([`crate::fleet`]).

use std::sync::Arc;

use super::Settings;
use crate::backend::{open_destination, open_source};
use crate::error::{Error, Result};
use crate::fleet::Fleet;
use crate::inventory::InventorySource;
use crate::plan::Plan;

/// Makes a plan of `shards` ranges over `source` (from `s.inventory` when given); with
/// `publish`, also writes it at that destination as `.barge/<plan id>/plan.json`.
pub async fn plan(s: &Settings, source: &str, shards: u32, publish: Option<&str>) -> Result<Plan> {
    let scratch = std::env::temp_dir().join(format!("barge-plan-{}", std::process::id()));
    let made = async {
        let mut src = open_source(source, &s.source).await?;
        if let Some(manifest) = &s.inventory {
            let dir = scratch.join("inventory");
            src = Arc::new(InventorySource::new(src, source, manifest, &s.source, dir).await?);
        }
        crate::plan::make(src, source, shards, &scratch).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let plan = made?;
    if let Some(dest) = publish {
        let d = open_destination(dest, &s.dest).await?;
        let json = serde_json::to_vec_pretty(&plan).map_err(|e| Error::Encode {
            what: "the plan".into(),
            message: e.to_string(),
        })?;
        let key = format!("{}{}/plan.json", crate::verify::RESERVED_PREFIX, plan.id);
        crate::backend::put_document(d.as_ref(), &key, json, plan.created).await?;
    }
    Ok(plan)
}

/// The fleet's verdict: every shard's report of `plan` at `place`.
pub async fn gather(s: &Settings, place: &str, plan: &Plan) -> Result<Fleet> {
    let d = open_destination(place, &s.dest).await?;
    crate::fleet::gather(d, plan, s.fleet_key.as_ref()).await
}

/// Gathers the fleet's verdict every `every` until SIGINT or SIGTERM and serves it at
/// `/metrics` of the status API of `state` (its socket, and `http` when given) as
/// `barge_fleet_*`, so a Prometheus beside the fleet watches one verdict; `each` sees
/// every gathering.
pub async fn watch(
    s: &Settings,
    place: &str,
    plan: &Plan,
    every: std::time::Duration,
    http: &crate::monitor::server::HttpOptions,
    each: &mut (dyn FnMut(&Fleet) + Send),
) -> Result<()> {
    std::fs::create_dir_all(&s.state)
        .map_err(|e| Error::io("making the state directory", &s.state, e))?;
    let monitor = Arc::new(crate::monitor::Monitor::new("fleet"));
    let _server = crate::monitor::server::start(monitor.clone(), &s.state, http).await?;
    let d = open_destination(place, &s.dest).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::task("watching the fleet", e))?;
    loop {
        let f = crate::fleet::gather(d.clone(), plan, s.fleet_key.as_ref()).await?;
        monitor.set_extra_metrics(crate::fleet::metrics(&f));
        each(&f);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}
