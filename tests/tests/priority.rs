//! Report ingest yields to operators: the serving aggregator's runtime threads run
//! five nice levels below its main thread, and the operators' runtime thread does not.
#![cfg(target_os = "linux")]

use connwatch_tests::{Aggregator, Pki, report, send_reports};

/// Each thread of `pid`: its name and nice value, from `/proc/<pid>/task/*/stat`.
fn threads(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task folder") {
        let path = task.expect("task").path().join("stat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            panic!("unexpected {}: {stat}", path.display());
        };
        let name = stat[open + 1..close].to_string();
        // After the name: state is field 3, nice field 19.
        let nice = stat[close + 1..]
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("nice field");
        out.push((name, nice));
    }
    out
}

#[tokio::test]
async fn ingest_threads_run_below_the_operators_thread() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    // A committed report has the writer start its blocking threads too.
    send_reports(&agg, &pki.collector("alpha"), vec![report(1, 1)])
        .await
        .expect("stream");
    let threads = threads(agg.pid());
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    let main = nice_of("connwatch-aggre");
    assert_eq!(main.len(), 1, "one main thread in {threads:?}");
    let base = main[0];
    assert_eq!(
        nice_of("connwatch-opera"),
        [base],
        "the operators' runtime thread keeps the process's priority: {threads:?}"
    );
    let workers = nice_of("tokio-rt-worker");
    assert!(
        workers.len() >= 2,
        "runtime workers and blocking threads: {threads:?}"
    );
    let lowered = (base + 5).min(19);
    assert!(
        workers.iter().all(|&n| n == lowered),
        "every main runtime thread runs at nice {lowered}, once lowered: {threads:?}"
    );
}
