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
    #[error("chunk {chunk} is not in staging (no durable location in the catalog)")]
    ChunkMissing { chunk: String },
    #[error("object {key}: {message}")]
    Object { key: String, message: String },
    #[error("source {url}: {message}")]
    Source { url: String, message: String },
    /// The object is not there (HTTP 404, no such file).
    #[error("{what}: not found")]
    Gone { what: String },
    #[error("destination {url}: {message}")]
    Destination { url: String, message: String },
    #[error("option {option}: {message}")]
    Option { option: String, message: String },
    #[error("state directory {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("job {file}: {message}")]
    Job { file: PathBuf, message: String },
    /// A request to an endpoint failed for good: the server refused it, or the retries
    /// ran out. `message` names the request (method and object).
    #[error("{endpoint}: {message}")]
    Request { endpoint: String, message: String },
    /// A login (TempAuth, Keystone) failed or answered something unusable.
    #[error("login at {url}: {message}")]
    Login { url: String, message: String },
    /// A document a server sent (a listing, a token) could not be decoded.
    #[error("{what}: cannot decode it: {message}")]
    Decode { what: String, message: String },
    /// A record or report could not be encoded (serde).
    #[error("encoding {what}: {message}")]
    Encode { what: String, message: String },
    /// A task or thread of the pipeline ended abnormally (panicked, was cancelled, a lock
    /// was poisoned), or the pipeline is shutting down.
    #[error("{task}: {message}")]
    Task { task: String, message: String },
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

    /// `e`, about one object: a [`Error::Gone`] stays one (naming the object), anything
    /// else becomes an [`Error::Object`].
    pub fn of_object(key: impl std::fmt::Display, e: Error) -> Self {
        match e {
            Error::Gone { what } => Error::Gone {
                what: format!("object {key}: {what}"),
            },
            e => Error::object(key, e),
        }
    }

    /// A request the server refused (retrying cannot help). The endpoint is named by
    /// [`Error::at_endpoint`] once known: requests are classified before that.
    pub fn refused(message: impl Into<String>) -> Self {
        Error::Request {
            endpoint: String::new(),
            message: message.into(),
        }
    }

    /// Names the endpoint of a [`Error::Request`] that does not name one yet.
    pub fn at_endpoint(self, name: &str) -> Self {
        match self {
            Error::Request { endpoint, message } if endpoint.is_empty() => Error::Request {
                endpoint: name.to_string(),
                message,
            },
            e => e,
        }
    }

    /// A task that ended abnormally.
    pub fn task(task: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Task {
            task: task.into(),
            message: message.to_string(),
        }
    }

    /// Something that could not be encoded.
    pub fn encode(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Encode {
            what: what.into(),
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
    /// The object is not at the source (any more).
    pub fn is_gone(&self) -> bool {
        match self {
            Error::Gone { .. } => true,
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    pub fn is_no_space(&self) -> bool {
        match self {
            Error::DriveFull { .. } | Error::AllDrivesFull { .. } => true,
            Error::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}
