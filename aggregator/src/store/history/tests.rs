use super::*;
use crate::store::tests::{raw_store, reopen as open, write};
use crate::store::{SCHEMA_KEY, SCHEMA_VERSION};
use connwatch_shared::wire::Report;

fn seqs(store: &Store, id: &str, since: i64, limit: usize) -> Vec<u64> {
    store
        .history(id, since, limit)
        .expect("history")
        .iter()
        .map(|h| h.seq)
        .collect()
}

/// A report the size and shape of a real one: services, endpoints, a certificate.
fn realistic(id: &str, seq: u64) -> Report {
    use connwatch_shared::wire as w;
    Report {
        seq,
        epoch: 1,
        group: "branch-offices".into(),
        collected_at_ms: 1_700_000_000_000 + seq as i64 * 30_000,
        services: ["WAPCSvc", "WAPCUpdaterSvc"]
            .iter()
            .map(|n| w::ServiceStatus {
                name: (*n).into(),
                pid: 4000 + seq as u32 % 7,
                uptime_s: seq * 30,
                source: "scm".into(),
                ..Default::default()
            })
            .collect(),
        endpoints: (0..5)
            .map(|i| w::EndpointCheck {
                name: format!("tenant-{i}"),
                address: format!("{id}-tenant{i}.msappproxy.net:443"),
                latency_ms: (seq as u32 * 7 + i) % 90,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn history_spans_blobs_and_reopens_without_reusing_blob_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        store
            .apply(&[write("a", 1, 1), write("b", 1, 1), write("a", 1, 2)])
            .expect("apply");
        store.apply(&[write("a", 1, 3)]).expect("apply");
        store.flush().await.expect("flush");
    }
    let store = open(dir.path());
    store
        .apply(&[write("a", 1, 4)])
        .expect("apply after reopen");
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2, 3, 4]);
    assert_eq!(seqs(&store, "a", 0, 2), [3, 4], "the newest, oldest first");
    assert_eq!(
        seqs(&store, "a", 1003, 10),
        [3, 4],
        "received_ms = 1000 + seq"
    );
    assert_eq!(seqs(&store, "b", 0, 10), [1]);
    let blobs = store.db.scan_prefix([BLOB]).count();
    assert_eq!(blobs, 3, "one blob per applied group");
    let latest = store.connectors().expect("connectors");
    assert_eq!(latest[0].1.latest.as_ref().map(|r| r.seq), Some(4));
}

#[tokio::test]
async fn a_group_of_reports_is_stored_compressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let writes: Vec<Write> = (0..500)
        .map(|i| {
            let id = format!("conn-{i:03}.corp.example.com");
            let mut w = write(&id, 1, 1);
            let report = realistic(&id, i);
            w.raw = report.encode_to_vec().into();
            w.entry.latest = Some(report);
            w
        })
        .collect();
    let raw: usize = writes.iter().map(|w| w.raw.len()).sum();
    store.apply(&writes).expect("apply");
    let (_, blob) = store
        .db
        .scan_prefix([BLOB])
        .next()
        .expect("a blob")
        .expect("read");
    assert!(
        blob.len() * 4 < raw,
        "{} bytes of reports took {} compressed",
        raw,
        blob.len()
    );
    let back = store
        .history("conn-123.corp.example.com", 0, 5)
        .expect("history");
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].stored.report,
        Some(realistic("conn-123.corp.example.com", 123))
    );
}

#[tokio::test]
async fn a_damaged_blob_is_named_and_does_not_hide_other_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.apply(&[write("a", 1, 1)]).expect("apply");
    store.apply(&[write("a", 1, 2)]).expect("apply");
    let mut v = store
        .db
        .get(blob_key(1))
        .expect("get")
        .expect("blob")
        .to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x55;
    store.db.insert(blob_key(1), v).expect("insert");
    let err = store.history("a", 0, 10).expect_err("damage").to_string();
    assert!(err.contains("checksum") && err.contains("b1"), "{err}");
    assert_eq!(seqs(&store, "a", 0, 1), [2], "the other blob still reads");
}

