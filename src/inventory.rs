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

use std::io::Read;
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

/// The largest `manifest.json` read (one entry of about 200 B per data file).
const MAX_MANIFEST: u64 = 64 << 20;
/// The largest `manifest.checksum` read (an MD5 in hex and whitespace).
const MAX_CHECKSUM: u64 = 4 << 10;
/// The largest data file downloaded (the manifest's `size` is the cap when it gives one).
const MAX_DATA_FILE: u64 = 64 << 30;
/// How many times its compressed size a CSV data file may inflate to. Rows carry a
/// 32-digit ETag and distinct keys: real inventories inflate 5 to 15 times; a gzip bomb
/// (a thousand times) is refused before it costs more than this many times its size.
pub const MAX_INFLATE_RATIO: u64 = 64;
/// What a CSV data file may inflate to whatever its compressed size (a small file of
/// similar keys compresses well).
pub const MIN_INFLATE_LIMIT: u64 = 64 << 20;
/// The longest CSV record: a row is a few short fields and a key of at most 1,024 bytes
/// (3 KiB URL-encoded). The reader holds one record; a longer one is refused.
pub const MAX_CSV_RECORD: usize = 64 << 10;
/// The largest Parquet footer (the file's metadata: a few KiB per row group).
const MAX_PARQUET_FOOTER: u64 = 16 << 20;
/// The largest Parquet page, compressed or not: the reader holds one page per column.
const MAX_PARQUET_PAGE: u64 = 64 << 20;
/// The most bytes of a Parquet page header read to decode it.
const MAX_PAGE_HEADER: u64 = 64 << 10;

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
                let text = read_file(manifest, MAX_MANIFEST)?;
                (text, manifest.with_file_name("manifest.checksum"))
            }
            Location::Store { store } => {
                let text = read_all(store.as_ref(), &self.manifest_key, MAX_MANIFEST).await?;
                let sum = sibling(&self.manifest_key, "manifest.checksum");
                let want = read_all(store.as_ref(), &sum, MAX_CHECKSUM).await?;
                check_md5(&text, &want, &self.manifest_key)?;
                return self.parse_manifest(&text);
            }
        };
        let want = read_file(&sum_name, MAX_CHECKSUM)?;
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
        let m = parse_manifest(text, &self.manifest_name())?;
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
                self.download(store.as_ref(), f, &path).await?;
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

    /// Streams a data file to `path`: at most the size the manifest gives (a byte more
    /// fails, naming the file), within the deadline of a GET of that size.
    async fn download(&self, store: &dyn Destination, f: &DataFile, path: &Path) -> Result<()> {
        let cap = match f.size {
            0 => MAX_DATA_FILE,
            n if n > MAX_DATA_FILE => {
                return Err(self.damaged(
                    f,
                    format!("the manifest says {n} bytes, more than {MAX_DATA_FILE}"),
                ));
            }
            n => n,
        };
        let r = store.get(&ObjectKey::from(f.key.as_str())).await?;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| Error::io("writing an inventory data file to", path, e))?;
        let deadline = crate::backend::get_deadline(cap);
        let mut body = r.take(cap + 1);
        let copy = tokio::io::copy(&mut body, &mut file);
        let n = tokio::time::timeout(deadline, copy)
            .await
            .map_err(|_| {
                self.damaged(f, format!("not downloaded within {} s", deadline.as_secs()))
            })?
            .map_err(|e| Error::io("downloading an inventory data file to", path, e))?;
        if n > cap {
            return Err(self.damaged(
                f,
                format!("the server sent more than the {cap} bytes the manifest gives"),
            ));
        }
        Ok(())
    }

    /// An error about data file `f`.
    fn damaged(&self, f: &DataFile, why: String) -> Error {
        Error::Source {
            url: self.url.clone(),
            message: format!("inventory data file {}: {why}", f.key),
        }
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

/// A whole small object of a store (the manifest, its checksum): at most `cap` bytes,
/// within the deadline of a GET of that size.
async fn read_all(store: &dyn Destination, key: &str, cap: u64) -> Result<Vec<u8>> {
    let r = store.get(&ObjectKey::from(key)).await?;
    let mut out = vec![];
    let deadline = crate::backend::get_deadline(cap);
    let mut body = r.take(cap + 1);
    let read = body.read_to_end(&mut out);
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| {
            Error::option(
                OPTION,
                format!("{key}: not read within {} s", deadline.as_secs()),
            )
        })?
        .map_err(|e| Error::io("reading inventory file", key, e))?;
    too_large(out.len() as u64, cap, key)?;
    Ok(out)
}

/// A whole small local file (the manifest, its checksum): at most `cap` bytes.
fn read_file(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io("reading the inventory", path, e))?;
    let mut out = vec![];
    f.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io("reading the inventory", path, e))?;
    too_large(out.len() as u64, cap, &path.display().to_string())?;
    Ok(out)
}

