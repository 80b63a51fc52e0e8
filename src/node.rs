//! A state directory opened for work: its key, its catalog and its settings.
//!
//! ```text
//! <state>/keys/master.key   32 random bytes (absent with a passphrase or --key-file), 0600
//! <state>/keys/key.json     key origin, KDF salt/params, key check value
//! <state>/catalog/          RocksDB
//! <state>/staging/          default staging drive when no --staging is given
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, META_APPLIANCE_ID, META_CHUNK_PARAMS, META_STAGING};
use crate::chunker::ChunkParams;
use crate::crypto::keys::{KeyRequest, init_key, load_key};
use crate::crypto::{MasterKey, random_bytes};
use crate::error::{Error, Result};
use crate::staging::StagingSettings;

/// File in a state directory while `barge import` builds it.
pub const IMPORT_MARKER: &str = "import.incomplete";

/// Staging configuration persisted in the catalog (`meta/staging`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingConfig {
    pub settings: StagingSettings,
    pub drives: Vec<String>,
}

/// Options of `barge init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub key: KeyRequest,
    pub chunks: ChunkParams,
    pub staging: StagingSettings,
    pub drives: Vec<PathBuf>,
    /// Raw drives already holding a barge superblock of another set are overwritten.
    pub force_drives: bool,
}

/// What `barge import` hands to [`Node::init_imported`]: the shipped set's identity.
pub struct Imported {
    pub master: MasterKey,
    pub appliance_id: [u8; 16],
}

/// An opened state directory.
pub struct Node {
    pub state_dir: PathBuf,
    pub catalog: Arc<Catalog>,
    pub master: Arc<MasterKey>,
    pub appliance_id: [u8; 16],
    pub chunks: ChunkParams,
    pub staging: StagingConfig,
}

fn catalog_dir(state: &Path) -> PathBuf {
    state.join("catalog")
}

fn open_catalog(state: &Path, create: bool) -> Result<Catalog> {
    Catalog::open(&catalog_dir(state), create).map_err(|e| match e {
        Error::Catalog { path, message } if message.contains("lock") => Error::Catalog {
            path,
            message: format!("{message} (is another barge running on this state directory?)"),
        },
        other => other,
    })
}

impl Node {
    /// `barge init`: creates the key and the catalog. Refuses an initialised directory.
    /// Raw drives among `opts.drives` are prepared as one new drive set.
    pub fn init(state: &Path, opts: &InitOptions) -> Result<Node> {
        Self::init_inner(state, opts, None)
    }

    /// Initialises a state directory for drives imported from another site: the set's
    /// master key and appliance id are reused; the drives are not prepared (they hold
    /// the shipped segments).
    pub fn init_imported(state: &Path, opts: &InitOptions, imported: Imported) -> Result<Node> {
        Self::init_inner(state, opts, Some(imported))
    }

    fn init_inner(state: &Path, opts: &InitOptions, imported: Option<Imported>) -> Result<Node> {
        opts.chunks.validate()?;
        opts.staging.validate(opts.chunks.max)?;
        std::fs::create_dir_all(state)
            .map_err(|e| Error::io("creating state directory", state, e))?;
        if state.join("keys/key.json").exists() {
            return Err(Error::State {
                path: state.to_path_buf(),
                message: "already initialised (keys/key.json exists)".into(),
            });
        }
        // Catalog first, key last: keys/key.json marks a finished init, so an init that
        // died half-way can simply be run again.
        let catalog = open_catalog(state, true)?;
        let appliance_id: [u8; 16] = match &imported {
            Some(i) => i.appliance_id,
            None => random_bytes(),
        };
        catalog.meta_put_sync(META_APPLIANCE_ID, &appliance_id)?;
        catalog.meta_put_sync(
            META_CHUNK_PARAMS,
            &crate::catalog::records::encode(&opts.chunks),
        )?;
        let drives = if opts.drives.is_empty() {
            vec![state.join("staging")]
        } else {
            opts.drives.clone()
        };
        let staging = StagingConfig {
            settings: opts.staging.clone(),
            drives: drives
                .iter()
                .map(|d| absolute(d).display().to_string())
                .collect(),
        };
        catalog.meta_put_sync(META_STAGING, &crate::catalog::records::encode(&staging))?;
        if imported.is_none() {
            prepare_raw_drives(&catalog, &appliance_id, opts, &staging.drives)?;
        }
        let master = match imported {
            Some(i) => crate::crypto::keys::init_key_given(state, &opts.key, i.master)?,
            None => init_key(state, &opts.key)?,
        };
        tracing::info!(
            "initialised {} (appliance {}, key {})",
            state.display(),
            hex::encode(appliance_id),
            master.fingerprint()
        );
        Ok(Node {
            state_dir: state.to_path_buf(),
            catalog: Arc::new(catalog),
            master: Arc::new(master),
            appliance_id,
            chunks: opts.chunks,
            staging,
        })
    }

