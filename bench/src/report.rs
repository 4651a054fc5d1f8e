//! Output: the machine the figures come from, and the table of every figure beside its
//! ceiling or peer and its target, built from the run's JSON.

use serde_json::{Value, json};

/// Cores, CPU model, memory and kernel, so figures say where they were measured.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo.lines().next().unwrap_or_default().to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "memory": mem,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg_at_start": load.trim(),
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `median (min–max)` of a spread object, or the plain number.
fn spread(v: &Value, scale: f64, digits: usize) -> String {
    match v.get("median") {
        Some(m) => format!(
            "{:.d$} ({:.d$}–{:.d$})",
            num(m) * scale,
            num(&v["min"]) * scale,
            num(&v["max"]) * scale,
            d = digits
        ),
        None => format!("{:.d$}", num(v) * scale, d = digits),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The figures table as Markdown.
pub fn table(r: &Value) -> String {
    let i = &r["ingest"];
    let q = &r["queries"];
    let s = &r["storm"];
    let f = &r["footprint"];
    let l = &r["limits"];
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut row = |a: &str, b: String, c: String, d: &str, e: &str| {
        rows.push([a.into(), b, c, d.into(), e.into()]);
    };
    let rate = num(&i["connwatch_reports_per_s"]["median"]);
    let ratio = num(&i["ratio_to_sled_ceiling"]["median"]);
    row(
        &format!(
            "durable acked ingest, reports/s ({} collectors)",
            i["collectors"]
        ),
        spread(&i["connwatch_reports_per_s"], 1.0, 0),
        format!(
            "sled ceiling {}; gRPC ceiling {}",
            spread(&i["sled_ceiling_reports_per_s"], 1.0, 0),
            spread(&i["grpc_ceiling_reports_per_s"], 1.0, 0)
        ),
        ">= 100,000",
        verdict(rate >= 100_000.0),
    );
    row(
        "ingest / sled ceiling (headline)",
        spread(&i["ratio_to_sled_ceiling"], 1.0, 2),
        "1.00".into(),
        ">= 0.70",
        verdict(ratio >= 0.7),
    );
    row(
        "ack latency p50 / p99 / p99.9, ms (at saturation)",
        format!(
            "{} / {} / {}",
            spread(&i["ack_p50_ms"], 1.0, 1),
            spread(&i["ack_p99_ms"], 1.0, 1),
            spread(&i["ack_p999_ms"], 1.0, 1)
        ),
        format!(
            "loopback RTT {:.0} µs; fdatasync {} /s",
            num(&l["tcp_loopback_rtt_us"]),
            spread(&l["fdatasync_per_s"], 1.0, 0)
        ),
        "-",
        "-",
    );
    let cpu = num(&i["agg_cpu_us_per_report"]["median"]);
    row(
        "aggregator CPU per report, µs",
        spread(&i["agg_cpu_us_per_report"], 1.0, 1),
        format!(
            "sled ceiling {} µs; load generator {} µs",
            spread(&i["sled_cpu_us_per_report"], 1.0, 1),
            spread(&i["generator_cpu_us_per_report"], 1.0, 1)
        ),
        "<= 10",
        verdict(cpu <= 10.0),
    );
    row(
        "aggregator RSS under load, MB",
        format!(
            "{:.0} (peak {:.0})",
            num(&i["agg_rss_bytes"]) / 1e6,
            num(&i["agg_peak_rss_bytes"]) / 1e6
        ),
        "cache_mb = 64".into(),
        "-",
        "-",
    );
    let disk = num(&i["disk_bytes_per_report"]);
    row(
        "history on disk per report, bytes",
        format!("{disk:.0}"),
        format!(
            "sled ceiling {}; report {} bytes encoded",
            spread(&i["sled_ceiling_disk_bytes_per_report"], 1.0, 0),
            i["mean_report_bytes"]
        ),
        "<= 1,536",
        verdict(disk <= 1536.0),
    );
    let st = &r["steady"];
    if st.get("error").is_none() && !st.is_null() {
        let disk = num(&st["disk_bytes_per_report"]);
        row(
            &format!(
                "steady fleet ({} collectors, {:.0} reports/s): history on disk per report, bytes",
                st["collectors"],
                num(&st["offered_per_s"])
            ),
            format!("{disk:.0}"),
            format!(
                "{} reports; ack p50 / p99 {:.1} / {:.1} ms; aggregator CPU {:.0} µs/report (each report committed alone: {:.0} bytes, ack p50 {:.1} ms, {:.0} µs/report)",
                st["reports_stored"],
                num(&st["ack_p50_ms"]),
                num(&st["ack_p99_ms"]),
                num(&st["agg_cpu_us_per_report"]),
                num(&st["commit_at_once"]["disk_bytes_per_report"]),
                num(&st["commit_at_once"]["ack_p50_ms"]),
                num(&st["commit_at_once"]["agg_cpu_us_per_report"]),
            ),
            "<= 1,536",
            verdict(disk <= 1536.0),
        );
    }
    if q.get("error").is_none() && !q.is_null() {
        let sp = num(&q["status_p99_ms"]);
        let lp = num(&q["list_p99_ms"]);
        row(
            &format!(
                "group status p50 / p99, ms ({} connectors, ingest {:.0}/s)",
                q["registered"],
                num(&q["ingest_stored_per_s"])
            ),
            format!("{:.1} / {:.1}", num(&q["status_p50_ms"]), sp),
            format!("{} samples", q["status_samples"]),
            "p99 <= 5",
            verdict(sp <= 5.0),
        );
        row(
            "full listing p50 / p99, ms",
            format!("{:.0} / {:.0}", num(&q["list_p50_ms"]), lp),
            format!("{} samples, {} rows", q["list_samples"], q["listed"]),
            "<= 50",
            verdict(lp <= 50.0),
        );
    }
    if s.get("error").is_none() && !s.is_null() {
        let t = num(&s["all_acked_s"]);
        let m = num(&s["agg_bytes_per_settled_connection"]);
        row(
            &format!(
                "reconnect storm: {} mTLS collectors connected and acked, s",
                s["collectors"]
            ),
            format!("{t:.1} ({} failed)", s["failed"]),
            format!(
                "aggregator CPU {:.2} ms per handshake",
                num(&s["agg_cpu_ms_per_handshake"])
            ),
            "<= 10",
            verdict(t <= 10.0 && s["failed"].as_u64() == Some(0)),
        );
        row(
            "aggregator memory per idle connection, KB (15 s after the storm)",
            format!("{:.1}", m / 1024.0),
            format!(
                "3 s after: {:.1}",
                num(&s["agg_bytes_per_idle_connection"]) / 1024.0
            ),
            "<= 20",
            verdict(m <= 20.0 * 1024.0),
        );
    }
    if f.get("error").is_none() && !f.is_null() {
        let c = &f["collector"];
        let n = &f["node_exporter"];
        let b = &f["blackbox_exporter"];
        let mb = |v: &Value| num(&v["rss_bytes"]) / 1e6;
        let pct = |v: &Value| num(&v["cpu_percent_at_30s"]);
        let rss = mb(c);
        let smaller = rss < mb(n) || n.is_null();
        let smaller = smaller && (rss < mb(b) || b.is_null());
        row(
            "collector RSS, MB (20 checks per cycle)",
            format!("{rss:.1}"),
            format!("node_exporter {:.1}; blackbox_exporter {:.1}", mb(n), mb(b)),
            "<= 10, smaller than both",
            verdict(rss <= 10.0 && smaller),
        );
        let h = &f["hung_cycle"];
        if !h.is_null() {
            let limit = num(&h["timeout_ms"]) + 50.0;
            row(
                "probe cycle, 20 endpoint checks with one hung, ms (process start to exit)",
                format!("{:.0} (max {:.0})", num(&h["median_ms"]), num(&h["max_ms"])),
                format!(
                    "slowest timeout {:.0}; sum of timeouts {:.0}",
                    num(&h["timeout_ms"]),
                    num(&h["sum_of_timeouts_ms"])
                ),
                "<= slowest timeout + 50",
                verdict(num(&h["max_ms"]) <= limit),
            );
        }
        let anon = |v: &Value| num(&v["anon_rss_bytes"]) / 1e6;
        row(
            "collector private memory (RssAnon), MB",
            format!("{:.1}", anon(c)),
            format!(
                "node_exporter {:.1}; blackbox_exporter {:.1}",
                anon(n),
                anon(b)
            ),
            "-",
            "-",
        );
        row(
            "collector CPU at a 30 s interval, % of a core",
            format!("{:.3}", pct(c)),
            format!(
                "node_exporter {:.3}; blackbox_exporter {:.3}",
                pct(n),
                pct(b)
            ),
            "<= 1",
            verdict(pct(c) <= 1.0),
        );
    }
    let mut out = String::from(
        "| figure | connwatch median (min–max) | ceiling / peer, same run | target | |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}