/// Fails when `len` bytes of inventory file `name` are more than `cap`.
fn too_large(len: u64, cap: u64, name: &str) -> Result<()> {
    match len > cap {
        true => Err(Error::option(
            OPTION,
            format!("{name} is larger than {cap} bytes: not an inventory file barge reads"),
        )),
        false => Ok(()),
    }
}

/// Parses and checks `manifest.json` (`name` for messages): the pure part of reading
/// an inventory's manifest, also the fuzz target's entry point.
pub fn parse_manifest(text: &[u8], name: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(text).map_err(|e| Error::Decode {
        what: format!("inventory manifest {name}"),
        message: e.to_string(),
    })?;
    format_of(&m, name)?;
    Ok(m)
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
    let compressed = f
        .metadata()
        .map_err(|e| Error::io("opening an inventory data file", path, e))?
        .len();
    csv_rows(f, compressed, name, schema, bucket, send)
}

/// The rows of a gzip CSV data file given as bytes, with the manifest's `fileSchema`:
/// the pure reader behind `--inventory` CSV files, for the fuzz target.
pub fn parse_csv(
    gz: &[u8],
    file_schema: &str,
    bucket: &str,
    send: &mut dyn FnMut(Row) -> bool,
) -> Result<bool> {
    let schema = Schema::parse(file_schema, "fileSchema")?;
    csv_rows(gz, gz.len() as u64, "data", &schema, bucket, send)
}

/// The rows of gzip CSV `gz` of `compressed` bytes (`name` for messages), inflated at
/// most to [`inflate_limit`] and one record of at most [`MAX_CSV_RECORD`] at a time.
fn csv_rows(
    gz: impl Read,
    compressed: u64,
    name: &str,
    schema: &Schema,
    bucket: &str,
    send: &mut dyn FnMut(Row) -> bool,
) -> Result<bool> {
    let text = CsvLimits::new(flate2::read::MultiGzDecoder::new(gz), compressed);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text);
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

/// What a CSV data file of `compressed` bytes may inflate to.
pub fn inflate_limit(compressed: u64) -> u64 {
    compressed
        .saturating_mul(MAX_INFLATE_RATIO)
        .max(MIN_INFLATE_LIMIT)
}

/// The inflated text of a CSV data file, refused (an I/O error the CSV reader passes
/// on, with the record it was reading) once it is longer than [`inflate_limit`] or a
/// record (up to a newline outside quotes) is longer than [`MAX_CSV_RECORD`]: the CSV
/// reader would hold a whole record, however long, in memory.
struct CsvLimits<R> {
    inner: R,
    /// Inflated bytes still allowed.
    left: u64,
    compressed: u64,
    /// Bytes of the record being read, and whether they end inside quotes.
    record: usize,
    quoted: bool,
}

impl<R> CsvLimits<R> {
    fn new(inner: R, compressed: u64) -> Self {
        CsvLimits {
            inner,
            left: inflate_limit(compressed),
            compressed,
            record: 0,
            quoted: false,
        }
    }
}

impl<R: Read> Read for CsvLimits<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "it inflates to more than {} bytes ({MAX_INFLATE_RATIO} times its {} compressed bytes, at least {MIN_INFLATE_LIMIT}): refused as a decompression bomb",
                inflate_limit(self.compressed),
                self.compressed
            )));
        }
        self.left -= n as u64;
        for &b in &buf[..n] {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => {
                    self.record = 0;
                    continue;
                }
                _ => {}
            }
            self.record += 1;
            if self.record > MAX_CSV_RECORD {
                return Err(std::io::Error::other(format!(
                    "the record is longer than {MAX_CSV_RECORD} bytes"
                )));
            }
        }
        Ok(n)
    }
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
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io("opening an inventory data file", path, e))?;
    parquet_rows(f, name, send)
}

/// The rows of a Parquet data file given as bytes: the pure reader behind
/// `--inventory` Parquet files, for the fuzz target.
pub fn parse_parquet(data: Vec<u8>, send: &mut dyn FnMut(Row) -> bool) -> Result<bool> {
    parquet_rows(bytes::Bytes::from(data), "data", send)
}

/// The rows of a Parquet file (`name` for messages), once [`check_footer`] and
/// [`check_chunks`] found every size it declares within the file and the caps. The
/// parquet crate (57.3) panics on some malformed files (a negative child count in the
/// schema, a plain BYTE_ARRAY page cut short: found by the fuzz target): such a panic
/// refuses the file, naming it.
fn parquet_rows<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
    name: &str,
    send: &mut dyn FnMut(Row) -> bool,
) -> Result<bool> {
    // Our own checks run unguarded (a panic there is a bug to find, not to hide); the
    // crate's parse of the footer is guarded (it overflows a capacity on a negative
    // child count, found by the fuzz target).
    let bad = |m: String| Error::Decode {
        what: format!("inventory data file {name}"),
        message: m,
    };
    check_footer(&file).map_err(bad)?;
    let md = guarded(name, || {
        parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .map_err(|e| bad(e.to_string()))
    })?;
    check_chunks(&file, &md).map_err(bad)?;
    guarded(name, || parquet_read(file, name, send))
}

