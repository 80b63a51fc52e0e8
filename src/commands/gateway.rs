//! `barge gateway`: the S3 endpoint over both sides (`crate::gateway`) and, in the same
//! process (the catalog has one writer), the sync passes that move the data behind it.
//!
//! Steps: open both sides, load the credentials and bind the listener, resolve the
//! writes a crash cut short (`gateway::recover`), then serve while
//! the passes run; after the last pass (`--passes`; 0: none), serve on until SIGINT or
//! SIGTERM. Without a source (after a cutover certificate proved the move whole) it
//! serves from the destination and the catalog alone, and runs no pass.

use std::sync::Arc;

use super::Settings;
use super::sync::{self, PassOutcome, SyncOptions};
use crate::backend::{open_destination, open_source};
use crate::error::{Error, Result};
use crate::gateway::{self, GatewayOptions, Shared};
use crate::monitor::Monitor;
use crate::node::Node;

/// Runs the gateway and its passes; `each` sees every pass as it ends.
pub async fn gateway(
    s: &Settings,
    node: &Node,
    (source, dest): (Option<&str>, &str),
    o: &GatewayOptions,
    passes: &SyncOptions,
    monitor: Arc<Monitor>,
    each: &mut (dyn FnMut(&PassOutcome) + Send),
) -> Result<()> {
    // 1. Both sides, as the passes open them (no source: only after a proven cutover).
    let src = match source {
        Some(source) => Some(open_source(source, &s.source).await?),
        None => {
            proven_cutover(node)?;
            None
        }
    };
    let dst = open_destination(dest, &s.dest_options(node, dest)?).await?;
    // 2. Who may call, and where.
    let auth = gateway::load_credentials(&o.credentials)?;
    let tls = match &o.tls {
        Some((cert, key)) => Some(gateway::tls_config(cert, key)?),
        None => None,
    };
    let listener = gateway::bind(o).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "gateway: bucket {} at {scheme}://{} (source {}, destination {dest})",
        o.bucket,
        o.listen,
        source.unwrap_or("closed: the move's catalog stands for it")
    );
    let shared = Shared {
        catalog: node.catalog.clone(),
        source: src,
        dest: dst,
        monitor: monitor.clone(),
        bucket: o.bucket.clone(),
        domain: o.domain.clone(),
        uploads: gateway::multipart::Uploads::new(node.state_dir.join("gateway").join("uploads")),
    };
    // 3. Writes a crash cut short, resolved before the first request.
    let r = gateway::recover::recover(&shared).await?;
    if r != gateway::recover::Recovered::default() {
        tracing::info!(
            "gateway: after a crash: {} unacknowledged writes never landed, {} landed and were recorded, {} deletes finished, {} foreign objects left alone",
            r.dropped,
            r.adopted,
            r.deleted,
            r.foreign
        );
    }
    // 4. Serve while the passes run.
    let server = gateway::serve(listener, tls, shared, auth, stopped());
    let Some(source) = source.filter(|_| passes.passes != Some(0)) else {
        return server.await;
    };
    tokio::pin!(server);
    let moved = sync::sync(s, node, source, dest, passes, monitor, each);
    tokio::select! {
        r = &mut server => return r,
        r = moved => {
            r?;
            tracing::info!("gateway: the passes ended; serving until stopped");
        }
    }
    server.await
}

/// Refuses to serve without a source unless the state directory holds a cutover
/// certificate that found both sides identical.
fn proven_cutover(node: &Node) -> Result<()> {
    let path = node.state_dir.join(sync::CERTIFICATE_FILE);
    let bad = |m: String| Error::Option {
        option: "--source".into(),
        message: m,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        bad(format!(
            "needed until `barge cutover` has proven the move whole ({}: {e})",
            path.display()
        ))
    })?;
    let cert: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "{}: not a cutover certificate: {e}",
            path.display()
        ))
    })?;
    match cert.get("done").and_then(serde_json::Value::as_bool) {
        Some(true) => Ok(()),
        _ => Err(bad(format!(
            "needed: the cutover certificate {} does not say DONE",
            path.display()
        ))),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::task("gateway signals", e));
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("{e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
