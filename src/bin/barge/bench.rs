//! `barge bench`: the engine's hot paths measured in isolation, one JSON line each, for
//! `benches/compare.sh` to set against fio, openssl, b3sum and restic in the same run.

use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use barge::chunker::{ChunkParams, chunk_stream};
use barge::crypto::seal::{aad, nonce};
use barge::crypto::{ChunkHasher, ChunkId, MasterKey, SealBackend, SegmentCipher};
use barge::node::{InitOptions, Node};
use barge::sample::Filler;
use barge::staging::{Stager, StagingSettings, Ticket};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// AES-256-GCM seal on one thread.
    Seal {
        #[arg(long, value_enum, default_value_t = SealBackend::AwsLc)]
        backend: SealBackend,
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        /// Record size in KiB.
        #[arg(long, default_value_t = 2048)]
        record_kib: usize,
    },
    /// Keyed BLAKE3 (chunk ids) on one thread.
    Hash {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
    },
    /// FastCDC on one thread: barge's chunker reading from memory, or with `--crate` the
    /// `fastcdc` crate's own (v2020, over the buffer in place), the reference.
    Chunk {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long = "crate")]
        reference: bool,
    },
    /// The staging write path: seal + append + fdatasync through io_uring, random chunks.
    Stage {
        /// Staging directory (on the filesystem to measure).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2048)]
        mib: usize,
        #[arg(long, default_value_t = 1 << 20)]
        block_size: usize,
        #[arg(long, default_value_t = 8)]
        queue_depth: usize,
        /// Bytes between fdatasync+catalog commits.
        #[arg(long, default_value_t = barge::staging::DEFAULT_COMMIT_BYTES)]
        commit_bytes: u64,
    },
}

fn emit(what: &str, bytes: u64, secs: f64, extra: serde_json::Value) {
    let line = serde_json::json!({
        "bench": what,
        "bytes": bytes,
        "secs": secs,
        "mb_per_s": bytes as f64 / 1e6 / secs.max(1e-9),
        "extra": extra,
    });
    println!("{line}");
}

pub fn run(a: &BenchArgs) -> Result<std::process::ExitCode> {
    match &a.what {
        What::Seal {
            backend,
            mib,
            record_kib,
        } => seal(*backend, *mib, *record_kib)?,
        What::Hash { mib } => hash(*mib),
        What::Chunk { mib, reference } => chunk(*mib, *reference)?,
        What::Stage {
            dir,
            mib,
            block_size,
            queue_depth,
            commit_bytes,
        } => {
            let settings = StagingSettings {
                block_size: *block_size,
                queue_depth: *queue_depth,
                commit_bytes: *commit_bytes,
                ..Default::default()
            };
            stage(dir, *mib, settings)?
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// AES-256-GCM sealing of `mib` MiB in records of `record_kib` KiB.
fn seal(backend: SealBackend, mib: usize, record_kib: usize) -> Result<()> {
    let c = SegmentCipher::new(backend, &[0x42; 32]);
    let rec = record_kib * 1024;
    let mut buf = Filler::new(7).bytes(rec);
    let n = (mib * 1024 * 1024 / rec).max(1);
    let id = ChunkId([1; 32]);
    let t = Instant::now();
    for i in 0..n {
        buf.truncate(rec);
        let off = (i * rec) as u64;
        c.seal(nonce(off), &aad(&id, 1, off), &mut buf)
            .map_err(|_| anyhow::anyhow!("seal failed"))?;
    }
    emit(
        "seal",
        (n * rec) as u64,
        t.elapsed().as_secs_f64(),
        serde_json::json!({"backend": format!("{backend:?}")}),
    );
    Ok(())
}

/// Keyed BLAKE3 chunk ids over `mib` MiB, 64 MiB at a time.
fn hash(mib: usize) {
    let h = ChunkHasher::new(&MasterKey::from_bytes([3; 32]));
    let buf = Filler::new(9).bytes(64 << 20);
    let n = (mib / 64).max(1);
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..n {
        acc ^= h.id(&buf).0[0];
    }
    emit(
        "hash",
        (n * buf.len()) as u64,
        t.elapsed().as_secs_f64(),
        serde_json::json!({"acc": acc}),
    );
}

/// FastCDC over `mib` MiB: barge's `chunk_stream`, or the `fastcdc` crate's iterator.
fn chunk(mib: usize, reference: bool) -> Result<()> {
    let buf = Filler::new(11).bytes(mib << 20);
    let p = ChunkParams::default();
    let t = Instant::now();
    let mut count = 0u64;
    if reference {
        count = fastcdc::v2020::FastCDC::new(&buf, p.min, p.avg, p.max).count() as u64;
    } else {
        chunk_stream(&buf[..], p, None, &Default::default(), |_| {
            count += 1;
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    emit(
        "chunk",
        buf.len() as u64,
        t.elapsed().as_secs_f64(),
        serde_json::json!({"chunks": count, "crate": reference}),
    );
    Ok(())
}

/// Staging of `mib` MiB of distinct 2 MiB chunks onto one drive under `dir`.
fn stage(dir: &Path, mib: usize, settings: StagingSettings) -> Result<()> {
    let state = dir.join(format!("bench-state-{}", std::process::id()));
    let drive = dir.join(format!("bench-drive-{}", std::process::id()));
    let (block_size, queue_depth) = (settings.block_size, settings.queue_depth);
    let opts = InitOptions {
        staging: settings,
        drives: vec![drive.clone()],
        ..Default::default()
    };
    let node = Node::init(&state, &opts)?;
    let stager = Stager::start(
        node.catalog.clone(),
        node.master.clone(),
        node.appliance_id,
        node.staging.settings.clone(),
        std::slice::from_ref(&drive),
    )?;
    // Pre-generate distinct chunks so the clock measures staging, not the filler.
    let chunks = distinct_chunks(&ChunkHasher::new(&node.master), mib);
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let t = Instant::now();
    let mut tickets = vec![];
    for (id, d) in chunks {
        tickets.push(stager.stage_blocking(id, d)?);
    }
    let engine = stager.engine();
    stager.finish()?;
    rt.block_on(async {
        for t in tickets {
            if let Ticket::Pending(rx) = t {
                rx.await
                    .context("writer stopped")?
                    .map_err(|f| anyhow::anyhow!(f.message))?;
            }
        }
        anyhow::Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let written = stager_bytes(&node)?;
    emit(
        "stage",
        written,
        secs,
        serde_json::json!({"engine": engine.map(|e| e.to_string()), "block_size": block_size, "queue_depth": queue_depth}),
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&drive);
    Ok(())
}

/// `mib` MiB as distinct 2 MiB chunks (a counter in the first 8 bytes) with their ids.
fn distinct_chunks(hasher: &ChunkHasher, mib: usize) -> Vec<(ChunkId, bytes::BytesMut)> {
    let chunk = 2 << 20;
    let n = (mib * (1 << 20) / chunk).max(1);
    let base = Filler::new(5).bytes(chunk);
    (0..n)
        .map(|i| {
            let mut d = base.clone();
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (hasher.id(&d), bytes::BytesMut::from(&d[..]))
        })
        .collect()
}

fn stager_bytes(node: &Node) -> Result<u64> {
    let mut total = 0;
    for s in node.catalog.segments()? {
        total += s?.1.data_len;
    }
    Ok(total)
}
