//! Library error type. Every variant names the thing it is about (object, file, drive,
//! option) so an operator can act on the message without reading code.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog at {path}: {message}")]
    Catalog { path: PathBuf, message: String },
    #[error("catalog record {what} is corrupt: {message}")]
    CorruptRecord { what: String, message: String },
    #[error("key: {0}")]
    Key(String),
    #[error("wrong key: {0}")]
    WrongKey(String),
    #[error("staging drive {drive}: {message}")]
    Drive { drive: PathBuf, message: String },
    #[error("staging drive {drive} is full")]
    DriveFull { drive: PathBuf },
    #[error("all staging drives are full ({drives})")]
    AllDrivesFull { drives: String },
    #[error("segment {segment} on {drive}: {message}")]
    Segment {
        segment: u64,
        drive: PathBuf,
        message: String,
    },
    #[error(
        "chunk {chunk} failed authentication (segment {segment}, offset {offset}): staged data is corrupt or the key is wrong"
    )]
    ChunkAuth {
        chunk: String,
        segment: u64,
        offset: u64,
    },
    #[error("object {key}: {message}")]
    Object { key: String, message: String },
    #[error("source {url}: {message}")]
    Source { url: String, message: String },
    #[error("destination {url}: {message}")]
    Destination { url: String, message: String },
    #[error("option {option}: {message}")]
    Option { option: String, message: String },
    #[error("state directory {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("io_uring: {0}")]
    Uring(String),
    /// A failed request, or a failure of the pipeline's own machinery (a task, a lock,
    /// an encoding); the message names which. Shown as is: one object's failed request
    /// does not stop the run.
    #[error("{0}")]
    Pipeline(String),
    #[error("{endpoint} is down: {message}; run again when it answers")]
    Unreachable { endpoint: String, message: String },
}

impl Error {
    /// Shorthand for an I/O error about a path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// An error about one object, keyed by its display name.
    pub fn object(key: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Error::Object {
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// A bad command-line or configuration option.
    pub fn option(option: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Option {
            option: option.into(),
            message: message.to_string(),
        }
    }

    /// True when the error says a disk ran out of space.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::DriveFull { .. } | Error::AllDrivesFull { .. } => true,
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}
