//! The backup file format, shared by `backup` (which writes it from a running
//! aggregator's snapshot) and `restore` (which loads it into an empty store):
//!
//! ```text
//! "CWBACKUP1\n"
//! repeated: key length (u32 BE), key, value length (u32 BE), value
//! trailer:  0xFFFFFFFF, record count (u64 BE), CRC-32 (u32 BE) of every byte before it
//! ```
//!
//! Values keep the store's own envelopes (version, checksum, payload), so a restore
//! checks every value twice: the file's CRC and each value's checksum.

use thiserror::Error;

/// The first bytes of a backup file.
pub const MAGIC: &[u8] = b"CWBACKUP1\n";
const END: u32 = u32::MAX;

/// Why a backup file cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BackupError {
    /// Not a connwatch backup.
    #[error("not a connwatch backup file (it does not start with the backup header)")]
    NotABackup,
    /// Cut short: a copy was interrupted.
    #[error("the backup is truncated after {0} records; take a new one")]
    Truncated(u64),
    /// The checksum does not match: the file was damaged.
    #[error("the backup's checksum does not match; the file is damaged, take a new one")]
    Checksum,
    /// The trailer's count disagrees with the records.
    #[error("the backup says {said} records but holds {found}")]
    Count {
        /// What the trailer says.
        said: u64,
        /// What was read.
        found: u64,
    },
}

/// Builds a backup file from key/value pairs, a chunk at a time.
pub struct Writer {
    crc: crc32fast::Hasher,
    count: u64,
}

impl Writer {
    /// Starts a file; returns the writer and the header bytes.
    pub fn start() -> (Writer, Vec<u8>) {
        let mut crc = crc32fast::Hasher::new();
        crc.update(MAGIC);
        (Writer { crc, count: 0 }, MAGIC.to_vec())
    }

    /// Appends one record to `out`.
    pub fn record(&mut self, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        for part in [key, value] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        self.crc.update(&out[start..]);
        self.count += 1;
    }

    /// The trailer.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&END.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        self.crc.update(&out);
        out.extend_from_slice(&self.crc.finalize().to_be_bytes());
        out
    }
}

/// One key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Reads and checks a whole backup; returns its records.
pub fn read(bytes: &[u8]) -> Result<Vec<Record>, BackupError> {
    let body = bytes.strip_prefix(MAGIC).ok_or(BackupError::NotABackup)?;
    // A whole file (it ends with a trailer) is checked before it is parsed, so a
    // flipped bit in a length is called damage, not a truncation.
    if let Some(tail) = bytes.len().checked_sub(16).and_then(|at| bytes.get(at..))
        && tail[..4] == END.to_be_bytes()
    {
        let (covered, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(covered).to_be_bytes() != crc {
            return Err(BackupError::Checksum);
        }
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize, count: u64| -> Result<&[u8], BackupError> {
        let s = body
            .get(*at..*at + n)
            .ok_or(BackupError::Truncated(count))?;
        *at += n;
        Ok(s)
    };
    loop {
        let count = records.len() as u64;
        let len_bytes = take(&mut at, 4, count)?;
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        if len == END {
            let said = take(&mut at, 8, count)?;
            let said =
                u64::from_be_bytes(said.try_into().map_err(|_| BackupError::Truncated(count))?);
            let crc_at = MAGIC.len() + at;
            let crc = take(&mut at, 4, count)?;
            let crc =
                u32::from_be_bytes(crc.try_into().map_err(|_| BackupError::Truncated(count))?);
            if crc32fast::hash(&bytes[..crc_at]) != crc {
                return Err(BackupError::Checksum);
            }
            if said != count {
                return Err(BackupError::Count { said, found: count });
            }
            return Ok(records);
        }
        let key = take(&mut at, len as usize, count)?.to_vec();
        let vlen = take(&mut at, 4, count)?;
        let vlen = u32::from_be_bytes([vlen[0], vlen[1], vlen[2], vlen[3]]) as usize;
        let value = take(&mut at, vlen, count)?.to_vec();
        records.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let (mut w, mut out) = Writer::start();
        w.record(b"c/a", b"one", &mut out);
        w.record(b"h/a", &[0u8; 300], &mut out);
        out.extend(w.finish());
        out
    }

    #[test]
    fn round_trip_and_every_kind_of_damage_is_named() {
        let good = sample();
        let records = read(&good).expect("valid");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], (b"c/a".to_vec(), b"one".to_vec()));
        assert_eq!(read(b"hello"), Err(BackupError::NotABackup));
        assert_eq!(
            read(&good[..good.len() - 20]),
            Err(BackupError::Truncated(1))
        );
        let mut flipped = good.clone();
        flipped[MAGIC.len() + 12] ^= 1;
        assert_eq!(read(&flipped), Err(BackupError::Checksum));
        let mut length = good.clone();
        length[MAGIC.len() + 1] ^= 1;
        assert_eq!(
            read(&length),
            Err(BackupError::Checksum),
            "a damaged length"
        );
    }
}