/// Runs `f`, a call into the parquet crate, turning a panic into an error naming data
/// file `name`.
fn guarded<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Decode {
            what: format!("inventory data file {name}"),
            message: format!("the Parquet reader failed on it ({why}): a damaged file"),
        })
    })
}

/// [`parquet_rows`] after the checks, without the panic guard.
fn parquet_read<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
    name: &str,
    send: &mut dyn FnMut(Row) -> bool,
) -> Result<bool> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let bad = |m: String| Error::Decode {
        what: format!("inventory data file {name}"),
        message: m,
    };
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
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

/// Checks what the parquet crate would allocate from a file's own word before it parses
/// the footer: the footer fits in the file and [`MAX_PARQUET_FOOTER`], and every list it
/// declares fits in the bytes left ([`check_chunks`] does the rest before a row is read).
fn check_footer<R: parquet::file::reader::ChunkReader>(
    file: &R,
) -> std::result::Result<(), String> {
    let len = file.len();
    let tail = get(
        file,
        len.checked_sub(8).ok_or("shorter than a Parquet footer")?,
        8,
    )?;
    if tail[4..] != *b"PAR1" {
        return Err("no Parquet footer (PAR1)".into());
    }
    let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if meta_len > MAX_PARQUET_FOOTER || meta_len + 12 > len {
        return Err(format!(
            "its footer says {meta_len} bytes of metadata, the file has {len} bytes (at most {MAX_PARQUET_FOOTER})"
        ));
    }
    let meta = get(file, len - 8 - meta_len, meta_len)?;
    Compact::new(&meta).walk(Shape::File, 0)
}

/// Checks, on the parsed footer, that every column chunk lies within the file and every
/// page within its chunk with at most [`MAX_PARQUET_PAGE`] bytes, compressed or not (a
/// gzip page is inflated once, bounded, to prove it). The crate trusts these sizes: a
/// lying page header makes it reserve or inflate gigabytes.
fn check_chunks<R: parquet::file::reader::ChunkReader>(
    file: &R,
    md: &parquet::file::metadata::ParquetMetaData,
) -> std::result::Result<(), String> {
    let len = file.len();
    for rg in md.row_groups() {
        for col in rg.columns() {
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let (start, size) = match (u64::try_from(start), u64::try_from(col.compressed_size())) {
                (Ok(s), Ok(n)) if s.checked_add(n).is_some_and(|e| e <= len) => (s, n),
                _ => {
                    return Err(format!(
                        "column chunk at {start} of {} bytes is not within the file ({len} bytes)",
                        col.compressed_size()
                    ));
                }
            };
            let gzip = matches!(col.compression(), parquet::basic::Compression::GZIP(_));
            check_pages(file, start, start + size, gzip)?;
        }
    }
    Ok(())
}

/// Checks the pages of the column chunk in `[start, end)` (see [`check_chunks`]).
fn check_pages<R: parquet::file::reader::ChunkReader>(
    file: &R,
    mut pos: u64,
    end: u64,
    gzip: bool,
) -> std::result::Result<(), String> {
    while pos < end {
        let head = get(file, pos, (end - pos).min(MAX_PAGE_HEADER))?;
        let h = page_header(&head)?;
        let body = pos + h.len as u64;
        let (Ok(compressed), Ok(inflated)) =
            (u64::try_from(h.compressed), u64::try_from(h.uncompressed))
        else {
            return Err(format!("page at {pos} has a negative size"));
        };
        if compressed > end - body || compressed.max(inflated) > MAX_PARQUET_PAGE {
            return Err(format!(
                "page at {pos} says {compressed} bytes ({inflated} inflated): past its column chunk (ends at {end}) or above {MAX_PARQUET_PAGE}"
            ));
        }
        // Data pages and dictionaries are inflated by the reader (an index page is not).
        if gzip && h.kind != 1 {
            let levels = h.levels.min(compressed).min(inflated);
            let data = get(file, body + levels, compressed - levels)?;
            let mut inflate =
                flate2::read::MultiGzDecoder::new(&data[..]).take(inflated - levels + 1);
            let n = std::io::copy(&mut inflate, &mut std::io::sink()).unwrap_or(0);
            if n > inflated - levels {
                return Err(format!(
                    "page at {pos} inflates to more than its header's {inflated} bytes"
                ));
            }
        }
        pos = body + compressed;
    }
    Ok(())
}

