//! `barge tui`: the terminal dashboard of a barge node (ratatui). It talks to a running
//! node only through the status API ([`client`]), so it can watch a node over SSH with
//! `--connect`, and never slows the transfer.
//!
//! - [`model`]: the status document (the wire format, shared with the engine);
//! - [`ui`]: drawing, pure and tested against recorded documents;
//! - [`app`]: the key and refresh loop;
//! - [`client`]: the tiny HTTP client over the node's Unix socket or TCP.

#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod model;
pub mod ui;

#[cfg(test)]
mod tests;
