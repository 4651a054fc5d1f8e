//! The CI smoke benchmark: the real aggregator binary beside the raw sled and gRPC
//! ceilings, measured in interleaved rounds of one run; only their ratios are checked,
//! so a slow or busy machine slows every side alike.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_keeps_its_ratio_to_the_ceilings() {
    let s = connwatch_bench::smoke_checked(200)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{}", s.json());
}