/// `len` bytes at `start` of a Parquet file (lengths checked by the caller).
fn get<R: parquet::file::reader::ChunkReader>(
    file: &R,
    start: u64,
    len: u64,
) -> std::result::Result<bytes::Bytes, String> {
    let len = usize::try_from(len).map_err(|e| e.to_string())?;
    file.get_bytes(start, len).map_err(|e| e.to_string())
}

/// What [`check_pages`] needs of a page header.
struct PageHeader {
    /// Bytes of the header itself.
    len: usize,
    /// Page type (0 data, 1 index, 2 dictionary, 3 data v2).
    kind: i32,
    uncompressed: i32,
    compressed: i32,
    /// A v2 data page's level bytes, stored before its compressed values.
    levels: u64,
}

/// Thrift compact type of a one-byte integer.
const I8: u8 = 3;
/// Thrift compact type of an i16.
const I16: u8 = 4;
/// Thrift compact type of an i32.
const I32: u8 = 5;
/// Thrift compact type of an i64.
const I64: u8 = 6;
/// Thrift compact type of a double.
const DOUBLE: u8 = 7;
/// Thrift compact type of a string or binary.
const BINARY: u8 = 8;
/// Thrift compact type of a list.
const LIST: u8 = 9;
/// Thrift compact type of a struct.
const STRUCT: u8 = 12;
/// Deepest nesting of Thrift structures accepted (Parquet's metadata nests a few levels).
const MAX_THRIFT_DEPTH: usize = 32;

/// Decodes a Parquet page header (Thrift compact protocol): type, sizes, and a v2 page's
/// level lengths; everything else is skipped but checked like the footer.
fn page_header(b: &[u8]) -> std::result::Result<PageHeader, String> {
    let mut c = Compact::new(b);
    let (mut kind, mut uncompressed, mut compressed, mut levels) = (None, None, None, 0u64);
    let mut id = 0i16;
    while let Some((field, ty)) = c.field(&mut id)? {
        match (field, c.expect(Shape::Page, field, ty)?) {
            (1, _) => kind = Some(c.i32()?),
            (2, _) => uncompressed = Some(c.i32()?),
            (3, _) => compressed = Some(c.i32()?),
            (8, _) => levels = c.v2_levels()?,
            (_, want) => c.value(want, ty, 1)?,
        }
    }
    match (kind, uncompressed, compressed) {
        (Some(kind), Some(uncompressed), Some(compressed)) => Ok(PageHeader {
            len: c.pos,
            kind,
            uncompressed,
            compressed,
            levels,
        }),
        _ => Err("a page header without its type and sizes".into()),
    }
}

/// A reader of Thrift's compact protocol that walks a Parquet footer or page header the
/// way the parquet crate decodes it, without building it, and refuses what would make the
/// crate allocate more than the bytes justify: a list longer than the bytes left, nesting
/// deeper than [`MAX_THRIFT_DEPTH`], or a field the crate reads by its id whose declared
/// type says otherwise (the crate trusts the id, so a walker that trusted the type would
/// check different bytes than the crate then reads).
struct Compact<'a> {
    b: &'a [u8],
    pos: usize,
}

/// A structure of Parquet's metadata, as far as the parquet crate reads it by field id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    File,
    Schema,
    Logical,
    Decimal,
    Time,
    TimeUnit,
    Int,
    Variant,
    Geometry,
    Geography,
    RowGroup,
    Sorting,
    Chunk,
    Column,
    Stats,
    EncodingStats,
    Size,
    Geo,
    BoundingBox,
    Crypto,
    ColumnKey,
    Algorithm,
    Aes,
    KeyValue,
    Order,
    /// A structure with no fields (a union's marker variant).
    Empty,
    Page,
    DataPage,
    Dictionary,
    DataPageV2,
}

/// What the parquet crate reads at a known field, whatever type the field declares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Bool,
    /// A scalar or binary of this compact type.
    Of(u8),
    Struct(Shape),
    ListOf(u8),
    ListOfStruct(Shape),
}

