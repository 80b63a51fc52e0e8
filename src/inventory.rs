//! S3 Inventory as the listing (`--inventory`): the source's objects come from the
//! inventory AWS delivers to a bucket (`manifest.json`, `manifest.checksum`, and CSV.gz
//! or Parquet data files), with no List request to the source.
//!
//! * `manifest.json` is checked against `manifest.checksum` (the MD5 of the manifest,
//!   in hex), each data file against the manifest's `MD5checksum` before a row of it is
//!   used: a damaged inventory is refused, naming the file.
//! * Rows give key, size, ETag and, in "all versions" inventories, `IsLatest` and
//!   `IsDeleteMarker`: only the latest version that is not a delete marker is moved.
//! * Data files are fetched one at a time into the state directory's scratch space and
//!   read from there on a blocking thread: memory does not grow with the inventory.
//! * Each data file is a key range of the listing checkpoint: a listing killed halfway
//!   resumes at the first data file not yet finished.
//!
//! An inventory is a snapshot: objects written after its date are found by the next
//! listing pass (an ingest without `--inventory`); objects deleted since it are counted
//! as vanished by the ingest, not failed.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use md5::{Digest, Md5};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::backend::throttle::Throttle;
use crate::backend::{
    Destination, EndpointOptions, ListFrom, Listed, Opened, RangeMark, Source, s3, swift,
};
use crate::error::{Error, Result};
use crate::object::{ObjectKey, ObjectMeta};

/// The option that names an inventory, for messages.
const OPTION: &str = "--inventory";

/// The parts of `manifest.json` barge reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub source_bucket: String,
    pub file_format: String,
    pub file_schema: String,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    pub files: Vec<DataFile>,
}

/// One data file of the inventory.
#[derive(Debug, Clone, Deserialize)]
pub struct DataFile {
    /// Its key in the bucket the inventory was delivered to.
    pub key: String,
    #[serde(default)]
    pub size: u64,
    #[serde(rename = "MD5checksum")]
    pub md5: String,
}

/// The data file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Parquet,
}

/// Where the inventory's files are read from.
enum Location {
    /// A local copy of the bucket the inventory was delivered to: data file keys are
    /// paths under `root` (found as the nearest parent of the manifest that holds the
    /// first data file).
    Local { manifest: PathBuf },
    /// The bucket (or container) itself.
    Store { store: Arc<dyn Destination> },
}

/// An object of an inventory row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// False for a version that is not the latest (versioned inventories).
    pub latest: bool,
    pub delete_marker: bool,
    /// Unix seconds (`LastModifiedDate`).
    pub modified: Option<u64>,
}

/// A source listed from an inventory, read from `inner`.
pub struct InventorySource {
    inner: Arc<dyn Source>,
    url: String,
    location: Location,
    manifest_key: String,
    scratch: PathBuf,
    /// The source's key prefix ("" or ending in "/"): rows outside it are not listed.
    prefix: String,
    bucket: String,
}

impl InventorySource {
    /// Opens the inventory named by `manifest` (a path, `s3://bucket/key` or
    /// `swift://container/name`) for the source `inner` at `source_url`; data files are
    /// fetched into `scratch`. Stores are reached with `opts` (the source's options).
    pub async fn new(
        inner: Arc<dyn Source>,
        source_url: &str,
        manifest: &str,
        opts: &EndpointOptions,
        scratch: PathBuf,
    ) -> Result<Self> {
        let (bucket, prefix) = match crate::backend::scheme(source_url) {
            Some("s3") => s3::parse_url(source_url)?,
            Some("swift") => swift::parse_url(source_url)?,
            _ => {
                return Err(Error::option(
                    OPTION,
                    format!("{source_url}: an inventory lists an s3:// or swift:// source"),
                ));
            }
        };
        let prefix = match prefix.is_empty() || prefix.ends_with('/') {
            true => prefix,
            false => format!("{prefix}/"),
        };
        let (location, manifest_key) = match crate::backend::scheme(manifest) {
            Some(scheme @ ("s3" | "swift")) => {
                let (b, key) = match scheme {
                    "s3" => s3::parse_url(manifest)?,
                    _ => swift::parse_url(manifest)?,
                };
                let root = format!("{scheme}://{b}");
                let store = crate::backend::open_destination(&root, opts).await?;
                (Location::Store { store }, key)
            }
            Some("file") | None => {
                let p = PathBuf::from(manifest.strip_prefix("file://").unwrap_or(manifest));
                (Location::Local { manifest: p }, String::new())
            }
            Some(other) => {
                return Err(Error::option(
                    OPTION,
                    format!("{manifest}: unsupported scheme {other}:// (a path, s3://, swift://)"),
                ));
            }
        };
        Ok(InventorySource {
            url: inner.url(),
            inner,
            location,
            manifest_key,
            scratch,
            prefix,
            bucket,
        })
    }

