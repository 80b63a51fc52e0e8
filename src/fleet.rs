//! One verdict for a move split over several nodes. Each node publishes its report
//! (plan id, shard, counts, verdict, a digest over its objects) as
//! `.barge/<plan id>/shard-<i>.json` at a place every node reaches: its destination (the
//! default) or a directory. `barge report --fleet PLACE --plan FILE` reads the reports
//! of every shard of the plan and says DONE only when each one is there, carries a MAC
//! under the fleet key that verifies ([`crate::fleet_key`]), matches the plan (plan id,
//! shard, source, shard count, the place as its destination, times) and is DONE.
//! Nodes never talk to each other; the place is the only thing they share.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::backend::Destination;
use crate::catalog::{LeftOut, unix_now};
use crate::error::{Error, Result};
use crate::fleet_key::{CTX_SHARD_REPORT, FLEET_KEY_ENV, FleetKey, Mac};
use crate::node::Node;
use crate::object::ObjectKey;
use crate::plan::{Plan, Shard};
use crate::report::CatalogDigest;

/// Version of a shard report (2: `started`, `left_out`, the MAC).
pub const SHARD_REPORT_VERSION: u32 = 2;
/// A shard report larger than this is not one (read back whole).
const MAX_REPORT_BYTES: usize = 1 << 20;
/// How far a node's clock may be behind the planner's: a report whose work started
/// more than this before the plan was made is not of this plan.
pub const CLOCK_SKEW_SECS: u64 = 300;

/// What one node publishes about its shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub report_version: u32,
    pub plan_id: String,
    pub shard: u32,
    pub shards: u32,
    pub source: String,
    pub destination: Option<String>,
    /// Unix seconds: when the first run of the shard's state directory started.
    pub started: u64,
    /// Unix seconds: when the report was written.
    pub unix: u64,
    pub done: bool,
    pub verdict: String,
    pub objects: u64,
    pub drained: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Entries the shard's last listing left out of the move, and the first of them.
    pub left_out: u64,
    pub left_out_entries: Vec<LeftOut>,
    /// Over the shard's objects (see `commands::sync::DIGEST_LINES`).
    pub digest: CatalogDigest,
    /// Under the fleet key ([`crate::fleet_key`]); none when the node had no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
}

/// Where a shard's report is kept at the place.
pub fn report_key(plan_id: &str, shard: u32) -> String {
    format!(
        "{}{plan_id}/shard-{shard}.json",
        crate::verify::RESERVED_PREFIX
    )
}

/// Builds this node's report and writes it at `place`, with a MAC under `key` (without
/// one, the report is written unauthenticated and `report --fleet` calls it UNVERIFIED).
pub async fn publish(
    node: &Node,
    shard: &Shard,
    place: &Arc<dyn Destination>,
    key: Option<&FleetKey>,
) -> Result<String> {
    let r = crate::report::build(node)?;
    let digest = crate::report::digest(&node.catalog)?;
    let unix = unix_now();
    let doc = ShardReport {
        report_version: SHARD_REPORT_VERSION,
        plan_id: shard.plan_id.clone(),
        shard: shard.index,
        shards: shard.shards,
        source: shard.source.clone(),
        destination: Some(place.url()),
        started: r.runs.iter().map(|x| x.started).min().unwrap_or(unix),
        unix,
        done: r.done,
        verdict: r.verdict.clone(),
        objects: r.objects,
        drained: r.drained + r.verified,
        failed: r.failed,
        bytes: r.logical_bytes,
        left_out: r.left_out,
        left_out_entries: r.left_out_entries.clone(),
        digest,
        mac: None,
    };
    if key.is_none() {
        tracing::warn!(
            "{}: no fleet key (--fleet-key-file or {FLEET_KEY_ENV}): the report is written without a MAC, and report --fleet will call it UNVERIFIED",
            shard.describe()
        );
    }
    let json = FleetKey::sign(key, CTX_SHARD_REPORT, "the shard report", &doc)?;
    let key = report_key(&shard.plan_id, shard.index);
    crate::backend::put_document(place.as_ref(), &key, json, doc.unix).await?;
    tracing::info!(
        "{}: report published at {}/{key}",
        shard.describe(),
        place.url()
    );
    Ok(key)
}

/// The states of a shard as the fleet sees it.
pub const SHARD_STATES: [&str; 5] = ["done", "not done", "missing", "invalid", "unverified"];

/// One shard as the fleet sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ShardLine {
    pub shard: u32,
    /// One of [`SHARD_STATES`]: "unverified" is a report that says DONE and could not
    /// be checked (no fleet key); "invalid" one that was refused (its MAC, its plan,
    /// source, shard count, destination or times), with why in `verdict`.
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
    /// The reports' MACs were checked under a fleet key.
    pub verified: bool,
    /// Entries the shards' listings left out of the move (named in their reports).
    pub left_out: u64,
    pub done: bool,
    pub verdict: String,
}