impl Shape {
    /// What the crate reads at field `id` of this structure (None: it skips the field by
    /// its declared type). Field lists follow parquet.thrift as the crate (57) decodes it.
    fn want(self, id: i16) -> Option<Want> {
        use Shape as S;
        use Want::{Bool, ListOf, ListOfStruct, Of, Struct};
        Some(match (self, id) {
            (S::File, 1) => Of(I32),
            (S::File, 2) => ListOfStruct(S::Schema),
            (S::File, 3) => Of(I64),
            (S::File, 4) => ListOfStruct(S::RowGroup),
            (S::File, 5) => ListOfStruct(S::KeyValue),
            (S::File, 6 | 9) => Of(BINARY),
            (S::File, 7) => ListOfStruct(S::Order),
            (S::File, 8) => Struct(S::Algorithm),
            (S::Schema, 1..=3 | 5..=9) => Of(I32),
            (S::Schema, 4) => Of(BINARY),
            (S::Schema, 10) => Struct(S::Logical),
            (S::Logical, 1..=4 | 6 | 11..=15) => Struct(S::Empty),
            (S::Logical, 5) => Struct(S::Decimal),
            (S::Logical, 7 | 8) => Struct(S::Time),
            (S::Logical, 10) => Struct(S::Int),
            (S::Logical, 16) => Struct(S::Variant),
            (S::Logical, 17) => Struct(S::Geometry),
            (S::Logical, 18) => Struct(S::Geography),
            (S::Decimal, 1 | 2) => Of(I32),
            (S::Time, 1) | (S::Int, 2) | (S::Sorting, 2 | 3) => Bool,
            (S::Time, 2) => Struct(S::TimeUnit),
            (S::TimeUnit, 1..=3) | (S::Order, 1) | (S::Crypto, 1) => Struct(S::Empty),
            (S::Int, 1) | (S::Variant, 1) => Of(I8),
            (S::Geometry, 1) | (S::Geography, 1) => Of(BINARY),
            (S::Geography, 2) | (S::Sorting, 1) | (S::EncodingStats, 1..=3) => Of(I32),
            (S::RowGroup, 1) => ListOfStruct(S::Chunk),
            (S::RowGroup, 2 | 3 | 5 | 6) => Of(I64),
            (S::RowGroup, 4) => ListOfStruct(S::Sorting),
            (S::RowGroup, 7) => Of(I16),
            (S::Chunk, 1 | 9) => Of(BINARY),
            (S::Chunk, 2 | 4 | 6) => Of(I64),
            (S::Chunk, 3) => Struct(S::Column),
            (S::Chunk, 5 | 7) => Of(I32),
            (S::Chunk, 8) => Struct(S::Crypto),
            (S::Column, 1 | 4 | 15) => Of(I32),
            (S::Column, 2) => ListOf(I32),
            (S::Column, 3) => ListOf(BINARY),
            (S::Column, 5..=7 | 9..=11 | 14) => Of(I64),
            (S::Column, 8) => ListOfStruct(S::KeyValue),
            (S::Column, 12) => Struct(S::Stats),
            (S::Column, 13) => ListOfStruct(S::EncodingStats),
            (S::Column, 16) => Struct(S::Size),
            (S::Column, 17) => Struct(S::Geo),
            (S::Stats, 1 | 2 | 5 | 6) => Of(BINARY),
            (S::Stats, 3 | 4) => Of(I64),
            (S::Stats, 7 | 8) | (S::Aes, 3) | (S::Dictionary, 3) | (S::DataPageV2, 7) => Bool,
            (S::Size, 1) => Of(I64),
            (S::Size, 2 | 3) => ListOf(I64),
            (S::Geo, 1) => Struct(S::BoundingBox),
            (S::Geo, 2) => ListOf(I32),
            (S::BoundingBox, 1..=8) => Of(DOUBLE),
            (S::Crypto, 2) => Struct(S::ColumnKey),
            (S::ColumnKey, 1) => ListOf(BINARY),
            (S::ColumnKey, 2) | (S::Aes, 1 | 2) | (S::KeyValue, 1 | 2) => Of(BINARY),
            (S::Algorithm, 1 | 2) => Struct(S::Aes),
            (S::Page, 1..=4) | (S::DataPage, 1..=4) | (S::Dictionary, 1 | 2) => Of(I32),
            (S::DataPageV2, 1..=6) => Of(I32),
            (S::Page, 5) => Struct(S::DataPage),
            (S::Page, 6) => Struct(S::Empty),
            (S::Page, 7) => Struct(S::Dictionary),
            (S::Page, 8) => Struct(S::DataPageV2),
            (S::DataPage, 5) | (S::DataPageV2, 8) => Struct(S::Stats),
            _ => return None,
        })
    }
}

impl Want {
    /// Whether a field declared with compact type `ty` holds what is wanted.
    fn declared(self, ty: u8) -> bool {
        match self {
            Want::Bool => matches!(ty, 1 | 2),
            Want::Of(t) => ty == t,
            Want::Struct(_) => ty == STRUCT,
            Want::ListOf(_) | Want::ListOfStruct(_) => ty == LIST,
        }
    }
}

impl<'a> Compact<'a> {
    fn new(b: &'a [u8]) -> Self {
        Compact { b, pos: 0 }
    }