    /// Reads and checks the manifest.
    pub async fn manifest(&self) -> Result<Manifest> {
        let (text, sum_name) = match &self.location {
            Location::Local { manifest } => {
                let text = std::fs::read(manifest)
                    .map_err(|e| Error::io("reading the inventory manifest", manifest, e))?;
                (text, manifest.with_file_name("manifest.checksum"))
            }
            Location::Store { store } => {
                let text = read_all(store.as_ref(), &self.manifest_key).await?;
                let sum = sibling(&self.manifest_key, "manifest.checksum");
                let want = read_all(store.as_ref(), &sum).await?;
                check_md5(&text, &want, &self.manifest_key)?;
                return self.parse_manifest(&text);
            }
        };
        let want = std::fs::read(&sum_name)
            .map_err(|e| Error::io("reading the inventory checksum", &sum_name, e))?;
        check_md5(&text, &want, &self.manifest_name())?;
        self.parse_manifest(&text)
    }

    fn manifest_name(&self) -> String {
        match &self.location {
            Location::Local { manifest } => manifest.display().to_string(),
            Location::Store { store } => format!("{}/{}", store.url(), self.manifest_key),
        }
    }

    fn parse_manifest(&self, text: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(text).map_err(|e| Error::Decode {
            what: format!("inventory manifest {}", self.manifest_name()),
            message: e.to_string(),
        })?;
        if m.source_bucket != self.bucket {
            return Err(Error::option(
                OPTION,
                format!(
                    "{} is an inventory of bucket {}, but the source is {}",
                    self.manifest_name(),
                    m.source_bucket,
                    self.url
                ),
            ));
        }
        format_of(&m, &self.manifest_name())?;
        Ok(m)
    }

    /// Lists every data file not done in `from`, a mark after each.
    async fn list_files(&self, tx: &mpsc::Sender<Listed>, from: &ListFrom) -> Result<()> {
        let m = self.manifest().await?;
        tracing::info!(
            "listing {} from the inventory {} (taken at {} ms since the epoch): objects written since are found by the next listing without --inventory",
            self.url,
            self.manifest_name(),
            m.creation_timestamp.as_deref().unwrap_or("an unknown time")
        );
        let format = format_of(&m, &self.manifest_name())?;
        let schema = match format {
            Format::Csv => Some(Schema::parse(&m.file_schema, &self.manifest_name())?),
            Format::Parquet => None,
        };
        for f in &m.files {
            let range = format!("inventory:{}", f.key);
            let announce = Listed::Range {
                range: range.clone(),
                mark: RangeMark::default(),
            };
            if tx.send(announce).await.is_err() {
                return Ok(());
            }
        }
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| Error::io("creating the inventory scratch directory", &self.scratch, e))?;
        for f in &m.files {
            let range = format!("inventory:{}", f.key);
            if from.get(&range).is_some_and(|m| m.done) {
                continue;
            }
            let local = self.fetch(f).await?;
            let rows = self.send_rows(&local, f, schema.clone(), tx).await;
            if matches!(self.location, Location::Store { .. }) {
                let _ = std::fs::remove_file(&local);
            }
            if !rows? {
                return Ok(());
            }
            let mark = RangeMark {
                after: Some(f.key.clone()),
                until: None,
                done: true,
                ..Default::default()
            };
            if tx.send(Listed::Mark { range, mark }).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The data file on local disk, its MD5 checked.
    async fn fetch(&self, f: &DataFile) -> Result<PathBuf> {
        let path = match &self.location {
            Location::Local { manifest } => local_data_file(manifest, &f.key)?,
            Location::Store { store } => {
                let name = f.key.replace('/', "_");
                let path = self.scratch.join(name);
                let bytes = read_all(store.as_ref(), &f.key).await?;
                tokio::fs::write(&path, &bytes)
                    .await
                    .map_err(|e| Error::io("writing an inventory data file to", &path, e))?;
                path
            }
        };
        let p = path.clone();
        let (sum, len) = tokio::task::spawn_blocking(move || md5_of_file(&p))
            .await
            .map_err(|e| Error::task("inventory checksum", e))??;
        if f.size > 0 && len != f.size {
            return Err(Error::Source {
                url: self.url.clone(),
                message: format!(
                    "inventory data file {} ({}) is damaged: {len} bytes, the manifest says {}",
                    f.key,
                    path.display(),
                    f.size
                ),
            });
        }
        if !sum.eq_ignore_ascii_case(f.md5.trim()) {
            return Err(Error::Source {
                url: self.url.clone(),
                message: format!(
                    "inventory data file {} ({}) is damaged: its MD5 is {sum}, the manifest says {}",
                    f.key,
                    path.display(),
                    f.md5
                ),
            });
        }
        Ok(path)
    }

    /// Reads the rows of one data file on a blocking thread and sends the objects to
    /// move. False once the receiver is gone.
    async fn send_rows(
        &self,
        path: &Path,
        f: &DataFile,
        schema: Option<Schema>,
        tx: &mpsc::Sender<Listed>,
    ) -> Result<bool> {
        let (path, name, tx) = (path.to_path_buf(), f.key.clone(), tx.clone());
        let (bucket, prefix) = (self.bucket.clone(), self.prefix.clone());
        tokio::task::spawn_blocking(move || {
            let mut send = |row: Row| -> bool {
                if !row.latest || row.delete_marker {
                    return true;
                }
                let Some(rel) = row.key.strip_prefix(&prefix) else {
                    return true;
                };
                let meta = ObjectMeta {
                    key: ObjectKey::from(rel),
                    size: row.size,
                    version: format!("\"{}\"", row.etag.trim_matches('"')),
                    content_type: None,
                    user_meta: vec![],
                    modified: row.modified,
                };
                tx.blocking_send(Listed::Object(meta)).is_ok()
            };
            match &schema {
                Some(schema) => read_csv(&path, &name, schema, &bucket, &mut send),
                None => read_parquet(&path, &name, &mut send),
            }
        })
        .await
        .map_err(|e| Error::task("inventory reader", e))?
    }
}

#[async_trait]
impl Source for InventorySource {
    fn url(&self) -> String {
        self.url.clone()
    }