/// Reads every shard's report of `plan` at `place`, checks each (its MAC under `key`,
/// and against the plan and the place) and merges them. DONE only when every report is
/// there, verified and DONE; without a key, UNVERIFIED at best.
pub async fn gather(
    place: Arc<dyn Destination>,
    plan: &Plan,
    key: Option<&FleetKey>,
) -> Result<Fleet> {
    let mut lines = vec![];
    for r in &plan.shards {
        lines.push(read_one(place.as_ref(), plan, r.index, key).await);
    }
    let (mut objects, mut bytes, mut left_out) = (0, 0, 0);
    for l in lines.iter().filter(|l| l.state != "invalid") {
        if let Some(r) = &l.report {
            objects += r.objects;
            bytes += r.bytes;
            left_out += r.left_out;
        }
    }
    let not_done: Vec<String> = lines
        .iter()
        .filter(|l| l.state != "done" && l.state != "unverified")
        .map(|l| format!("shard {} {}", l.shard, l.verdict))
        .collect();
    let done = not_done.is_empty() && key.is_some();
    let n = lines.len();
    let verdict = if !not_done.is_empty() {
        format!(
            "NOT DONE: {} of {n} shards: {}",
            not_done.len(),
            not_done.join("; ")
        )
    } else if !done {
        format!(
            "UNVERIFIED: all {n} shards of plan {} say DONE, {objects} objects, but no fleet key (--fleet-key-file or {FLEET_KEY_ENV}) was given to check that their reports are theirs: not DONE until checked",
            plan.id
        )
    } else if left_out > 0 {
        format!(
            "DONE, with {left_out} entries left out (listed below): all {n} shards of plan {} are DONE, {objects} objects",
            plan.id
        )
    } else {
        format!(
            "DONE: all {n} shards of plan {} are DONE, {objects} objects",
            plan.id
        )
    };
    Ok(Fleet {
        plan_id: plan.id.clone(),
        source: plan.source.clone(),
        place: place.url(),
        shards: lines,
        objects,
        bytes,
        verified: key.is_some(),
        left_out,
        done,
        verdict,
    })
}

/// One shard's report: missing, unreadable, refused (see [`ShardLine::state`]), or as
/// it says.
async fn read_one(
    place: &dyn Destination,
    plan: &Plan,
    shard: u32,
    key: Option<&FleetKey>,
) -> ShardLine {
    let line = |state: &str, verdict: String, report| ShardLine {
        shard,
        state: state.into(),
        verdict,
        report,
    };
    let at = ObjectKey::from(report_key(&plan.id, shard).as_str());
    let bytes = match read_all(place, &at).await {
        Ok(b) => b,
        Err(e) if e.is_gone() => {
            return line("missing", "has not reported".into(), None);
        }
        Err(e) => return line("invalid", format!("report unreadable: {e}"), None),
    };
    let r: ShardReport = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            let why = format!(
                "report refused: not a shard report of version {SHARD_REPORT_VERSION}: {e}"
            );
            return line("invalid", why, None);
        }
    };
    if let Some(k) = key
        && let Err(why) = k.check(CTX_SHARD_REPORT, &bytes)
    {
        return line("invalid", format!("report refused: {why}"), Some(r));
    }
    if let Some(why) = mismatch(&r, plan, shard, &place.url()) {
        return line("invalid", format!("report refused: {why}"), Some(r));
    }
    let state = match (r.done, key) {
        (false, _) => "not done",
        (true, None) => "unverified",
        (true, Some(_)) => "done",
    };
    line(state, r.verdict.clone(), Some(r))
}

/// Why a report is not this shard's of this plan at this place, if it is not: another
/// plan, shard, source, shard count or destination, work started before the plan was
/// made, or finished before it started.
fn mismatch(r: &ShardReport, plan: &Plan, shard: u32, place: &str) -> Option<String> {
    let shards = plan.shards.len() as u64;
    if r.report_version != SHARD_REPORT_VERSION {
        Some(format!(
            "report version {}, this barge reads {SHARD_REPORT_VERSION}",
            r.report_version
        ))
    } else if r.plan_id != plan.id || r.shard != shard {
        Some(format!("it is for shard {} of plan {}", r.shard, r.plan_id))
    } else if r.source != plan.source {
        Some(format!(
            "it is of source {}, the plan's is {}",
            r.source, plan.source
        ))
    } else if u64::from(r.shards) != shards {
        Some(format!("it counts {} shards, the plan {shards}", r.shards))
    } else if r.destination.as_deref() != Some(place) {
        Some(format!(
            "it was written for destination {}, not {place}",
            r.destination.as_deref().unwrap_or("(none)")
        ))
    } else if r.started + CLOCK_SKEW_SECS < plan.created {
        Some(format!(
            "its work started at {} (unix), before the plan was made at {}: a report of an earlier move",
            r.started, plan.created
        ))
    } else if r.unix < r.started {
        Some(format!(
            "it was finished at {} (unix), before its work started at {}",
            r.unix, r.started
        ))
    } else {
        None
    }
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
    out.push_str(
        "# HELP barge_fleet_done 1 when every shard of the plan reports DONE, verified under the fleet key\n",
    );
    out.push_str("# TYPE barge_fleet_done gauge\n");
    out.push_str(&format!(
        "barge_fleet_done{{plan=\"{plan}\"}} {}\n",
        u8::from(f.done)
    ));
    out.push_str("# HELP barge_fleet_shards Shards of the plan by state\n");
    out.push_str("# TYPE barge_fleet_shards gauge\n");
    for state in SHARD_STATES {
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
