//! History as the store keeps it: each committed group of reports is one compressed
//! blob, and each report has a small index entry naming its blob and its place there.
//!
//! - `b` + batch number (BE): a [`StoredBlob`], a zstd-compressed [`StoredBatch`];
//! - `i` + connector id + `0x00` + epoch (BE) + seq (BE): a [`StoredRef`];
//! - `d` + dictionary id (u32 BE): a [`StoredDict`], a zstd dictionary blobs name.
//!
//! Why not one value per report: sled rewrites whole tree nodes as they change, and
//! a node of 1.4 KB reports from many connectors is rewritten for every report that
//! lands in it, so disk writes and CPU grew with the report's size several times
//! over. Blobs only ever append at the end of the key space, the index entries that
//! do land everywhere are ~40 bytes, and a group of reports compresses well because
//! every connector's report has the same shape.
//!
//! A fleet at its usual pace commits a few reports at a time, and a blob of one
//! report compresses only 2x on its own. So once the store has seen
//! [`TRAIN_AFTER`] reports it trains a zstd dictionary on them, stores it in the same
//! batch as the first blob that uses it, and compresses every later blob with it
//! (a lone report then takes ~130 bytes instead of ~700). Blobs name their
//! dictionary; all of them are loaded at open.
//!
//! Schema 3 and older kept each report whole under `h` + the same suffix as `i`;
//! [`Store::open`] moves such entries into blobs before it returns.

use super::{Store, StoreError, StoredReport, Write, decode, encode};
use bytes::Bytes;
use prost::Message;
use prost::encoding::{self, WireType};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use zstd::dict::{DecoderDictionary, EncoderDictionary};

pub(super) const BLOB: u8 = b'b';
pub(super) const INDEX: u8 = b'i';
pub(super) const LEGACY: u8 = b'h';
pub(super) const DICT: u8 = b'd';
/// Reports gathered before a dictionary is trained on them: a few MB, enough for
/// zstd to find what reports share.
pub const TRAIN_AFTER: usize = 2_000;
/// The dictionary's size: zstd's usual choice.
const DICT_BYTES: usize = 16 * 1024;
/// zstd's fastest level: the higher ones cost several times the CPU for a few
/// percent less on these values.
const LEVEL: i32 = 1;
/// The largest decompressed blob accepted: far above what the writer puts in one
/// group (64 MiB of reports, and one more report of at most 1 MiB), and a bound on what
/// a damaged length can make us allocate.
const MAX_RAW_BLOB: u64 = 1 << 31;
/// Legacy entries moved per atomic step of the upgrade.
const MIGRATE_CHUNK: usize = 1024;
/// Where the next blob number is kept. Retention may remove the newest blobs (a fleet
/// silent for longer than `store.retention`), and index entries expiring later than
/// their blob may still name them; numbers must never be handed out twice.
const NEXT_BATCH_KEY: &[u8] = b"m:next_batch";
/// The retention sweep looks past live blobs (an upgrade fills blobs in key order,
/// not time order; a clock that ran ahead leaves blobs from the future) but stops
/// after this many in a row: in the usual time order, every later blob is live too.
const LIVE_RUN: usize = 1024;

/// Where a report is kept: its blob and its place in it.
#[derive(Clone, PartialEq, Message)]
pub struct StoredRef {
    /// The blob's batch number.
    #[prost(uint64, tag = "1")]
    pub batch: u64,
    /// The report's place in the blob.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// When it arrived (aggregator clock), so that queries by time and the retention
    /// sweep need not open the blob.
    #[prost(int64, tag = "3")]
    pub received_ms: i64,
}

/// One committed group of reports, compressed.
#[derive(Clone, PartialEq, Message)]
pub struct StoredBlob {
    /// The newest arrival in it: once that is past retention, so is all of it.
    #[prost(int64, tag = "1")]
    pub newest_received_ms: i64,
    /// The size of the [`StoredBatch`] once decompressed.
    #[prost(uint64, tag = "2")]
    pub raw_len: u64,
    /// The zstd frame.
    #[prost(bytes = "vec", tag = "3")]
    pub zstd: Vec<u8>,
    /// The dictionary it was compressed with; 0 for none.
    #[prost(uint32, tag = "4")]
    pub dict: u32,
}