    async fn list(&self, tx: mpsc::Sender<Listed>) -> Result<()> {
        self.list_files(&tx, &ListFrom::new()).await
    }

    async fn list_resumable(&self, tx: mpsc::Sender<Listed>, from: &ListFrom) -> Result<()> {
        self.list_files(&tx, from).await
    }

    async fn open(&self, meta: &ObjectMeta) -> Result<Opened> {
        self.inner.open(meta).await
    }

    async fn check_unchanged(&self, meta: &ObjectMeta) -> Result<()> {
        self.inner.check_unchanged(meta).await
    }

    fn throttle(&self) -> Option<Arc<Throttle>> {
        self.inner.throttle()
    }

    fn vanishes(&self) -> bool {
        true
    }

    async fn confirm_gone(&self, meta: &ObjectMeta) -> Result<bool> {
        self.inner.confirm_gone(meta).await
    }
}

/// The format of the manifest's data files; ORC is refused.
fn format_of(m: &Manifest, name: &str) -> Result<Format> {
    match m.file_format.to_ascii_lowercase().as_str() {
        "csv" => Ok(Format::Csv),
        "parquet" => Ok(Format::Parquet),
        other => Err(Error::option(
            OPTION,
            format!(
                "{name}: data files in {other} are not supported (use an inventory in CSV or Parquet)"
            ),
        )),
    }
}

/// The key of a file next to `key` (same "directory").
fn sibling(key: &str, name: &str) -> String {
    match key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_string(),
    }
}

/// Fails unless `want` (hex, maybe with whitespace) is the MD5 of `data`.
fn check_md5(data: &[u8], want: &[u8], name: &str) -> Result<()> {
    let got = hex::encode(Md5::digest(data));
    let want = String::from_utf8_lossy(want);
    let want = want.split_whitespace().next().unwrap_or("");
    if got.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    Err(Error::option(
        OPTION,
        format!("{name} does not match its manifest.checksum (MD5 {got}, checksum says {want})"),
    ))
}

/// The MD5 (hex) and length of a file.
fn md5_of_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io("opening an inventory data file", path, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading an inventory data file", path, e))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), len));
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
}

/// A whole object of a store (manifests and data files).
async fn read_all(store: &dyn Destination, key: &str) -> Result<Vec<u8>> {
    let mut r = store.get(&ObjectKey::from(key)).await?;
    let mut out = vec![];
    r.read_to_end(&mut out)
        .await
        .map_err(|e| Error::io("reading inventory file", key, e))?;
    Ok(out)
}

/// A data file of a local inventory copy: `key` under the nearest parent of the
/// manifest that holds it.
fn local_data_file(manifest: &Path, key: &str) -> Result<PathBuf> {
    let mut dir = manifest.parent();
    while let Some(d) = dir {
        let p = d.join(key);
        if p.is_file() {
            return Ok(p);
        }
        dir = d.parent();
    }
    Err(Error::option(
        OPTION,
        format!(
            "data file {key} of {} is not under any parent directory of the manifest",
            manifest.display()
        ),
    ))
}

