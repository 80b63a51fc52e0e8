//! Source checksums checked while an object streams through ingest: single-part S3 ETags
//! (MD5 of the body), multipart ETags (MD5 of the parts' MD5s, "-N"), and what could not
//! be checked, with the reason, so it is counted and reported rather than passed.

use md5::{Digest, Md5};

/// What the source lets us check about an object's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentCheck {
    /// Nothing to check against; the reason is recorded.
    Unchecked(String),
    /// MD5 of the whole body (a single-part S3 ETag, a Swift ETag).
    Md5([u8; 16]),
    /// S3 multipart ETag: MD5 of the concatenated part MD5s, with `parts` parts of
    /// `part_size` bytes (the last one shorter).
    MultipartMd5 {
        part_size: u64,
        parts: u32,
        digest: [u8; 16],
    },
    /// A multipart ETag whose part size the server would not tell (no HEAD
    /// ?partNumber): every common part size that gives `parts` parts is tried at once;
    /// the object passes if one of them reproduces the ETag.
    MultipartGuess {
        candidates: Vec<u64>,
        parts: u32,
        digest: [u8; 16],
    },
}

/// Part sizes clients commonly use (awscli 8 MiB, SDKs 5/8/16 MiB, rclone 5/16/64 MiB...).
pub const COMMON_PART_SIZES_MIB: [u64; 14] =
    [5, 6, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128, 256, 512];

impl ContentCheck {
    /// Parses an S3/Swift ETag. `part_size` is needed for a multipart ETag.
    pub fn from_etag(etag: &str, part_size: Option<u64>) -> Self {
        let e = etag.trim().trim_matches('"');
        let hex16 = |s: &str| -> Option<[u8; 16]> { hex::decode(s).ok()?.try_into().ok() };
        match e.split_once('-') {
            None => match hex16(e) {
                Some(d) => ContentCheck::Md5(d),
                None => ContentCheck::Unchecked(format!("ETag {etag:?} is not an MD5")),
            },
            Some((d, n)) => match (hex16(d), n.parse::<u32>(), part_size) {
                (Some(digest), Ok(parts), Some(part_size)) if part_size > 0 => {
                    ContentCheck::MultipartMd5 {
                        part_size,
                        parts,
                        digest,
                    }
                }
                (Some(_), Ok(_), _) => ContentCheck::Unchecked(
                    "multipart ETag and the part size could not be learned".into(),
                ),
                _ => {
                    ContentCheck::Unchecked(format!("ETag {etag:?} is not an MD5 or multipart MD5"))
                }
            },
        }
    }

    /// For a multipart ETag whose part size is unknown: the common part sizes that give
    /// its part count for an object of `size` bytes.
    pub fn guess_multipart(etag: &str, size: u64) -> Self {
        let e = etag.trim().trim_matches('"');
        let parsed = e.split_once('-').and_then(|(d, n)| {
            let d: [u8; 16] = hex::decode(d).ok()?.try_into().ok()?;
            Some((d, n.parse::<u32>().ok()?))
        });
        let Some((digest, parts)) = parsed else {
            return ContentCheck::Unchecked(format!("ETag {etag:?} is not a multipart MD5"));
        };
        let candidates: Vec<u64> = COMMON_PART_SIZES_MIB
            .iter()
            .map(|m| m << 20)
            .filter(|p| size.div_ceil(*p) == parts as u64)
            .collect();
        if candidates.is_empty() {
            ContentCheck::Unchecked(format!(
                "multipart ETag with {parts} parts: part size unknown and no common size fits"
            ))
        } else {
            ContentCheck::MultipartGuess {
                candidates,
                parts,
                digest,
            }
        }
    }

    /// Short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ContentCheck::Unchecked(_) => "unchecked",
            ContentCheck::Md5(_) => "md5",
            ContentCheck::MultipartMd5 { .. } | ContentCheck::MultipartGuess { .. } => {
                "md5-multipart"
            }
        }
    }
}

/// A full-object checksum the source stored (`x-amz-checksum-*`), checked in addition
/// to the ETag. Composite ("-N") values are per part and are not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumCheck {
    pub kind: SumKind,
    pub expected: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumKind {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

impl SumKind {
    pub fn name(self) -> &'static str {
        match self {
            SumKind::Crc32 => "crc32",
            SumKind::Crc32c => "crc32c",
            SumKind::Sha1 => "sha1",
            SumKind::Sha256 => "sha256",
        }
    }
}