    fn byte(&mut self) -> std::result::Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("Thrift structure cut short")?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a Thrift varint longer than 10 bytes".into())
    }

    /// A zigzag-encoded integer.
    fn int(&mut self) -> std::result::Result<i64, String> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A zigzag-encoded i32.
    fn i32(&mut self) -> std::result::Result<i32, String> {
        i32::try_from(self.int()?).map_err(|_| "a Thrift i32 out of range".to_string())
    }

    /// Skips `n` bytes, or `n` elements of at least one byte each, if the bytes are there.
    fn room(&mut self, n: u64) -> std::result::Result<usize, String> {
        let left = (self.b.len() - self.pos) as u64;
        match n <= left {
            true => Ok(n as usize),
            false => Err(format!("a Thrift length of {n} with {left} bytes left")),
        }
    }

    /// The next field's id and type (None at the struct's end); `id` is the last id.
    /// Read as the crate reads it: any header of type 0 ends the struct, ids are i16 (a
    /// long id is cut to 16 bits, a delta past `i16::MAX` is refused).
    fn field(&mut self, id: &mut i16) -> std::result::Result<Option<(i16, u8)>, String> {
        let h = self.byte()?;
        if h & 0x0f == 0 {
            return Ok(None);
        }
        *id = match h >> 4 {
            0 => self.int()? as i16,
            delta => id
                .checked_add(i16::from(delta))
                .ok_or("a Thrift field id past 32767")?,
        };
        Ok(Some((*id, h & 0x0f)))
    }

    /// Walks a structure of `shape` to its end.
    fn walk(&mut self, shape: Shape, depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_THRIFT_DEPTH {
            return Err(format!("Thrift nesting deeper than {MAX_THRIFT_DEPTH}"));
        }
        let mut id = 0;
        while let Some((field, ty)) = self.field(&mut id)? {
            let want = self.expect(shape, field, ty)?;
            self.value(want, ty, depth)?;
        }
        Ok(())
    }

    /// What to read at field `field` of `shape` declared `ty`: refused where the crate
    /// would read it as something else.
    fn expect(&self, shape: Shape, field: i16, ty: u8) -> std::result::Result<Want, String> {
        match shape.want(field) {
            None => Ok(Want::Of(ty)),
            Some(want) if want.declared(ty) => Ok(want),
            Some(want) => Err(format!(
                "field {field} of a {shape:?} structure is declared Thrift type {ty}, where Parquet has {want:?}"
            )),
        }
    }

    /// One field's value.
    fn value(&mut self, want: Want, ty: u8, depth: usize) -> std::result::Result<(), String> {
        match want {
            Want::Struct(shape) => self.walk(shape, depth + 1),
            Want::ListOf(t) => self.list(Some(t), None, depth + 1),
            Want::ListOfStruct(shape) => self.list(Some(STRUCT), Some(shape), depth + 1),
            Want::Bool | Want::Of(_) => self.skip(ty, depth + 1),
        }
    }

    /// A list whose elements the crate reads as compact type `ty` (any declared type if
    /// None: the crate skips the list), walked as `shape` if given. Elements must declare
    /// the crate's type; none may be booleans (the crate skips those as zero bytes, the
    /// protocol spends one) or sets and maps (which the crate refuses), so every element
    /// takes at least one byte.
    fn list(
        &mut self,
        ty: Option<u8>,
        shape: Option<Shape>,
        depth: usize,
    ) -> std::result::Result<(), String> {
        if depth > MAX_THRIFT_DEPTH {
            return Err(format!("Thrift nesting deeper than {MAX_THRIFT_DEPTH}"));
        }
        let h = self.byte()?;
        let n = match h >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        self.room(n)?;
        if n == 0 {
            return Ok(());
        }
        let declared = h & 0x0f;
        if ty.is_some_and(|t| t != declared) || !matches!(declared, 3..=9 | 12) {
            return Err(format!(
                "a Thrift list of {n} elements of type {declared}, where Parquet has {ty:?}"
            ));
        }
        for _ in 0..n {
            match shape {
                Some(shape) => self.walk(shape, depth + 1)?,
                None => self.skip(declared, depth + 1)?,
            }
        }
        Ok(())
    }

    /// Skips one value of compact type `ty` that the crate skips too (by its type).
    fn skip(&mut self, ty: u8, depth: usize) -> std::result::Result<(), String> {
        if depth > MAX_THRIFT_DEPTH {
            return Err(format!("Thrift nesting deeper than {MAX_THRIFT_DEPTH}"));
        }
        match ty {
            1 | 2 => {}
            I8 => {
                self.byte()?;
            }
            I16..=I64 => {
                self.varint()?;
            }
            DOUBLE => self.pos += self.room(8)?,
            BINARY => {
                let n = self.varint()?;
                self.pos += self.room(n)?;
            }
            LIST => self.list(None, None, depth)?,
            STRUCT => {
                let mut id = 0;
                while let Some((_, t)) = self.field(&mut id)? {
                    self.skip(t, depth + 1)?;
                }
            }
            t => return Err(format!("Thrift type {t} is not one Parquet uses")),
        }
        Ok(())
    }

    /// The level bytes of a v2 data page header (its fields 5 and 6).
    fn v2_levels(&mut self) -> std::result::Result<u64, String> {
        let mut id = 0;
        let mut levels = 0u64;
        while let Some((field, ty)) = self.field(&mut id)? {
            match (field, self.expect(Shape::DataPageV2, field, ty)?) {
                (5 | 6, _) => levels = levels.saturating_add(self.int()?.max(0) as u64),
                (_, want) => self.value(want, ty, 2)?,
            }
        }
        Ok(levels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(url_decode("a%20b+c%2Bd%2Fe").unwrap(), "a b c+d/e");
        assert!(url_decode("%FF").is_err());
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        gz.finish().unwrap()
    }

    const SCHEMA: &str = "Bucket, Key, Size, ETag";

    /// The keys of a gzip CSV data file, or the error.
    fn csv_keys(text: &[u8]) -> Result<Vec<String>> {
        let mut keys = vec![];
        parse_csv(&gzip(text), SCHEMA, "b", &mut |r| {
            keys.push(r.key);
            true
        })?;
        Ok(keys)
    }

    #[test]
    fn a_csv_record_longer_than_the_limit_is_refused_naming_its_row() {
        let ok = b"\"b\",\"k1\",\"3\",\"e\"\n\"b\",\"k+2\",\"4\",\"e\"\n";
        assert_eq!(csv_keys(ok).unwrap(), ["k1", "k 2"]);
        // A key just under the limit is read; one record over it is refused.
        let long = |n: usize| {
            let mut t = ok.to_vec();
            t.extend_from_slice(b"\"b\",\"");
            t.extend(std::iter::repeat_n(b'a', n));
            t.extend_from_slice(b"\",\"1\",\"e\"\n");
            t
        };
        assert_eq!(csv_keys(&long(MAX_CSV_RECORD - 100)).unwrap().len(), 3);
        let e = csv_keys(&long(MAX_CSV_RECORD)).unwrap_err().to_string();
        assert!(
            e.contains("row 3") && e.contains("longer than 65536"),
            "{e}"
        );
        // A quote never closed makes the rest of the file one field, newlines and all.
        let mut open = b"\"b\",\"".to_vec();
        open.extend(b"a\n".repeat(MAX_CSV_RECORD));
        let e = csv_keys(&open).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("longer than"), "{e}");
    }

    #[test]
    fn a_csv_file_inflating_past_its_limit_is_refused() {
        assert_eq!(inflate_limit(1), MIN_INFLATE_LIMIT);
        assert_eq!(inflate_limit(10 << 20), 640 << 20);
        // Short records (newlines) of one compressed byte: the floor is the limit.
        let mut r = CsvLimits::new(std::io::repeat(b'\n'), 1);
        let mut sink = std::io::sink();
        let e = std::io::copy(&mut r, &mut sink).unwrap_err().to_string();
        assert!(e.contains("inflates to more than 67108864 bytes"), "{e}");
    }

    /// A header of a page in Parquet's Thrift compact encoding (type, uncompressed and
    /// compressed sizes).
    fn page_head(kind: i32, inflated: i32, compressed: i32) -> Vec<u8> {
        let mut b = vec![];
        for v in [kind, inflated, compressed] {
            b.push(0x15);
            let mut z = ((v << 1) ^ (v >> 31)) as u32;
            while z >= 0x80 {
                b.push(z as u8 | 0x80);
                z >>= 7;
            }
            b.push(z as u8);
        }
        b.push(0);
        b
    }

    #[test]
    fn parquet_pages_that_lie_about_their_size_are_refused_before_reading() {
        let file = |head: Vec<u8>, body: &[u8]| bytes::Bytes::from([head, body.to_vec()].concat());
        let end = |f: &bytes::Bytes| f.len() as u64;
        // An honest page.
        let f = file(page_head(0, 10, 10), &[7; 10]);
        check_pages(&f, 0, end(&f), false).unwrap();
        // Inflating to a gigabyte, or past its column chunk.
        let f = file(page_head(0, 1 << 30, 10), &[7; 10]);
        let e = check_pages(&f, 0, end(&f), false).unwrap_err();
        assert!(e.contains("above 67108864"), "{e}");
        let f = file(page_head(0, 10, 1000), &[7; 10]);
        let e = check_pages(&f, 0, end(&f), false).unwrap_err();
        assert!(e.contains("past its column chunk"), "{e}");
        let f = file(page_head(0, -1, 10), &[7; 10]);
        assert!(check_pages(&f, 0, end(&f), false).is_err());
        // A gzip page that inflates to more than its header says.
        let bomb = gzip(&vec![0; 4 << 20]);
        let f = file(page_head(0, 100, bomb.len() as i32), &bomb);
        let e = check_pages(&f, 0, end(&f), true).unwrap_err();
        assert!(e.contains("inflates to more than"), "{e}");
        // A list in a header (field 12, unknown) that claims more elements than bytes.
        let mut h = page_head(0, 10, 10);
        h.pop();
        h.extend_from_slice(&[0x99, 0xf5, 0x80, 0x80, 0x80, 0x80, 0x07, 0]);
        let f = file(h, &[7; 10]);
        let e = check_pages(&f, 0, end(&f), false).unwrap_err();
        assert!(e.contains("Thrift length"), "{e}");
    }

    #[test]
    fn a_parquet_page_the_crate_panics_on_is_refused_naming_the_file() {
        // Found by fuzz_inventory_parquet: a plain BYTE_ARRAY page cut short.
        let crash = include_bytes!("../fuzz/seeds/fuzz_inventory_parquet/short-byte-array");
        let e = parse_parquet(crash.to_vec(), &mut |_| true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inventory data file data"), "{e}");
    }

    #[test]
    fn a_parquet_footer_the_crate_panics_on_is_refused_naming_the_file() {
        // Found by fuzz_inventory_parquet: a schema element with a negative child count.
        let crash = include_bytes!("../fuzz/seeds/fuzz_inventory_parquet/negative-children");
        let e = parse_parquet(crash.to_vec(), &mut |_| true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inventory data file data"), "{e}");
    }

    #[test]
    fn a_parquet_footer_field_read_by_id_against_its_declared_type_is_refused() {
        // Found by fuzz_inventory_parquet: a field id written long (65538) that the crate
        // cuts to 16 bits (2, the schema) and reads as a list whatever its declared type;
        // the list claimed 25 GiB of schema elements and the process aborted.
        let crash =
            include_bytes!("../fuzz/seeds/fuzz_inventory_parquet/list-behind-a-long-field-id");
        let e = parse_parquet(crash.to_vec(), &mut |_| true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inventory data file data"), "{e}");
        // The walker's own answers, on footers made by hand.
        let walk = |b: &[u8]| Compact::new(b).walk(Shape::File, 0);
        // Field 2 (the schema) declared an i32: the crate would read a list there.
        let e = walk(&[0x25, 0x02, 0x00]).unwrap_err();
        assert!(e.contains("field 2 of a File structure"), "{e}");
        // Field 65538 written long is field 2 to the crate: the same refusal.
        let e = walk(&[0x05, 0x84, 0x80, 0x08, 0x02, 0x00]).unwrap_err();
        assert!(e.contains("field 2 of a File structure"), "{e}");
        // A schema list of 2^28 elements in a few bytes.
        let e = walk(&[0x29, 0xfc, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00]).unwrap_err();
        assert!(e.contains("Thrift length of 268435456"), "{e}");
        // A header byte 0x10 ends a struct for the crate (type 0), so it does here.
        walk(&[0x10]).unwrap();
        // An honest empty schema list and an unknown field skipped by its type.
        walk(&[0x29, 0x0c, 0xf5, 0x07, 0x00]).unwrap();
    }

    #[test]
    fn a_parquet_footer_larger_than_its_file_is_refused() {
        let mut f = b"PAR1".to_vec();
        f.extend_from_slice(&[0; 16]);
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(b"PAR1");
        let e = parse_parquet(f, &mut |_| true).unwrap_err().to_string();
        assert!(e.contains("its footer says 4294967295 bytes"), "{e}");
    }

    /// A Parquet inventory file written by the parquet crate with `codec`.
    fn parquet_file(codec: parquet::basic::Compression) -> Vec<u8> {
        use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        let schema = parquet::schema::parser::parse_message_type(
            "message s3_inventory { required binary key (UTF8); required int64 size; }",
        )
        .unwrap();
        let props = WriterProperties::builder().set_compression(codec).build();
        let mut out = Vec::new();
        let mut w = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(props)).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let keys: Vec<ByteArray> = (0..500)
            .map(|i| ByteArray::from(format!("k{i}").as_str()))
            .collect();
        col.typed::<ByteArrayType>()
            .write_batch(&keys, None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let sizes: Vec<i64> = (0..500).collect();
        col.typed::<Int64Type>()
            .write_batch(&sizes, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        out
    }

    #[test]
    fn honest_parquet_files_are_read_with_every_codec() {
        use parquet::basic::Compression;
        for codec in [
            Compression::UNCOMPRESSED,
            Compression::SNAPPY,
            Compression::GZIP(Default::default()),
        ] {
            let mut rows = vec![];
            parse_parquet(parquet_file(codec), &mut |r| {
                rows.push((r.key, r.size));
                true
            })
            .unwrap();
            assert_eq!(rows.len(), 500, "{codec:?}");
            assert_eq!(rows[499], ("k499".to_string(), 499), "{codec:?}");
        }
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