/// A zstd dictionary history blobs are compressed with.
#[derive(Clone, PartialEq, Message)]
pub struct StoredDict {
    /// The dictionary, as zstd trained it.
    #[prost(bytes = "vec", tag = "1")]
    pub zstd_dict: Vec<u8>,
}

/// The store's compression dictionaries.
#[derive(Default)]
pub(super) struct Dicts {
    /// The one new blobs use.
    current: Option<(u32, Arc<EncoderDictionary<'static>>)>,
    /// Every one a blob may name.
    decoders: HashMap<u32, Arc<DecoderDictionary<'static>>>,
    /// Reports gathered to train the first one from, until there is one.
    samples: Vec<Bytes>,
}

impl std::fmt::Debug for Dicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dicts")
            .field("current", &self.current.as_ref().map(|(id, _)| id))
            .field("known", &self.decoders.len())
            .field("samples", &self.samples.len())
            .finish()
    }
}

fn dict_key(id: u32) -> [u8; 5] {
    let mut k = [DICT; 5];
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Dicts {
    /// Every dictionary in `db`; the newest is the current one.
    pub(super) fn load(db: &sled::Db) -> Result<Dicts, StoreError> {
        let mut dicts = Dicts::default();
        for item in db.scan_prefix([DICT]) {
            let (k, v) = item?;
            let Ok(id) = <[u8; 4]>::try_from(&k[1..]).map(u32::from_be_bytes) else {
                continue;
            };
            let stored: StoredDict = decode(&k, &v)?;
            dicts.add(id, &stored.zstd_dict);
        }
        Ok(dicts)
    }

    fn add(&mut self, id: u32, dict: &[u8]) {
        self.decoders
            .insert(id, Arc::new(DecoderDictionary::copy(dict)));
        if self.current.as_ref().is_none_or(|(cur, _)| *cur < id) {
            self.current = Some((id, Arc::new(EncoderDictionary::copy(dict, LEVEL))));
        }
    }

    /// Until there is a dictionary: gathers `writes`' reports and, once there are
    /// enough, trains one and adds it to `batch`. Returns the dictionary to use.
    fn for_blob(
        &mut self,
        writes: &[Write],
        batch: &mut sled::Batch,
    ) -> Option<(u32, Arc<EncoderDictionary<'static>>)> {
        if self.current.is_none() {
            self.samples.extend(writes.iter().map(|w| w.raw.clone()));
            if self.samples.len() >= TRAIN_AFTER {
                let started = std::time::Instant::now();
                match zstd::dict::from_samples(&self.samples, DICT_BYTES) {
                    Ok(dict) => {
                        let id = self.decoders.keys().max().map_or(1, |m| m + 1);
                        batch.insert(
                            &dict_key(id),
                            encode(&StoredDict {
                                zstd_dict: dict.clone(),
                            }),
                        );
                        self.add(id, &dict);
                        tracing::info!(
                            dictionary = id,
                            samples = self.samples.len(),
                            took = ?started.elapsed(),
                            "trained a compression dictionary for history"
                        );
                    }
                    // Too alike or too few to train on: compress without one and try
                    // again on the next reports.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot train a compression dictionary yet")
                    }
                }
                self.samples = Vec::new();
            }
        }
        self.current.clone()
    }

    fn decoder(&self, id: u32) -> Option<Arc<DecoderDictionary<'static>>> {
        self.decoders.get(&id).cloned()
    }
}

/// The reports of one group, in commit order, each an encoded [`StoredReport`].
#[derive(Clone, PartialEq, Message)]
pub struct StoredBatch {
    /// The encoded reports.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub reports: Vec<Vec<u8>>,
}

pub(super) fn index_prefix(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 18);
    k.push(INDEX);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

