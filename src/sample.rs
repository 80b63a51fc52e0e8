//! Generates a sample tree that exercises dedup: unique files, exact copies, shifted
//! copies (bytes inserted at the front), edited copies, and many small files. Used by
//! `barge demo`, the tests and the benchmarks. Deterministic for a given seed.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// xorshift64* — fast, deterministic filler (not for cryptography).
pub struct Filler(u64);

impl Filler {
    pub fn new(seed: u64) -> Self {
        Filler(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct SampleStats {
    pub files: u64,
    pub bytes: u64,
    /// Bytes of content that is new (not a copy of something already written).
    pub unique_bytes: u64,
}

fn write(path: &Path, data: &[u8], st: &mut SampleStats) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io("creating sample directory", p, e))?;
    }
    let mut f = fs::File::create(path).map_err(|e| Error::io("creating sample file", path, e))?;
    f.write_all(data)
        .map_err(|e| Error::io("writing sample file", path, e))?;
    st.files += 1;
    st.bytes += data.len() as u64;
    Ok(())
}

/// Writes about `total` bytes under `dir`: ~45% unique data in files of 1 KiB..32 MiB,
/// the rest exact, shifted and edited copies, plus small and empty files.
pub fn generate(dir: &Path, total: u64, seed: u64) -> Result<SampleStats> {
    let mut rng = Filler::new(seed);
    let mut st = SampleStats::default();
    write(&dir.join("empty"), b"", &mut st)?;
    write(&dir.join("one-byte"), b"x", &mut st)?;
    let sizes: [usize; 6] = [1 << 10, 100 << 10, 1 << 20, 5 << 20, 12 << 20, 32 << 20];
    let unique_budget = total * 45 / 100;
    let mut i = 0usize;
    let mut originals: Vec<std::path::PathBuf> = vec![];
    while st.unique_bytes < unique_budget {
        let left = (unique_budget - st.unique_bytes) as usize;
        let size = sizes[i % sizes.len()].min(left.max(1));
        let data = rng.bytes(size);
        let p = dir.join(format!("data/set-{:02}/file-{i:05}.bin", i % 7));
        write(&p, &data, &mut st)?;
        st.unique_bytes += size as u64;
        originals.push(p);
        i += 1;
    }
    let mut j = 0usize;
    while st.bytes < total && !originals.is_empty() {
        let src = &originals[j % originals.len()];
        let data = fs::read(src).map_err(|e| Error::io("reading sample file", src, e))?;
        match j % 3 {
            0 => write(&dir.join(format!("copies/copy-{j:05}.bin")), &data, &mut st)?,
            1 => {
                let mut v = format!("shifted by a header #{j}\n").into_bytes();
                v.extend_from_slice(&data);
                write(&dir.join(format!("shifted/shift-{j:05}.bin")), &v, &mut st)?;
            }
            _ => {
                let mut v = data.clone();
                let mid = v.len() / 2;
                let n = 64.min(v.len() - mid);
                let patch = rng.bytes(n);
                v[mid..mid + n].copy_from_slice(&patch);
                write(&dir.join(format!("edited/edit-{j:05}.bin")), &v, &mut st)?;
            }
        }
        j += 1;
        if j > 100_000 {
            break;
        }
    }
    for k in 0..200 {
        let line = format!(
            "log line {k} of the sample tree; host=node-{} status=ok\n",
            k % 5
        );
        write(
            &dir.join(format!("logs/{:02}/app-{k:03}.log", k % 10)),
            line.repeat(1 + k % 40).as_bytes(),
            &mut st,
        )?;
    }
    Ok(st)
}
