//! barge: the engine of a bulk-transfer appliance.
//!
//! Stages, one module each: [`ingest`] (list + fetch + chunk + stage), [`drain`]
//! (rebuild + write to the destination), [`reconcile`] (a sync pass's deletions),
//! [`verify`] and [`report`] (prove done).
//! Supporting layers: [`catalog`] (RocksDB), [`staging`] (segment files, io_uring),
//! [`crypto`] (keys, chunk ids, AES-256-GCM), [`chunker`] (FastCDC), [`backend`]
//! (sources and destinations). [`commands`] holds what each `barge` command does; the
//! binary only parses and prints. See ARCHITECTURE.md for the map and the invariants.

#![deny(unsafe_code)]

pub mod backend;
pub(crate) mod budget;
pub mod catalog;
pub(crate) mod checkpoint;
pub mod chunker;
pub mod commands;
pub mod crypto;
pub mod drain;
pub mod drives;
pub mod error;
pub(crate) mod failpoint;
pub mod filter;
pub mod fleet;
pub mod fleet_key;
pub mod gateway;
pub mod ingest;
pub mod inventory;
pub mod listing;
pub mod monitor;
pub mod node;
pub mod object;
pub mod passes;
pub(crate) mod pending;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod sample;
pub mod ship;
pub mod staging;
pub mod verify;

pub use error::{Error, Result};
