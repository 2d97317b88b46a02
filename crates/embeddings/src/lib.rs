//! Embedding tables: an `rows × dim` matrix of f64 (for example points of the Poincaré
//! ball), stored in a file and read by memory mapping, so a table larger than memory
//! can be searched and only the pages touched are read.
//!
//! # Format (little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `HSYNCEMB` |
//! | 8 | 4 | format version, 1 |
//! | 12 | 4 | `dim` (u32, ≥ 1) |
//! | 16 | 8 | `rows` (u64) |
//! | 24 | 8 | curvature magnitude `c` (f64; 0 when the rows are not hyperbolic points) |
//! | 32 | 8·rows·dim | the rows, row-major |
//!
//! The data starts at byte 32, so on a page-aligned mapping every f64 is aligned.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use memmap2::Mmap;

const MAGIC: &[u8; 8] = b"HSYNCEMB";
const VERSION: u32 = 1;
const HEADER: usize = 32;

/// What can go wrong opening or writing a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not an embedding table: {reason}")]
    Format { path: String, reason: String },
    #[error("invalid table: {0}")]
    Invalid(String),
}

/// A table opened by memory mapping.
#[derive(Debug)]
pub struct EmbeddingTable {
    map: Mmap,
    dim: usize,
    rows: usize,
    c: f64,
}

impl EmbeddingTable {
    /// Maps `path` and checks its header and length (not the values: a table may be far
    /// larger than memory, and [`Self::check_finite`] reads every page).
    pub fn open(path: &Path) -> Result<EmbeddingTable, TableError> {
        let shown = path.display().to_string();
        let io = |source| TableError::Io { path: shown.clone(), source };
        let format = |reason: String| TableError::Format { path: shown.clone(), reason };
        if cfg!(target_endian = "big") {
            return Err(format("tables are little-endian and this machine is not".into()));
        }
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only. Another process truncating or rewriting the
        // file while it is mapped is outside what any reader can defend against; tables
        // are written to a new file and renamed into place (see `write`), never in place.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(format("no HSYNCEMB header".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version != VERSION {
            return Err(format(format!("format version {version}; this build reads {VERSION}")));
        }
        let dim = u32_at(12) as usize;
        let rows = usize::try_from(u64_at(16)).map_err(|_| format("row count overflows".into()))?;
        let c = f64::from_bits(u64_at(24));
        if dim == 0 {
            return Err(format("dimension 0".into()));
        }
        if !(c.is_finite() && c >= 0.0) {
            return Err(format(format!("curvature c = {c}; it must be finite and >= 0")));
        }
        let expected = rows
            .checked_mul(dim)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(HEADER))
            .ok_or_else(|| format("rows × dim overflows".into()))?;
        if map.len() != expected {
            return Err(format(format!(
                "{} bytes, but {rows} rows of dimension {dim} need {expected}",
                map.len()
            )));
        }
        Ok(EmbeddingTable { map, dim, rows, c })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The curvature magnitude recorded with the rows (0: not hyperbolic points).
    pub fn c(&self) -> f64 {
        self.c
    }

    /// All values, row-major, straight from the mapping.
    pub fn data(&self) -> &[f64] {
        // Length was checked at open; alignment holds for a page-aligned mapping with a
        // 32-byte header. try_cast_slice re-checks both rather than trusting that.
        bytemuck::try_cast_slice(&self.map[HEADER..]).unwrap_or(&[])
    }

    /// Row `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f64]> {
        self.data().get(i.checked_mul(self.dim)?..(i + 1).checked_mul(self.dim)?)
    }

    /// Reads every value and reports the first that is not finite.
    pub fn check_finite(&self) -> Result<(), TableError> {
        match self.data().iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(p) => Err(TableError::Invalid(format!(
                "row {} column {} is {}",
                p / self.dim,
                p % self.dim,
                self.data()[p]
            ))),
        }
    }
}

/// Writes a table to `path`: into a temporary file beside it, synced, then renamed over
/// `path`, so a reader never maps a half-written table and a crash leaves the old one.
pub fn write<R: AsRef<[f64]>>(path: &Path, c: f64, dim: usize, rows: impl IntoIterator<Item = R>) -> Result<usize, TableError> {
    if dim == 0 || dim > u32::MAX as usize {
        return Err(TableError::Invalid(format!("dimension {dim}")));
    }
    if !(c.is_finite() && c >= 0.0) {
        return Err(TableError::Invalid(format!("curvature c = {c}; it must be finite and >= 0")));
    }
    let shown = path.display().to_string();
    let io = |source| TableError::Io { path: shown.clone(), source };
    let tmp = path.with_extension("tmp-write");
    let file = File::create(&tmp).map_err(io)?;
    let mut out = BufWriter::new(file);
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(dim as u32).to_le_bytes());
    header[24..32].copy_from_slice(&c.to_bits().to_le_bytes());
    out.write_all(&header).map_err(io)?;
    let mut count = 0usize;
    for (i, row) in rows.into_iter().enumerate() {
        let row = row.as_ref();
        if row.len() != dim {
            let _ = std::fs::remove_file(&tmp);
            return Err(TableError::Invalid(format!("row {i} has {} values; the dimension is {dim}", row.len())));
        }
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(TableError::Invalid(format!("row {i} column {j} is {}", row[j])));
        }
        for x in row {
            out.write_all(&x.to_le_bytes()).map_err(io)?;
        }
        count += 1;
    }
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    // The row count is known only now; patch it into the header.
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(16)).map_err(io)?;
    file.write_all(&(count as u64).to_le_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.emb");
        let rows: Vec<Vec<f64>> = (0..1000).map(|i| vec![i as f64 * 1e-4, -(i as f64) * 1e-4, 0.5]).collect();
        assert_eq!(write(&path, 1.0, 3, &rows).unwrap(), 1000);
        let t = EmbeddingTable::open(&path).unwrap();
        assert_eq!((t.rows(), t.dim(), t.c()), (1000, 3, 1.0));
        assert_eq!(t.row(7).unwrap(), rows[7].as_slice());
        assert_eq!(t.row(999).unwrap(), rows[999].as_slice());
        assert!(t.row(1000).is_none());
        t.check_finite().unwrap();
        assert!(!path.with_extension("tmp-write").exists());
    }

    #[test]
    fn bad_files_and_rows_are_refused_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.emb");
        std::fs::write(&path, b"not a table").unwrap();
        assert!(EmbeddingTable::open(&path).unwrap_err().to_string().contains("no HSYNCEMB header"));
        write(&path, 0.0, 2, [[1.0, 2.0]]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        assert!(EmbeddingTable::open(&path).unwrap_err().to_string().contains("need"));
        let e = write(&path, 1.0, 2, [vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert!(e.to_string().contains("row 1 has 1 values"), "{e}");
        assert!(write(&path, 1.0, 2, [[f64::NAN, 0.0]]).unwrap_err().to_string().contains("NaN"));
        assert!(write(&path, f64::NAN, 2, [[0.0, 0.0]]).is_err());
        assert!(EmbeddingTable::open(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