/// Column positions of a CSV inventory, from `fileSchema` (a Parquet file names its
/// own columns).
#[derive(Debug, Clone)]
struct Schema {
    bucket: Option<usize>,
    key: usize,
    size: Option<usize>,
    etag: Option<usize>,
    latest: Option<usize>,
    delete_marker: Option<usize>,
    modified: Option<usize>,
    columns: usize,
}

impl Schema {
    fn parse(schema: &str, name: &str) -> Result<Schema> {
        let cols: Vec<String> = schema
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let at = |n: &str| cols.iter().position(|c| c == n);
        let key = at("key").ok_or_else(|| {
            Error::option(OPTION, format!("{name}: fileSchema has no Key column"))
        })?;
        Ok(Schema {
            bucket: at("bucket"),
            key,
            size: at("size"),
            etag: at("etag"),
            latest: at("islatest"),
            delete_marker: at("isdeletemarker"),
            modified: at("lastmodifieddate"),
            columns: cols.len(),
        })
    }
}

/// Reads a gzip CSV data file (every field quoted, keys URL-encoded, no header).
fn read_csv(
    path: &Path,
    name: &str,
    schema: &Schema,
    bucket: &str,
    send: &mut dyn FnMut(Row) -> bool,
) -> Result<bool> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io("opening an inventory data file", path, e))?;
    let gz = BufReader::new(flate2::read::MultiGzDecoder::new(f));
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(gz);
    for (n, rec) in r.records().enumerate() {
        let bad = |m: String| Error::Decode {
            what: format!("inventory data file {name}, row {}", n + 1),
            message: m,
        };
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        if rec.len() < schema.columns {
            return Err(bad(format!(
                "{} fields where fileSchema names {}",
                rec.len(),
                schema.columns
            )));
        }
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("");
        if schema.bucket.is_some() && get(schema.bucket) != bucket {
            continue;
        }
        let key = url_decode(get(Some(schema.key))).map_err(bad)?;
        let size = match get(schema.size) {
            "" => 0,
            s => s
                .parse()
                .map_err(|_| bad(format!("size {s:?} is not a number")))?,
        };
        let row = Row {
            key,
            size,
            etag: get(schema.etag).to_string(),
            latest: schema.latest.is_none() || get(schema.latest) != "false",
            delete_marker: get(schema.delete_marker) == "true",
            modified: crate::object::parse_utc(get(schema.modified)),
        };
        if !send(row) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A key as CSV inventories write it: URL-encoded (`+` for a space).
fn url_decode(s: &str) -> std::result::Result<String, String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("key {s:?} is not UTF-8 once decoded"))
}

/// Reads a Parquet data file (keys not encoded).
fn read_parquet(path: &Path, name: &str, send: &mut dyn FnMut(Row) -> bool) -> Result<bool> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let bad = |m: String| Error::Decode {
        what: format!("inventory data file {name}"),
        message: m,
    };
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io("opening an inventory data file", path, e))?;
    let reader = SerializedFileReader::new(f).map_err(|e| bad(e.to_string()))?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    for row in rows {
        let row = row.map_err(|e| bad(e.to_string()))?;
        let mut r = Row {
            key: String::new(),
            size: 0,
            etag: String::new(),
            latest: true,
            delete_marker: false,
            modified: None,
        };
        let mut has_key = false;
        for (col, value) in row.get_column_iter() {
            // AWS names Parquet columns in snake case (`e_tag`, `is_latest`).
            match (col.to_ascii_lowercase().replace('_', "").as_str(), value) {
                ("key", Field::Str(s)) => {
                    r.key = s.clone();
                    has_key = true;
                }
                ("size", Field::Long(n)) => r.size = (*n).max(0) as u64,
                ("size", Field::Int(n)) => r.size = (*n).max(0) as u64,
                ("etag", Field::Str(s)) => r.etag = s.clone(),
                ("islatest", Field::Bool(b)) => r.latest = *b,
                ("isdeletemarker", Field::Bool(b)) => r.delete_marker = *b,
                ("lastmodifieddate", Field::TimestampMillis(ms)) => {
                    r.modified = u64::try_from(*ms / 1000).ok();
                }
                _ => {}
            }
        }
        if !has_key {
            return Err(bad("a row without a Key".into()));
        }
        if !send(r) {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(url_decode("a%20b+c%2Bd%2Fe").unwrap(), "a b c+d/e");
        assert!(url_decode("%FF").is_err());
    }

    #[test]
    fn a_schema_without_a_key_is_refused() {
        assert!(Schema::parse("Bucket, Size", "m").is_err());
        let s = Schema::parse(
            "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size",
            "m",
        )
        .unwrap();
        assert_eq!((s.key, s.latest, s.size), (1, Some(3), Some(5)));
    }
}
