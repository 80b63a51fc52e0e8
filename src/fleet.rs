//! One verdict for a move split over several nodes. Each node publishes its report
//! (plan id, shard, counts, verdict, a digest over its objects) as
//! `.barge/<plan id>/shard-<i>.json` at a place every node reaches: its destination (the
//! default) or a directory. `barge report --fleet PLACE --plan FILE` reads the reports
//! of every shard of the plan and says DONE only when each one is there and DONE.
//! Nodes never talk to each other; the place is the only thing they share.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::backend::Destination;
use crate::catalog::unix_now;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::object::ObjectKey;
use crate::plan::{Plan, Shard};
use crate::report::CatalogDigest;

/// Version of a shard report.
pub const SHARD_REPORT_VERSION: u32 = 1;
/// A shard report larger than this is not one (read back whole).
const MAX_REPORT_BYTES: usize = 1 << 20;

/// What one node publishes about its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub report_version: u32,
    pub plan_id: String,
    pub shard: u32,
    pub shards: u32,
    pub source: String,
    pub destination: Option<String>,
    /// Unix seconds.
    pub unix: u64,
    pub done: bool,
    pub verdict: String,
    pub objects: u64,
    pub drained: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Over the shard's objects (see `commands::sync::DIGEST_LINES`).
    pub digest: CatalogDigest,
}

/// Where a shard's report is kept at the place.
pub fn report_key(plan_id: &str, shard: u32) -> String {
    format!(
        "{}{plan_id}/shard-{shard}.json",
        crate::verify::RESERVED_PREFIX
    )
}

/// Builds this node's report and writes it at `place`.
pub async fn publish(node: &Node, shard: &Shard, place: &Arc<dyn Destination>) -> Result<String> {
    let r = crate::report::build(node)?;
    let digest = crate::report::digest(&node.catalog)?;
    let doc = ShardReport {
        report_version: SHARD_REPORT_VERSION,
        plan_id: shard.plan_id.clone(),
        shard: shard.index,
        shards: shard.shards,
        source: shard.source.clone(),
        destination: Some(place.url()),
        unix: unix_now(),
        done: r.done,
        verdict: r.verdict.clone(),
        objects: r.objects,
        drained: r.drained + r.verified,
        failed: r.failed,
        bytes: r.logical_bytes,
        digest,
    };
    let json = serde_json::to_vec_pretty(&doc).map_err(|e| Error::Encode {
        what: "the shard report".into(),
        message: e.to_string(),
    })?;
    let key = report_key(&shard.plan_id, shard.index);
    crate::backend::put_document(place.as_ref(), &key, json, doc.unix).await?;
    tracing::info!(
        "{}: report published at {}/{key}",
        shard.describe(),
        place.url()
    );
    Ok(key)
}

/// One shard as the fleet sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardLine {
    pub shard: u32,
    /// "done", "not done", "missing" or "invalid".
    pub state: String,
    pub verdict: String,
    pub report: Option<ShardReport>,
}

/// The fleet's verdict over every shard of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub plan_id: String,
    pub source: String,
    pub place: String,
    pub shards: Vec<ShardLine>,
    pub objects: u64,
    pub bytes: u64,
    pub done: bool,
    pub verdict: String,
}

/// Reads every shard's report of `plan` at `place` and merges them.
pub async fn gather(place: Arc<dyn Destination>, plan: &Plan) -> Result<Fleet> {
    let mut lines = vec![];
    for r in &plan.shards {
        lines.push(read_one(place.as_ref(), plan, r.index).await);
    }
    let (mut objects, mut bytes) = (0, 0);
    for l in lines.iter().filter_map(|l| l.report.as_ref()) {
        objects += l.objects;
        bytes += l.bytes;
    }
    let not_done: Vec<String> = lines
        .iter()
        .filter(|l| l.state != "done")
        .map(|l| format!("shard {} {}", l.shard, l.verdict))
        .collect();
    let done = not_done.is_empty();
    Ok(Fleet {
        plan_id: plan.id.clone(),
        source: plan.source.clone(),
        place: place.url(),
        verdict: match done {
            true => format!(
                "DONE: all {} shards of plan {} are DONE, {objects} objects",
                lines.len(),
                plan.id
            ),
            false => format!(
                "NOT DONE: {} of {} shards: {}",
                not_done.len(),
                lines.len(),
                not_done.join("; ")
            ),
        },
        shards: lines,
        objects,
        bytes,
        done,
    })
}

/// One shard's report: missing, unreadable, of another plan, or as it says.
async fn read_one(place: &dyn Destination, plan: &Plan, shard: u32) -> ShardLine {
    let line = |state: &str, verdict: String, report| ShardLine {
        shard,
        state: state.into(),
        verdict,
        report,
    };
    let key = ObjectKey::from(report_key(&plan.id, shard).as_str());
    let bytes = match read_all(place, &key).await {
        Ok(b) => b,
        Err(e) if e.is_gone() => {
            return line("missing", "has not reported".into(), None);
        }
        Err(e) => return line("invalid", format!("report unreadable: {e}"), None),
    };
    let r: ShardReport = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return line(
                "invalid",
                format!("report is not a shard report: {e}"),
                None,
            );
        }
    };
    if r.plan_id != plan.id || r.shard != shard {
        let why = format!("report is for shard {} of plan {}", r.shard, r.plan_id);
        return line("invalid", why, Some(r));
    }
    let state = if r.done { "done" } else { "not done" };
    line(state, r.verdict.clone(), Some(r))
}

async fn read_all(place: &dyn Destination, key: &ObjectKey) -> Result<Vec<u8>> {
    let mut r = place.get(key).await?;
    let mut out = vec![];
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::object(key, format!("reading the shard report: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > MAX_REPORT_BYTES {
            return Err(Error::object(key, "larger than a shard report can be"));
        }
    }
}

/// The fleet's verdict as Prometheus text (`barge_fleet_*`), for a textfile collector or
/// a scrape of the node that gathered it.
pub fn metrics(f: &Fleet) -> String {
    let mut out = String::new();
    let plan = &f.plan_id;
    out.push_str("# HELP barge_fleet_done 1 when every shard of the plan reports DONE\n");
    out.push_str("# TYPE barge_fleet_done gauge\n");
    out.push_str(&format!(
        "barge_fleet_done{{plan=\"{plan}\"}} {}\n",
        u8::from(f.done)
    ));
    out.push_str("# HELP barge_fleet_shards Shards of the plan by state\n");
    out.push_str("# TYPE barge_fleet_shards gauge\n");
    for state in ["done", "not done", "missing", "invalid"] {
        let n = f.shards.iter().filter(|s| s.state == state).count();
        let label = state.replace(' ', "_");
        out.push_str(&format!(
            "barge_fleet_shards{{plan=\"{plan}\",state=\"{label}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP barge_fleet_objects Objects the shards' reports count\n");
    out.push_str("# TYPE barge_fleet_objects gauge\n");
    out.push_str(&format!(
        "barge_fleet_objects{{plan=\"{plan}\"}} {}\n",
        f.objects
    ));
    out.push_str("# HELP barge_fleet_shard_done 1 when the shard reports DONE\n");
    out.push_str("# TYPE barge_fleet_shard_done gauge\n");
    for s in &f.shards {
        out.push_str(&format!(
            "barge_fleet_shard_done{{plan=\"{plan}\",shard=\"{}\"}} {}\n",
            s.shard,
            u8::from(s.state == "done")
        ));
    }
    out
}