fn legacy_key(id: &str, epoch: u64, seq: u64) -> Vec<u8> {
    let mut k = index_key(id, epoch, seq);
    k[0] = LEGACY;
    k
}

fn legacy_value(seq: u64) -> Vec<u8> {
    encode(&StoredReport {
        received_ms: 1000 + seq as i64,
        report: Some(Report {
            epoch: 1,
            seq,
            group: "g".into(),
            ..Default::default()
        }),
    })
}

#[tokio::test]
async fn opening_a_schema_3_store_moves_its_history_into_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // As schema 3 left it: one whole report per `h` key, one of them damaged.
        let db = raw_store(dir.path(), 3);
        for seq in 1..=2500 {
            db.insert(legacy_key("a", 1, seq), legacy_value(seq))
                .expect("insert");
        }
        db.insert(legacy_key("b", 1, 1), b"\x01damaged".to_vec())
            .expect("insert");
        let mut entry = write("a", 1, 2500).entry;
        entry.latest = None;
        db.insert(crate::store::connector_key("a"), encode(&entry))
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = open(dir.path());
    let version = store.db.get(SCHEMA_KEY).expect("get").expect("version");
    assert_eq!(version.as_ref(), SCHEMA_VERSION.to_be_bytes());
    assert_eq!(seqs(&store, "a", 0, 3), [2498, 2499, 2500]);
    assert_eq!(store.history("a", 0, 5000).expect("all").len(), 2500);
    let left: Vec<_> = store
        .db
        .scan_prefix([LEGACY])
        .map(|i| i.expect("read").0.to_vec())
        .collect();
    assert_eq!(
        left,
        [legacy_key("b", 1, 1)],
        "only the damaged entry stays"
    );
    assert_eq!(
        store.db.scan_prefix([BLOB]).count(),
        3,
        "1024 entries per blob"
    );
    let latest = store.connectors().expect("connectors");
    assert_eq!(latest[0].1.latest.as_ref().map(|r| r.seq), Some(2500));
    // New groups continue after the migrated blobs.
    store.apply(&[write("a", 1, 2501)]).expect("apply");
    assert_eq!(seqs(&store, "a", 0, 2), [2500, 2501]);
}

#[tokio::test]
async fn restoring_a_schema_3_backup_moves_its_history_into_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let records: Vec<(Vec<u8>, Vec<u8>)> = (1..=3)
        .map(|seq| (legacy_key("a", 1, seq), legacy_value(seq)))
        .chain([(SCHEMA_KEY.to_vec(), 3u32.to_be_bytes().to_vec())])
        .collect();
    assert_eq!(store.restore(&records).await.expect("restore"), 4);
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2, 3]);
    assert_eq!(store.db.scan_prefix([LEGACY]).count(), 0);
    let version = store.db.get(SCHEMA_KEY).expect("get").expect("version");
    assert_eq!(version.as_ref(), SCHEMA_VERSION.to_be_bytes());
    store.apply(&[write("a", 1, 4)]).expect("apply");
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2, 3, 4]);
}

#[tokio::test]
async fn history_keeps_the_bytes_as_they_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut w = write("a", 1, 1);
    // A field this build does not know, as a newer collector might send it.
    let mut raw = w.raw.to_vec();
    encoding::string::encode(999, &"from a newer collector".to_string(), &mut raw);
    w.raw = raw.clone().into();
    store.apply(&[w]).expect("apply");
    let blob = store.blob(1).expect("read").expect("blob");
    let stored = &blob.reports[0];
    assert!(
        stored.windows(raw.len()).any(|part| part == raw.as_slice()),
        "the report's bytes are kept whole"
    );
    assert_eq!(seqs(&store, "a", 0, 1), [1], "and still decode");
}

fn realistic_write(i: u64, seq: u64) -> Write {
    let id = format!("conn-{i:04}.corp.example.com");
    let mut w = write(&id, 1, seq);
    let report = realistic(&id, seq);
    w.raw = report.encode_to_vec().into();
    w.entry.latest = Some(report);
    w
}