impl SumCheck {
    /// From the base64 header value; None when absent, composite or malformed.
    pub fn from_header(kind: SumKind, value: Option<&str>) -> Option<Self> {
        use base64::Engine;
        let v = value?.trim();
        if v.contains('-') {
            return None;
        }
        let expected = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
        Some(SumCheck { kind, expected })
    }
}

enum SumState {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Digest(aws_lc_rs::digest::Context),
}

impl SumState {
    fn new(kind: SumKind) -> Self {
        use aws_lc_rs::digest;
        match kind {
            SumKind::Crc32 => SumState::Crc32(crc32fast::Hasher::new()),
            SumKind::Crc32c => SumState::Crc32c(0),
            SumKind::Sha1 => {
                SumState::Digest(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY))
            }
            SumKind::Sha256 => SumState::Digest(digest::Context::new(&digest::SHA256)),
        }
    }

    fn update(&mut self, d: &[u8]) {
        match self {
            SumState::Crc32(h) => h.update(d),
            SumState::Crc32c(c) => *c = crc32c::crc32c_append(*c, d),
            SumState::Digest(ctx) => ctx.update(d),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            SumState::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            SumState::Crc32c(c) => c.to_be_bytes().to_vec(),
            SumState::Digest(ctx) => ctx.finish().as_ref().to_vec(),
        }
    }
}

/// Feeds an object's bytes, in order, through the check.
pub struct Verifier {
    /// One verifier per candidate part size (MultipartGuess).
    subs: Vec<Verifier>,
    sum: Option<(SumCheck, SumState)>,
    check: ContentCheck,
    whole: Md5,
    part: Md5,
    part_fill: u64,
    part_digests: Vec<u8>,
    parts_done: u32,
}

impl Verifier {
    pub fn new(check: ContentCheck) -> Self {
        let subs = match &check {
            ContentCheck::MultipartGuess {
                candidates,
                parts,
                digest,
            } => candidates
                .iter()
                .map(|&part_size| {
                    Verifier::new(ContentCheck::MultipartMd5 {
                        part_size,
                        parts: *parts,
                        digest: *digest,
                    })
                })
                .collect(),
            _ => vec![],
        };
        Verifier {
            subs,
            sum: None,
            check,
            whole: Md5::new(),
            part: Md5::new(),
            part_fill: 0,
            part_digests: vec![],
            parts_done: 0,
        }
    }

    /// Also checks a stored full-object checksum.
    pub fn with_sum(mut self, sum: Option<SumCheck>) -> Self {
        self.sum = sum.map(|s| {
            let st = SumState::new(s.kind);
            (s, st)
        });
        self
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if let Some((_, st)) = &mut self.sum {
            st.update(data);
        }
        for s in &mut self.subs {
            s.update(data);
        }
        match &self.check {
            ContentCheck::Unchecked(_) | ContentCheck::MultipartGuess { .. } => {}
            ContentCheck::Md5(_) => self.whole.update(data),
            ContentCheck::MultipartMd5 { part_size, .. } => {
                let ps = *part_size;
                while !data.is_empty() {
                    let n = ((ps - self.part_fill) as usize).min(data.len());
                    self.part.update(&data[..n]);
                    self.part_fill += n as u64;
                    data = &data[n..];
                    if self.part_fill == ps {
                        self.close_part();
                    }
                }
            }
        }
    }

    fn close_part(&mut self) {
        let d = std::mem::take(&mut self.part).finalize();
        self.part_digests.extend_from_slice(&d);
        self.parts_done += 1;
        self.part_fill = 0;
    }

    /// `Ok((kinds, unchecked reason))` when the bytes match every available check,
    /// `Err(why)` if not. Kinds read like "md5" or "md5-multipart+sha256".
    pub fn finish(mut self) -> Result<(String, Option<String>), String> {
        let sum = self.sum.take();
        let (kind, why) = self.finish_etag()?;
        match sum {
            None => Ok((kind.to_string(), why)),
            Some((want, st)) => {
                let got = st.finish();
                if got != want.expected {
                    return Err(format!(
                        "x-amz-checksum-{} {} does not match the body ({})",
                        want.kind.name(),
                        hex::encode(&want.expected),
                        hex::encode(&got)
                    ));
                }
                if why.is_some() {
                    Ok((want.kind.name().to_string(), None))
                } else {
                    Ok((format!("{kind}+{}", want.kind.name()), None))
                }
            }
        }
    }

