//! `/metrics`: the status document in the Prometheus text exposition format, encoded by
//! `prometheus-client`. A fresh registry per scrape is filled from one [`Status`], so
//! every series of a scrape comes from the same instant and the stages keep no second
//! set of counters.

use std::sync::atomic::AtomicU64;

use barge_tui::model::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type FCounter = Family<Labels, Counter<u64>>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;

fn counter(r: &mut Registry, name: &str, help: &str, rows: &[(Labels, u64)]) {
    let f = FCounter::default();
    for (l, v) in rows {
        f.get_or_create(l).inc_by(*v);
    }
    r.register(name, help, f);
}

fn gauge(r: &mut Registry, name: &str, help: &str, rows: &[(Labels, f64)]) {
    let f = FGauge::default();
    for (l, v) in rows {
        f.get_or_create(l).set(*v);
    }
    r.register(name, help, f);
}

/// A metric without labels.
fn gauge1(r: &mut Registry, name: &str, help: &str, v: f64) {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    r.register(name, help, g);
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `barge_sync_*`: the pass, the lag and the cutover estimate of a sync.
/// `barge gateway`'s families: requests by operation and by the side that served them.
fn gateway(r: &mut Registry, g: &barge_tui::model::GatewayStatus) {
    counter(
        r,
        "gateway_requests",
        "Requests the gateway answered, by operation and by the side that served them",
        &[
            (l(&[("op", "read"), ("side", "destination")]), g.reads_dest),
            (l(&[("op", "read"), ("side", "source")]), g.reads_source),
            (l(&[("op", "write"), ("side", "destination")]), g.writes),
            (l(&[("op", "delete"), ("side", "destination")]), g.deletes),
            (l(&[("op", "list"), ("side", "both")]), g.lists),
        ],
    );
    counter(
        r,
        "gateway_read_through_bytes",
        "Bytes streamed from the source to clients (objects not moved yet)",
        &[(vec![], g.bytes_read_through)],
    );
    counter(
        r,
        "gateway_errors",
        "Gateway requests that failed on barge's or a store's side (503)",
        &[(vec![], g.errors)],
    );
    counter(
        r,
        "gateway_yielded_keys",
        "Listed keys the passes left to the application (written or deleted through the gateway)",
        &[(vec![], g.yielded)],
    );
    counter(
        r,
        "gateway_conflicts",
        "Keys the source changed after the gateway wrote or deleted them (the destination's kept)",
        &[(vec![], g.conflicts)],
    );
}

fn sync(r: &mut Registry, st: &barge_tui::model::SyncStatus) {
    let mut sub = r.sub_registry_with_prefix("sync");
    let r = &mut sub;
    gauge1(
        r,
        "pass",
        "The sync pass running, or the last one",
        st.pass as f64,
    );
    gauge1(
        r,
        "passes_finished",
        "Sync passes that ended",
        st.passes_finished as f64,
    );
    gauge(
        r,
        "lag",
        "What is known to differ between source and destination now",
        &[
            (l(&[("unit", "objects")]), st.lag_objects as f64),
            (l(&[("unit", "bytes")]), st.lag_bytes as f64),
        ],
    );
    gauge(
        r,
        "change_rate_per_hour",
        "How fast the source changed between the last two passes",
        &[
            (l(&[("unit", "objects")]), st.change_objects_per_hour),
            (l(&[("unit", "bytes")]), st.change_bytes_per_hour),
        ],
    );
    gauge1(
        r,
        "last_pass_seconds",
        "How long the last finished pass took",
        st.last_pass_secs,
    );
    gauge(
        r,
        "last_pass_objects",
        "What the last finished pass found and did",
        &[
            (l(&[("kind", "new")]), st.last_new as f64),
            (l(&[("kind", "changed")]), st.last_changed as f64),
            (l(&[("kind", "deleted")]), st.last_deleted as f64),
            (l(&[("kind", "unchanged")]), st.last_unchanged as f64),
            (l(&[("kind", "failed")]), st.last_failed as f64),
        ],
    );
    gauge1(
        r,
        "estimated_final_pass_seconds",
        "A rough length of a cutover pass started now",
        st.estimated_final_pass_secs,
    );
    gauge(
        r,
        "phase",
        "The sync's phase (1 for the current one)",
        &[(l(&[("phase", st.phase.as_str())]), 1.0)],
    );
}

/// `encoded` (OpenMetrics text ending in `# EOF`) with the metric families `extra`
/// before its end.
pub fn with_extra(encoded: String, extra: &str) -> String {
    if extra.is_empty() {
        return encoded;
    }
    let body = encoded.strip_suffix("# EOF\n").unwrap_or(&encoded);
    format!("{body}{extra}# EOF\n")
}

/// Encodes `s` as Prometheus text.
pub fn encode_status(s: &Status) -> String {
    let mut r = Registry::with_prefix("barge");
    let t = &s.totals;
    counter(
        &mut r,
        "objects",
        "Objects per stage in this run (listed, unchanged, staged, drained, failed)",
        &[
            (l(&[("stage", "listed")]), t.listed_objects),
            (l(&[("stage", "unchanged")]), t.unchanged_objects),
            (l(&[("stage", "staged")]), t.staged_objects),
            (l(&[("stage", "drained")]), t.drained_objects),
            (l(&[("stage", "failed")]), t.failed_objects),
        ],
    );
    counter(
        &mut r,
        "bytes",
        "Logical bytes per stage in this run",
        &[
            (l(&[("stage", "listed")]), t.listed_bytes),
            (l(&[("stage", "staged")]), t.staged_bytes),
            (l(&[("stage", "drained")]), t.drained_bytes),
            (l(&[("stage", "sealed")]), s.staging.bytes_sealed),
        ],
    );
    counter(
        &mut r,
        "copied_objects",
        "Drained objects written as server-side copies of content already sent",
        &[(l(&[]), t.copied_objects)],
    );
    counter(
        &mut r,
        "copied_bytes",
        "Bytes of drained objects written as server-side copies (not sent again)",
        &[(l(&[]), t.copied_bytes)],
    );
    counter(
        &mut r,
        "drain_chunk_reads",
        "Chunks the drain read, from memory (staged moments ago by this process) or from staging",
        &[
            (l(&[("from", "memory")]), t.chunks_from_memory),
            (l(&[("from", "staging")]), t.chunks_from_staging),
        ],
    );
    gauge(
        &mut r,
        "rate_bytes_per_second",
        "Throughput per stage over the last seconds",
        &[
            (l(&[("stage", "staged")]), s.rates.staged_bytes_per_sec),
            (l(&[("stage", "drained")]), s.rates.drained_bytes_per_sec),
            (l(&[("stage", "sealed")]), s.rates.sealed_bytes_per_sec),
        ],
    );
    gauge(
        &mut r,
        "rate_objects_per_second",
        "Objects per second per stage over the last seconds",
        &[
            (l(&[("stage", "listed")]), s.rates.listed_objects_per_sec),
            (l(&[("stage", "staged")]), s.rates.staged_objects_per_sec),
            (l(&[("stage", "drained")]), s.rates.drained_objects_per_sec),
        ],
    );
    gauge1(
        &mut r,
        "listing_rate_objects_per_second",
        "Objects listed per second over the last seconds",
        s.rates.listed_objects_per_sec,
    );
    counter(
        &mut r,
        "chunks",
        "Chunks staged (new) and deduplicated in this run",
        &[
            (l(&[("kind", "new")]), s.staging.chunks_new),
            (l(&[("kind", "dedup")]), s.staging.chunks_dedup),
        ],
    );
    counter(
        &mut r,
        "chunk_bytes",
        "Plaintext bytes of new and deduplicated chunks in this run",
        &[
            (l(&[("kind", "new")]), s.staging.bytes_new),
            (l(&[("kind", "dedup")]), s.staging.bytes_dedup),
        ],
    );
    gauge1(
        &mut r,
        "dedup_ratio",
        "(new + deduplicated) / new chunk bytes of this run",
        s.staging.dedup_ratio,
    );
    let q: Vec<(Labels, f64)> = s
        .queues
        .iter()
        .map(|q| (l(&[("queue", &q.name)]), q.depth as f64))
        .collect();
    gauge(&mut r, "queue_depth", "Items waiting in a stage queue", &q);
    let q: Vec<(Labels, f64)> = s
        .queues
        .iter()
        .map(|q| (l(&[("queue", &q.name)]), q.capacity as f64))
        .collect();
    gauge(&mut r, "queue_capacity", "Capacity of a stage queue", &q);
    let drive = |f: &dyn Fn(&barge_tui::model::DriveStatus) -> f64| -> Vec<(Labels, f64)> {
        s.drives
            .iter()
            .map(|d| (l(&[("drive", &d.path)]), f(d)))
            .collect()
    };
    gauge(
        &mut r,
        "drive_size_bytes",
        "Size of the filesystem holding a staging drive",
        &drive(&|d| d.size_bytes as f64),
    );
    gauge(
        &mut r,
        "drive_used_bytes",
        "Used bytes of the filesystem holding a staging drive",
        &drive(&|d| d.used_bytes as f64),
    );
    counter(
        &mut r,
        "drive_written_bytes",
        "Bytes written to a staging drive in this run",
        &s.drives
            .iter()
            .map(|d| (l(&[("drive", &d.path)]), d.written_bytes))
            .collect::<Vec<_>>(),
    );
    gauge(
        &mut r,
        "drive_write_bytes_per_second",
        "Recent write rate of a staging drive",
        &drive(&|d| d.write_bytes_per_sec),
    );
    gauge(
        &mut r,
        "drive_full",
        "1 when the writer found the drive full",
        &drive(&|d| if d.full { 1.0 } else { 0.0 }),
    );
    let ep = |f: &dyn Fn(&barge_tui::model::Endpoint) -> f64| -> Vec<(Labels, f64)> {
        s.endpoints
            .iter()
            .map(|e| (l(&[("role", &e.role), ("endpoint", &e.url)]), f(e)))
            .collect()
    };
    let epc = |f: &dyn Fn(&barge_tui::model::Endpoint) -> u64| -> Vec<(Labels, u64)> {
        s.endpoints
            .iter()
            .map(|e| (l(&[("role", &e.role), ("endpoint", &e.url)]), f(e)))
            .collect()
    };
    gauge(
        &mut r,
        "endpoint_concurrency",
        "Adaptive concurrency window of an endpoint",
        &ep(&|e| e.concurrency),
    );
    gauge(
        &mut r,
        "endpoint_max_concurrency",
        "Concurrency cap of an endpoint",
        &ep(&|e| e.max_concurrency as f64),
    );
    gauge(
        &mut r,
        "endpoint_in_flight",
        "Requests in flight to an endpoint",
        &ep(&|e| e.in_flight as f64),
    );
    gauge(
        &mut r,
        "endpoint_latency_seconds",
        "Smoothed latency of small requests to an endpoint",
        &s.endpoints
            .iter()
            .filter_map(|e| {
                e.latency_ms
                    .map(|ms| (l(&[("role", &e.role), ("endpoint", &e.url)]), ms / 1000.0))
            })
            .collect::<Vec<_>>(),
    );
    counter(
        &mut r,
        "endpoint_requests",
        "Requests started to an endpoint",
        &epc(&|e| e.requests),
    );
    counter(
        &mut r,
        "endpoint_retries",
        "Requests retried after a transient failure",
        &epc(&|e| e.retries),
    );
    counter(
        &mut r,
        "endpoint_throttled",
        "Throttling answers (503 SlowDown, 429, 498) from an endpoint",
        &epc(&|e| e.throttled),
    );
    counter(
        &mut r,
        "endpoint_errors",
        "Requests that failed for good",
        &epc(&|e| e.errors),
    );
    gauge1(
        &mut r,
        "progress_ratio",
        "Fraction of this run's bytes at their goal",
        s.progress.fraction,
    );
    if let Some(eta) = s.progress.eta_secs {
        gauge1(
            &mut r,
            "eta_seconds",
            "Estimated seconds until the run ends",
            eta,
        );
    }
    gauge1(
        &mut r,
        "paused",
        "1 while the operator has paused the run",
        if s.paused { 1.0 } else { 0.0 },
    );
    gauge1(
        &mut r,
        "uptime_seconds",
        "Seconds since the command started",
        s.uptime_secs,
    );
    if let Some(g) = &s.gateway {
        gateway(&mut r, g);
    }
    if let Some(st) = &s.sync {
        sync(&mut r, st);
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_typed_and_named_with_the_prefix() {
        let mut s = Status::default();
        s.totals.drained_bytes = 42;
        s.endpoints.push(barge_tui::model::Endpoint {
            role: "destination".into(),
            url: "swift://c".into(),
            requests: 7,
            latency_ms: Some(12.0),
            ..Default::default()
        });
        let text = encode_status(&s);
        assert!(text.contains("# TYPE barge_bytes counter"), "{text}");
        assert!(
            text.contains("barge_bytes_total{stage=\"drained\"} 42"),
            "{text}"
        );
        assert!(
            text.contains(
                "barge_endpoint_requests_total{role=\"destination\",endpoint=\"swift://c\"} 7"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