#[tokio::test]
async fn after_enough_reports_a_dictionary_is_trained_and_lone_reports_shrink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lone_size = |store: &Store, batch: u64| {
        store
            .db
            .get(blob_key(batch))
            .expect("get")
            .expect("blob")
            .len()
    };
    {
        let store = open(dir.path());
        store.apply(&[realistic_write(1, 1)]).expect("apply");
        let before = lone_size(&store, 1);
        // Enough reports, in groups, to train on.
        let groups = (TRAIN_AFTER as u64).div_ceil(100);
        for g in 0..groups {
            let writes: Vec<Write> = (0..100).map(|i| realistic_write(i, 2 + g)).collect();
            store.apply(&writes).expect("apply");
        }
        assert_eq!(store.db.scan_prefix([DICT]).count(), 1, "one dictionary");
        store.apply(&[realistic_write(1, 5000)]).expect("apply");
        let last = groups + 2;
        let after = lone_size(&store, last);
        assert!(
            after * 2 < before,
            "a lone report took {before} bytes without the dictionary and {after} with it"
        );
        store.flush().await.expect("flush");
    }
    let store = open(dir.path());
    let seqs_of_1: Vec<u64> = store
        .history("conn-0001.corp.example.com", 0, 10_000)
        .expect("history after reopen")
        .iter()
        .map(|h| h.seq)
        .collect();
    assert_eq!(
        seqs_of_1.first(),
        Some(&1),
        "the blob from before the dictionary"
    );
    assert_eq!(
        seqs_of_1.last(),
        Some(&5000),
        "and the one compressed with it"
    );
    let back = store
        .history("conn-0001.corp.example.com", 0, 1)
        .expect("history");
    assert_eq!(
        back[0].stored.report,
        Some(realistic("conn-0001.corp.example.com", 5000))
    );
}

#[tokio::test]
async fn a_blob_naming_a_missing_dictionary_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.apply(&[write("a", 1, 1)]).expect("apply");
    let v = store.db.get(blob_key(1)).expect("get").expect("blob");
    let mut blob: StoredBlob = decode(b"b1", &v).expect("decode");
    blob.dict = 9;
    store.db.insert(blob_key(1), encode(&blob)).expect("insert");
    let err = store.history("a", 0, 1).expect_err("refused").to_string();
    assert!(err.contains("dictionary 9"), "{err}");
}

#[tokio::test]
async fn blob_numbers_are_never_handed_out_twice_even_after_retention_removed_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for seq in 1..=3 {
            store.apply(&[write("a", 1, seq)]).expect("apply");
        }
        // Only the blobs expire here (as when index entries are swept later).
        let (removed, _) = store
            .prune_history(i64::MAX, Some(&[BLOB]), 100)
            .expect("prune");
        assert_eq!(removed, 3);
        store.flush().await.expect("flush");
    }
    let store = open(dir.path());
    store.apply(&[write("b", 1, 1)]).expect("apply");
    assert!(store.db.get(blob_key(4)).expect("get").is_some());
    assert_eq!(
        seqs(&store, "a", 0, 10),
        Vec::<u64>::new(),
        "a's old entries name removed blobs and resolve to nothing, not to b's report"
    );
}

#[tokio::test]
async fn the_sweep_looks_past_a_live_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut future = write("a", 1, 1);
    future.received_ms = i64::MAX - 1;
    store.apply(&[future]).expect("apply");
    store.apply(&[write("a", 1, 2)]).expect("apply");
    let (removed, _) = store
        .prune_history(5000, Some(&[BLOB]), 100)
        .expect("prune");
    assert_eq!(removed, 1, "the expired blob after the live one");
    assert!(store.db.get(blob_key(1)).expect("get").is_some());
    assert!(store.db.get(blob_key(2)).expect("get").is_none());
}

#[tokio::test]
async fn a_backup_of_a_newer_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let records = vec![(
        SCHEMA_KEY.to_vec(),
        (SCHEMA_VERSION + 1).to_be_bytes().to_vec(),
    )];
    let err = store
        .restore(&records)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("newer"), "{err}");
}