    /// Opens an initialised state directory. The key is checked before the catalog is
    /// opened, so a wrong key changes nothing. `extra_drives` (from `--staging`) are added
    /// to the persisted drive list.
    pub fn open(state: &Path, key: &KeyRequest, extra_drives: &[PathBuf]) -> Result<Node> {
        if state.join(IMPORT_MARKER).exists() {
            return Err(Error::State {
                path: state.to_path_buf(),
                message: format!(
                    "an import into it did not finish ({IMPORT_MARKER} is there): \
                     delete the directory and run `barge import` again"
                ),
            });
        }
        // Invariant 9: the key is checked before the catalog is opened.
        let master = load_key(state, key)?;
        let catalog = open_catalog(state, false)?;
        let appliance_id: [u8; 16] = catalog
            .meta_get(META_APPLIANCE_ID)?
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::State {
                path: state.to_path_buf(),
                message: "catalog has no appliance id".into(),
            })?;
        let chunks: ChunkParams = match catalog.meta_get(META_CHUNK_PARAMS)? {
            Some(v) => crate::catalog::records::decode(&"meta chunk_params", &v)?,
            None => ChunkParams::default(),
        };
        let mut staging: StagingConfig = match catalog.meta_get(META_STAGING)? {
            Some(v) => crate::catalog::records::decode(&"meta staging", &v)?,
            None => {
                return Err(Error::State {
                    path: state.to_path_buf(),
                    message: "catalog has no staging configuration".into(),
                });
            }
        };
        let mut changed = false;
        for d in extra_drives {
            let d = absolute(d).display().to_string();
            if !staging.drives.contains(&d) {
                staging.drives.push(d);
                changed = true;
            }
        }
        if changed {
            catalog.meta_put_sync(META_STAGING, &crate::catalog::records::encode(&staging))?;
        }
        Ok(Node {
            state_dir: state.to_path_buf(),
            catalog: Arc::new(catalog),
            master: Arc::new(master),
            appliance_id,
            chunks,
            staging,
        })
    }

    /// Adds a staging drive to the persisted configuration.
    pub fn add_drive(&self, path: &str) -> Result<()> {
        let mut cfg = self.stored_staging()?;
        if !cfg.drives.iter().any(|d| d == path) {
            cfg.drives.push(path.to_string());
        }
        self.catalog
            .meta_put_sync(META_STAGING, &crate::catalog::records::encode(&cfg))
    }

    /// A raw drive was found under another path: the configuration and every segment
    /// record follow it.
    pub fn move_drive(&self, old: &str, new: &str) -> Result<()> {
        let mut cfg = self.stored_staging()?;
        for d in cfg.drives.iter_mut().filter(|d| *d == old) {
            *d = new.to_string();
        }
        self.catalog
            .meta_put_sync(META_STAGING, &crate::catalog::records::encode(&cfg))?;
        let moved: Vec<_> = self
            .catalog
            .segments()?
            .filter_map(|r| r.ok())
            .filter(|(_, r)| r.path == old)
            .collect();
        for (id, mut rec) in moved {
            rec.path = new.to_string();
            rec.drive = new.to_string();
            self.catalog.put_segment(id, &rec)?;
        }
        Ok(())
    }

    fn stored_staging(&self) -> Result<StagingConfig> {
        match self.catalog.meta_get(META_STAGING)? {
            Some(v) => crate::catalog::records::decode(&"meta staging", &v),
            None => Ok(self.staging.clone()),
        }
    }

    /// Seals segments a crashed run left open and removes staging files the catalog does
    /// not know (see `staging::recover`).
    pub fn recover_staging(
        &self,
        drives: &[PathBuf],
    ) -> Result<crate::staging::recover::RecoveryReport> {
        crate::staging::recover::recover(
            &self.catalog,
            &self.master,
            &self.appliance_id,
            self.staging.settings.seal_backend,
            self.staging.settings.segment_size,
            drives,
        )
    }

    /// Drive paths for staging, in stripe order. With `only` non-empty, just those.
    pub fn drive_paths(&self, only: &[PathBuf]) -> Vec<PathBuf> {
        if only.is_empty() {
            self.staging.drives.iter().map(PathBuf::from).collect()
        } else {
            only.iter().map(|p| absolute(p)).collect()
        }
    }
}

/// Writes superblocks on the raw drives of a new node: they form one drive set, recorded
/// in `meta/drive_set`.
fn prepare_raw_drives(
    catalog: &Catalog,
    appliance_id: &[u8; 16],
    opts: &InitOptions,
    drives: &[String],
) -> Result<()> {
    use crate::staging::device;
    let raw: Vec<&String> = drives
        .iter()
        .filter(|d| device::is_raw(Path::new(d)))
        .collect();
    if raw.is_empty() {
        return Ok(());
    }
    if raw.len() != drives.len() {
        return Err(Error::option(
            "--staging",
            "mixes raw drives and directories; a node stages on one kind",
        ));
    }
    let mut set = crate::staging::set::DriveSet {
        set_id: random_bytes(),
        members: vec![],
    };
    for d in &raw {
        set.prepare_member(
            Path::new(d.as_str()),
            appliance_id,
            opts.staging.segment_size,
            Some(raw.len() as u32),
            opts.force_drives,
        )?;
    }
    set.store(catalog)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