    fn finish_etag(mut self) -> Result<(&'static str, Option<String>), String> {
        let kind = self.check.kind();
        match self.check.clone() {
            ContentCheck::Unchecked(why) => Ok((kind, Some(why))),
            ContentCheck::MultipartGuess { candidates, .. } => {
                let subs = std::mem::take(&mut self.subs);
                if subs.into_iter().any(|s| s.finish_etag().is_ok()) {
                    Ok((kind, None))
                } else {
                    Err(format!(
                        "multipart ETag matches no common part size ({} MiB tried)",
                        candidates
                            .iter()
                            .map(|c| (c >> 20).to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            ContentCheck::Md5(want) => {
                let got: [u8; 16] = self.whole.finalize().into();
                if got == want {
                    Ok((kind, None))
                } else {
                    Err(format!(
                        "MD5 {} does not match the source ETag {}",
                        hex::encode(got),
                        hex::encode(want)
                    ))
                }
            }
            ContentCheck::MultipartMd5 { parts, digest, .. } => {
                if self.part_fill > 0 {
                    self.close_part();
                }
                let got: [u8; 16] = Md5::digest(&self.part_digests).into();
                if got == digest && self.parts_done == parts {
                    Ok((kind, None))
                } else {
                    Err(format!(
                        "multipart ETag {}-{parts} does not match the body ({}-{})",
                        hex::encode(digest),
                        hex::encode(got),
                        self.parts_done
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multipart_etags_are_checked() {
        let body: Vec<u8> = (0..25u32).flat_map(|i| vec![i as u8; 1000]).collect();
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&body)));
        let mut v = Verifier::new(ContentCheck::from_etag(&etag, None));
        v.update(&body[..7]);
        v.update(&body[7..]);
        assert_eq!(v.finish().unwrap().0, "md5");

        // Stored full-object checksums (base64, big-endian CRCs) are checked too.
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let crc = b64(&crc32c::crc32c(&body).to_be_bytes());
        let sha = b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref());
        for (kind, val, name) in [
            (SumKind::Crc32c, &crc, "md5+crc32c"),
            (SumKind::Sha256, &sha, "md5+sha256"),
        ] {
            let mut v = Verifier::new(ContentCheck::from_etag(&etag, None))
                .with_sum(SumCheck::from_header(kind, Some(val)));
            v.update(&body);
            assert_eq!(v.finish().unwrap().0, name);
            let mut v = Verifier::new(ContentCheck::Unchecked("x".into()))
                .with_sum(SumCheck::from_header(kind, Some(val)));
            v.update(&body[1..]);
            assert!(v.finish().is_err());
        }
        let c32 = b64(&crc32fast::hash(&body).to_be_bytes());
        let mut v = Verifier::new(ContentCheck::Unchecked("x".into()))
            .with_sum(SumCheck::from_header(SumKind::Crc32, Some(&c32)));
        v.update(&body);
        assert_eq!(v.finish().unwrap(), ("crc32".to_string(), None));
        assert!(SumCheck::from_header(SumKind::Crc32c, Some("AAAAAA==-3")).is_none());

        // 3 parts of 10,000 bytes (last 5,000), as S3 computes it.
        let mut cat = vec![];
        for p in body.chunks(10_000) {
            cat.extend_from_slice(&Md5::digest(p));
        }
        let etag = format!("\"{}-3\"", hex::encode(Md5::digest(&cat)));
        let mut v = Verifier::new(ContentCheck::from_etag(&etag, Some(10_000)));
        for piece in body.chunks(3333) {
            v.update(piece);
        }
        assert_eq!(v.finish().unwrap().0, "md5-multipart");

        let mut bad = body.clone();
        bad[12_345] ^= 1;
        let mut v = Verifier::new(ContentCheck::from_etag(&etag, Some(10_000)));
        v.update(&bad);
        assert!(v.finish().is_err());
        assert!(matches!(
            ContentCheck::from_etag(&etag, None),
            ContentCheck::Unchecked(_)
        ));
    }
}
