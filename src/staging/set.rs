//! The drive set of a node with raw staging drives (catalog `meta/drive_set`): which
//! drives belong to it, and adding a freshly prepared drive as a member.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The drive set of a node with raw staging drives (catalog `meta/drive_set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveSet {
    pub set_id: [u8; 16],
    pub members: Vec<Member>,
}

/// One drive of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub index: u32,
    pub drive_id: [u8; 16],
    /// Path at the site that last wrote this record (not an identity: names change).
    pub path: String,
    /// Serial number (or loop backing file) when known.
    pub serial: Option<String>,
}

impl DriveSet {
    /// Reads `meta/drive_set`; `None` when the node stages on directories.
    pub fn load(catalog: &crate::catalog::Catalog) -> Result<Option<DriveSet>> {
        match catalog.meta_get(crate::catalog::META_DRIVE_SET)? {
            Some(v) => Ok(Some(crate::catalog::records::decode(
                &"meta drive_set",
                &v,
            )?)),
            None => Ok(None),
        }
    }

    /// Writes a fresh superblock on `path` and adds it to the set as the next member.
    /// `set_size` is what the superblock records (default: the members so far plus this
    /// one). Returns the new member's index.
    pub fn prepare_member(
        &mut self,
        path: &std::path::Path,
        appliance_id: &[u8; 16],
        slot_size: u64,
        set_size: Option<u32>,
        force: bool,
    ) -> Result<u32> {
        use crate::staging::device;
        let index = self.members.iter().map(|m| m.index + 1).max().unwrap_or(0);
        let sb = device::prepare(
            path,
            &device::PrepareSpec {
                appliance_id: *appliance_id,
                set_id: self.set_id,
                index,
                set_size: set_size.unwrap_or(index + 1),
                slot_size,
                force,
            },
        )?;
        tracing::info!(
            "prepared {} as drive #{index} of set {} ({} slots)",
            path.display(),
            hex::encode(self.set_id),
            sb.slot_count
        );
        self.members.push(Member {
            index,
            drive_id: sb.drive_id,
            path: path.display().to_string(),
            serial: barge_firmware::sysfs::drive_serial(path),
        });
        Ok(index)
    }

    pub fn store(&self, catalog: &crate::catalog::Catalog) -> Result<()> {
        catalog.meta_put_sync(
            crate::catalog::META_DRIVE_SET,
            &crate::catalog::records::encode(self),
        )
    }
}
