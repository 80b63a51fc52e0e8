//! The `barge` command line: parses options, calls the library's commands
//! (`barge::commands`) and prints what they return. Exit codes: 0 done/ok, 1 error,
//! 2 usage error (clap), 3 finished with failed objects or NOT DONE.

#![forbid(unsafe_code)]

mod actions;
mod bench;
mod cli;
mod ship;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use barge::backend::FILE_READERS;
use barge::commands::daemon::{self, DaemonOptions};

use crate::cli::{Cli, Cmd, Global, LogFormat};

/// Exit code of a run that finished with failed objects, or a report that is NOT DONE
/// (2 is clap's usage error).
const NOT_DONE: u8 = 3;

fn init_logging(g: &Global) {
    use tracing_subscriber::EnvFilter;
    let default = if g.quiet { "error" } else { "info" };
    let filter = EnvFilter::try_from_env("BARGE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: the journal and the serial console get plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).fmt_fields(escaped_fields()).init(),
    }
}

/// Text log fields with their control characters escaped (`barge::object::escaped`):
/// an object name or a server's reply in a message cannot forge a log line or drive the
/// terminal. JSON logs escape them by themselves.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = barge::object::escaped(&text);
        match field.name() {
            "message" => write!(w, "{text}"),
            name => write!(w, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// An error as the last line the binary prints, control characters escaped.
fn print_error(e: &anyhow::Error) {
    eprintln!("error: {}", barge::object::escaped(&format!("{e:#}")));
}

/// Runs the command: one call into the library and its printing per subcommand.
async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match &cli.cmd {
        Cmd::Init { args, force } => actions::init(g, args, *force),
        Cmd::List { source, keys } => actions::list(g, source, *keys).await,
        Cmd::Ingest {
            source,
            inventory,
            resume_listing_only,
            tune,
        } => {
            let l = actions::Listing::new(inventory, *resume_listing_only);
            actions::ingest(g, source, &l, tune).await
        }
        Cmd::Drain { dest, tune } => actions::drain(g, dest, tune).await,
        Cmd::Migrate {
            source,
            dest,
            inventory,
            resume_listing_only,
            tune,
        } => {
            let l = actions::Listing::new(inventory, *resume_listing_only);
            actions::migrate(g, source, dest, &l, tune).await
        }
        Cmd::Sync {
            source,
            dest,
            interval,
            passes,
            deletes,
            keep_deleted,
            tune,
        } => {
            let o = barge::commands::sync::SyncOptions {
                max_delete: deletes.max_delete,
                max_delete_total: deletes.max_delete_total,
                keep_deleted: *keep_deleted,
                passes: *passes,
                interval: interval.map(std::time::Duration::from_secs),
            };
            actions::sync(g, source, dest, &o, tune).await
        }
        Cmd::Gateway {
            source,
            dest,
            listen,
            credentials,
            bucket,
            domain,
            insecure_http,
            tls_cert,
            tls_key,
            interval,
            passes,
            deletes,
            tune,
        } => {
            let bucket = match (bucket, source) {
                (Some(b), _) => b.clone(),
                (None, Some(source)) => barge::gateway::bucket_of(source)?,
                (None, None) => anyhow::bail!("--bucket: needed without --source"),
            };
            let o = barge::gateway::GatewayOptions {
                listen: listen.clone(),
                credentials: credentials.clone(),
                insecure_http: *insecure_http,
                tls: tls_cert.clone().zip(tls_key.clone()),
                bucket,
                domain: domain.clone(),
            };
            let p = barge::commands::sync::SyncOptions {
                max_delete: deletes.max_delete,
                max_delete_total: deletes.max_delete_total,
                keep_deleted: false,
                passes: *passes,
                interval: interval.map(std::time::Duration::from_secs),
            };
            actions::gateway(g, (source.as_deref(), dest), &o, &p, tune).await
        }
        Cmd::Cutover {
            source,
            dest,
            full,
            publish,
            deletes,
            tune,
        } => {
            let o = barge::commands::sync::CutoverOptions {
                max_delete: deletes.max_delete,
                max_delete_total: deletes.max_delete_total,
                full: *full,
                publish: *publish,
            };
            actions::cutover(g, source, dest, &o, tune).await
        }
        Cmd::Verify { dest, source, full } => {
            actions::verify(g, dest, source.as_deref(), *full).await
        }
        Cmd::Report {
            fleet: Some(place),
            metrics,
            watch,
            ..
        } => actions::fleet(g, place, metrics.as_deref(), *watch).await,
        Cmd::Report { csv, chart, .. } => actions::report(g, csv.as_deref(), chart.as_deref()),
        Cmd::Plan {
            source,
            shards,
            out,
            publish,
            inventory,
            new_fleet_key,
        } => {
            actions::plan(
                g,
                source,
                *shards,
                out.as_deref(),
                publish.as_deref(),
                inventory.as_deref(),
                new_fleet_key.as_deref(),
            )
            .await
        }
        Cmd::Fsck => actions::fsck(g),
        Cmd::Daemon { self_test } => {
            let o = DaemonOptions {
                http: g.http_options(),
                self_test: *self_test,
            };
            daemon::run(&g.settings(None), &o).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Seal { out } => ship::seal(g, out.as_deref()),
        Cmd::Import {
            drives,
            unlock_code,
            unlock_code_file,
        } => ship::import(
            g,
            drives,
            unlock_code.as_deref(),
            unlock_code_file.as_deref(),
        ),
        Cmd::Erase {
            drives,
            force,
            confirm,
            certificate_dir,
        } => ship::erase(g, drives, *force, confirm, certificate_dir.as_deref()),
        Cmd::Drives { action: Some(a) } => ship::drives(g, a),
        Cmd::Drives { action: None } => actions::drives(g),
        Cmd::Reclaim => actions::reclaim(g),
        Cmd::Tui {
            connect,
            token_file,
        } => actions::tui(g, connect.as_deref(), token_file.as_deref()).await,
        Cmd::Status => actions::status(g).await,
        Cmd::Sample { out, size, seed } => actions::sample(out, *size, *seed),
        Cmd::Demo { dir, size } => actions::demo(g, dir, *size).await,
        Cmd::Bench(_) => unreachable!("handled before the runtime starts"),
    }
}

/// jemalloc, configured in `.cargo/config.toml`: with glibc's malloc the peak RSS of a
/// migrate grew 1.7× from 50,000 to 500,000 small objects while the live heap grew
/// 1.45× (its per-thread arenas keep freed memory); with this one, 1.15-1.25×.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Threads of tokio's blocking pool beside the ones chunking objects in flight.
/// Those are at most an endpoint's window (`--max-concurrency`) or a directory source's
/// file readers ([`FILE_READERS`]); this room covers a directory destination's file
/// writers (`backend::local::FILE_WRITERS`), the long-running walks, scans and merges,
/// and decrypting large drained chunks (which only queue when it is full: every
/// blocking task waits on async work or a dedicated
/// thread, never on another blocking task). Tokio's default cap (512) let a migrate of a
/// million small files grow to 200+ mostly idle threads (a task finding no idle thread
/// at the instant it is spawned gets a new one), each keeping its allocator cache: most
/// of the peak RSS's growth from 100,000 to 1,000,000 objects.
const BLOCKING_THREADS_BESIDE_WINDOW: usize = 32;

/// The blocking pool's cap for an endpoint window of `max_concurrency` (see
/// [`BLOCKING_THREADS_BESIDE_WINDOW`]).
fn blocking_threads(max_concurrency: usize) -> usize {
    max_concurrency.max(FILE_READERS) + BLOCKING_THREADS_BESIDE_WINDOW
}

/// Raises the soft limit of open files to the hard one. Each staged segment, object in
/// flight, endpoint connection and status client holds a descriptor, and the soft
/// limit (often 1024, or lower under a service manager) is a default, not a budget;
/// the status API bounds its own connections (`monitor::server::MAX_CONNECTIONS`).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    raise_open_files_limit();
    if let Cmd::Bench(a) = &cli.cmd {
        // Benches drive their own threads; they must not run inside the async runtime.
        return bench::run(a).unwrap_or_else(|e| {
            print_error(&e);
            ExitCode::FAILURE
        });
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads(cli.global.ends.max_concurrency))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            ExitCode::FAILURE
        }
    }
}