pub(super) fn index_key(id: &str, epoch: u64, seq: u64) -> Vec<u8> {
    let mut k = index_prefix(id);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn blob_key(batch: u64) -> [u8; 9] {
    let mut k = [BLOB; 9];
    k[1..].copy_from_slice(&batch.to_be_bytes());
    k
}

/// The (epoch, seq) at the end of an index or legacy history key.
fn epoch_seq(tail: &[u8]) -> Option<(u64, u64)> {
    let epoch = <[u8; 8]>::try_from(tail.get(..8)?).ok()?;
    let seq = <[u8; 8]>::try_from(tail.get(8..)?).ok()?;
    Some((u64::from_be_bytes(epoch), u64::from_be_bytes(seq)))
}

/// Builds a blob of reports, each encoded straight into one buffer as a
/// [`StoredBatch`] would encode them, without building one.
struct BlobBuilder {
    raw: Vec<u8>,
    count: u32,
    newest_ms: i64,
}

impl BlobBuilder {
    fn with_capacity(bytes: usize) -> BlobBuilder {
        BlobBuilder {
            raw: Vec::with_capacity(bytes),
            count: 0,
            newest_ms: i64::MIN,
        }
    }

    /// Adds a report, given encoded, as a [`StoredReport`]; returns its place.
    fn push(&mut self, received_ms: i64, report: &[u8]) -> u32 {
        let len = encoding::int64::encoded_len(1, &received_ms)
            + encoding::key_len(2)
            + encoding::encoded_len_varint(report.len() as u64)
            + report.len();
        encoding::encode_key(1, WireType::LengthDelimited, &mut self.raw);
        encoding::encode_varint(len as u64, &mut self.raw);
        encoding::int64::encode(1, &received_ms, &mut self.raw);
        encoding::encode_key(2, WireType::LengthDelimited, &mut self.raw);
        encoding::encode_varint(report.len() as u64, &mut self.raw);
        self.raw.extend_from_slice(report);
        self.placed(received_ms)
    }

    /// Adds a report already encoded as a [`StoredReport`].
    fn push_encoded(&mut self, received_ms: i64, stored: &[u8]) -> u32 {
        encoding::encode_key(1, WireType::LengthDelimited, &mut self.raw);
        encoding::encode_varint(stored.len() as u64, &mut self.raw);
        self.raw.extend_from_slice(stored);
        self.placed(received_ms)
    }

    /// Counts the report just added; returns its place.
    fn placed(&mut self, received_ms: i64) -> u32 {
        self.newest_ms = self.newest_ms.max(received_ms);
        self.count += 1;
        self.count - 1
    }

    fn finish(
        self,
        dict: Option<&(u32, Arc<EncoderDictionary<'static>>)>,
    ) -> Result<Vec<u8>, StoreError> {
        let compressed = match dict {
            Some((_, d)) => zstd::bulk::Compressor::with_prepared_dictionary(d)
                .and_then(|mut c| c.compress(&self.raw)),
            None => zstd::bulk::compress(&self.raw, LEVEL),
        };
        let zstd = compressed.map_err(|e| StoreError::Corrupt {
            key: "-".into(),
            why: format!("cannot compress a group of reports: {e}"),
        })?;
        Ok(encode(&StoredBlob {
            newest_received_ms: self.newest_ms,
            raw_len: self.raw.len() as u64,
            zstd,
            dict: dict.map_or(0, |(id, _)| *id),
        }))
    }
}

impl Store {
    /// The next blob number: after the newest blob, and never below what was handed
    /// out before (the newest blobs may have been removed by retention).
    pub(super) fn next_batch_after_blobs(db: &sled::Db) -> Result<u64, StoreError> {
        let after_blobs = match db.scan_prefix([BLOB]).next_back() {
            Some(item) => {
                let (k, _) = item?;
                <[u8; 8]>::try_from(&k[1..])
                    .map(u64::from_be_bytes)
                    .unwrap_or(0)
                    + 1
            }
            None => 1,
        };
        let kept = db
            .get(NEXT_BATCH_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(after_blobs.max(kept))
    }

    /// Takes a blob number, recording the next one in `batch`.
    fn take_batch_number(&self, batch: &mut sled::Batch) -> u64 {
        let n = self.next_batch.fetch_add(1, Relaxed);
        batch.insert(NEXT_BATCH_KEY, &(n + 1).to_be_bytes());
        n
    }

    /// Applies a group of accepted reports atomically: one blob, an index entry and a
    /// registry entry per report. Not durable until [`Store::flush`].
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let batch_no = self.take_batch_number(&mut batch);
        let dict = self.dicts().for_blob(writes, &mut batch);
        let mut blob = BlobBuilder::with_capacity(writes.iter().map(|w| w.raw.len() + 16).sum());
        for w in writes {
            let index = blob.push(w.received_ms, &w.raw);
            let reference = StoredRef {
                batch: batch_no,
                index,
                received_ms: w.received_ms,
            };
            batch.insert(
                index_key(&w.connector, w.entry.epoch, w.entry.last_seq),
                encode(&reference),
            );
            batch.insert(
                super::connector_key(&w.connector),
                encode(&w.entry.without_report()),
            );
        }
        batch.insert(&blob_key(batch_no), blob.finish(dict.as_ref())?);
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn dicts(&self) -> std::sync::MutexGuard<'_, Dicts> {
        // Dictionaries are only ever added whole, so a poisoned lock holds sound data.
        self.dicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reports of a blob, decompressed; `None` when retention removed it.
    fn blob(&self, batch: u64) -> Result<Option<StoredBatch>, StoreError> {
        let key = blob_key(batch);
        let Some(v) = self.db.get(key)? else {
            return Ok(None);
        };
        let blob: StoredBlob = decode(format!("b{batch}").as_bytes(), &v)?;
        let corrupt = |why: String| StoreError::Corrupt {
            key: format!("b{batch}"),
            why,
        };
        if blob.raw_len > MAX_RAW_BLOB {
            return Err(corrupt(format!("claims {} bytes", blob.raw_len)));
        }
        let raw = if blob.dict == 0 {
            zstd::bulk::decompress(&blob.zstd, blob.raw_len as usize)
        } else {
            let dict = self.dicts().decoder(blob.dict).ok_or_else(|| {
                corrupt(format!(
                    "it names compression dictionary {}, which the store does not have",
                    blob.dict
                ))
            })?;
            zstd::bulk::Decompressor::with_prepared_dictionary(&dict)
                .and_then(|mut d| d.decompress(&blob.zstd, blob.raw_len as usize))
        }
        .map_err(|e| corrupt(format!("does not decompress: {e}")))?;
        StoredBatch::decode(raw.as_slice())
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Fetches the reports `refs` name, opening each blob once. A report whose blob
    /// retention already removed is `None`; a damaged one is an error for it alone.
    pub(super) fn fetch(
        &self,
        refs: &[StoredRef],
    ) -> Vec<Result<Option<StoredReport>, StoreError>> {
        let mut by_batch: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, r) in refs.iter().enumerate() {
            by_batch.entry(r.batch).or_default().push(i);
        }
        let mut out: Vec<Result<Option<StoredReport>, StoreError>> =
            refs.iter().map(|_| Ok(None)).collect();
        for (batch, places) in by_batch {
            match self.blob(batch) {
                Ok(None) => {}
                Ok(Some(blob)) => {
                    for i in places {
                        let index = refs[i].index as usize;
                        out[i] = match blob.reports.get(index) {
                            Some(bytes) => StoredReport::decode(bytes.as_slice())
                                .map(Some)
                                .map_err(|e| StoreError::Corrupt {
                                    key: format!("b{batch}[{index}]"),
                                    why: e.to_string(),
                                }),
                            None => Err(StoreError::Corrupt {
                                key: format!("b{batch}[{index}]"),
                                why: format!("the blob holds {} reports", blob.reports.len()),
                            }),
                        };
                    }
                }
                Err(e) => {
                    let (key, why) = match e {
                        StoreError::Corrupt { key, why } => (key, why),
                        other => (format!("b{batch}"), other.to_string()),
                    };
                    for i in places {
                        out[i] = Err(StoreError::Corrupt {
                            key: key.clone(),
                            why: why.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Where a connector's report is kept, if it is.
    pub(super) fn reference(
        &self,
        id: &str,
        epoch: u64,
        seq: u64,
    ) -> Result<Option<StoredRef>, StoreError> {
        let key = index_key(id, epoch, seq);
        self.db.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// A connector's history, oldest first, at most `limit` of the newest entries,
    /// received at or after `since_ms`.
    pub fn history(
        &self,
        id: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::HistoryItem>, StoreError> {
        let prefix = index_prefix(id);
        let mut found = Vec::new();
        for item in self.db.scan_prefix(&prefix).rev() {
            if found.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some((epoch, seq)) = epoch_seq(&k[prefix.len()..]) else {
                continue;
            };
            let reference: StoredRef = decode(&k, &v)?;
            if reference.received_ms < since_ms {
                continue;
            }
            found.push((epoch, seq, reference));
        }
        let refs: Vec<StoredRef> = found.iter().map(|(_, _, r)| r.clone()).collect();
        let mut out = Vec::with_capacity(found.len());
        for ((epoch, seq, _), stored) in found.into_iter().zip(self.fetch(&refs)) {
            if let Some(stored) = stored? {
                out.push(super::HistoryItem { epoch, seq, stored });
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Removes history received before `cutoff_ms`, looking at no more than `limit`
    /// entries from `from` on (the start when `None`): first the index entries, then
    /// the blobs whose every report is expired. Returns how many entries were removed
    /// and where to continue (`None` once a pass is complete), so pruning a large
    /// store never stalls ingest for long.
    pub fn prune_history(
        &self,
        cutoff_ms: i64,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        let start = from.map_or_else(|| vec![INDEX], <[u8]>::to_vec);
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        let mut next = None;
        if start.first() == Some(&INDEX) {
            for (seen, item) in self.db.range(start..vec![INDEX + 1]).enumerate() {
                let (k, v) = item?;
                if seen == limit {
                    next = Some(k.to_vec());
                    break;
                }
                // A damaged entry is kept for `backup`/inspection rather than silently
                // removed.
                if let Ok(r) = decode::<StoredRef>(&k, &v)
                    && r.received_ms < cutoff_ms
                {
                    batch.remove(k);
                    removed += 1;
                }
            }
            if next.is_none() {
                next = Some(vec![BLOB]);
            }
        } else {
            // Blobs are numbered in commit order, so the expired ones come first; the
            // walk looks past a few live ones and stops in a long run of them.
            let mut live_run = 0;
            for (seen, item) in self.db.range(start..vec![BLOB + 1]).enumerate() {
                let (k, v) = item?;
                if seen == limit {
                    next = Some(k.to_vec());
                    break;
                }
                match decode::<StoredBlob>(&k, &v) {
                    Ok(b) if b.newest_received_ms < cutoff_ms => {
                        batch.remove(k);
                        removed += 1;
                        live_run = 0;
                    }
                    Ok(_) => {
                        live_run += 1;
                        if live_run == LIVE_RUN {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if removed > 0 {
            self.db.apply_batch(batch)?;
        }
        Ok((removed, next))
    }

    /// Moves history entries of schema 3 and older (one whole report per key) into
    /// blobs and index entries, a chunk per atomic step, so an interrupted upgrade
    /// resumes where it stopped. Damaged entries are left where they are and logged.
    /// Returns how many entries were moved.
    pub(super) fn migrate_legacy_history(&self) -> Result<usize, StoreError> {
        let total = self.db.scan_prefix([LEGACY]).count();
        if total == 0 {
            return Ok(0);
        }
        tracing::info!(
            entries = total,
            "upgrading the store: moving history into compressed blobs"
        );
        let mut moved = 0;
        let mut after: Vec<u8> = vec![LEGACY];
        loop {
            let mut chunk = Vec::with_capacity(MIGRATE_CHUNK);
            for item in self.db.range(after.clone()..vec![LEGACY + 1]) {
                let (k, v) = item?;
                if k.as_ref() == after.as_slice() {
                    continue;
                }
                chunk.push((k, v));
                if chunk.len() == MIGRATE_CHUNK {
                    break;
                }
            }
            let Some((last, _)) = chunk.last() else {
                break;
            };
            after = last.to_vec();
            let mut batch = sled::Batch::default();
            let batch_no = self.take_batch_number(&mut batch);
            let mut blob = BlobBuilder::with_capacity(0);
            for (k, v) in &chunk {
                let stored = match decode::<StoredReport>(k, v) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "a history entry is damaged; it is left as it is and no longer shown");
                        continue;
                    }
                };
                let Some(payload) = v.get(5..) else { continue };
                let index = blob.push_encoded(stored.received_ms, payload);
                let mut new_key = k.to_vec();
                new_key[0] = INDEX;
                batch.insert(
                    new_key,
                    encode(&StoredRef {
                        batch: batch_no,
                        index,
                        received_ms: stored.received_ms,
                    }),
                );
                batch.remove(k.clone());
                moved += 1;
            }
            if blob.count > 0 {
                let dict = self.dicts().current.clone();
                batch.insert(&blob_key(batch_no), blob.finish(dict.as_ref())?);
            }
            self.db.apply_batch(batch)?;
            if moved % (MIGRATE_CHUNK * 100) < MIGRATE_CHUNK {
                tracing::info!(moved, of = total, "upgrading the store");
            }
        }
        self.db.flush()?;
        tracing::info!(moved, "store upgraded: history is kept in compressed blobs");
        Ok(moved)
    }
}

#[cfg(test)]
mod tests;
