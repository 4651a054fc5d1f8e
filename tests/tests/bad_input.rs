//! More than a thousand malformed, truncated, oversized and out-of-range messages over
//! real gRPC and mTLS: every class gets its expected answer, nothing panics, and a
//! valid collector reporting at the same time is not disturbed.

use connwatch_shared::wire::{Ack, AckOutcome, Report, ServiceStatus};
use connwatch_tests::{Aggregator, Collector, Pki, channel, eventually, report, stored};
use prost::Message;
use rand::Rng;
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends raw bytes as gRPC messages and decodes acks: what a broken or hostile
/// client can put on the wire.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = Ack;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, tonic::Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// What the aggregator answered to one stream of raw messages.
#[derive(Debug)]
enum Answer {
    Acks(Vec<Ack>),
    Refused(tonic::Status),
}

async fn send_raw(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    messages: Vec<Vec<u8>>,
) -> Answer {
    let n = messages.len();
    if let Err(e) = grpc.ready().await {
        return Answer::Refused(tonic::Status::unavailable(e.to_string()));
    }
    let request = tonic::Request::new(futures::stream::iter(messages));
    let path = PathAndQuery::from_static("/connwatch.v1.Ingest/Stream");
    let mut acks = Vec::new();
    match grpc.streaming(request, path, RawCodec).await {
        Err(s) => return Answer::Refused(s),
        Ok(resp) => {
            let mut stream = resp.into_inner();
            while acks.len() < n {
                match stream.message().await {
                    Ok(Some(a)) => acks.push(a),
                    Ok(None) => break,
                    Err(s) => {
                        return if acks.is_empty() {
                            Answer::Refused(s)
                        } else {
                            Answer::Acks(acks)
                        };
                    }
                }
            }
        }
    }
    Answer::Acks(acks)
}

fn out_of_range_reports() -> Vec<(Report, &'static str)> {
    let now = connwatch_shared::time::now_ms();
    let mut cases: Vec<(Report, &'static str)> = Vec::new();
    for i in 0..50u64 {
        let seq = 1_000 + i * 10;
        let base = || {
            let mut r = report(77, seq);
            r.collected_at_ms = now;
            r
        };
        let mut r = base();
        r.seq = 0;
        cases.push((r, "seq 0"));
        let mut r = base();
        r.collected_at_ms = now + 2 * 86_400_000 + i as i64;
        cases.push((r, "ahead"));
        let mut r = base();
        r.collected_at_ms = now - 100 * 86_400_000;
        cases.push((r, "behind"));
        let mut r = base();
        r.group = format!("bad group {i}");
        cases.push((r, "group"));
        let mut r = base();
        r.services = vec![ServiceStatus {
            state: 100 + i as i32,
            ..Default::default()
        }];
        cases.push((r, "services.state"));
        let mut r = base();
        r.endpoints = vec![Default::default(); 300];
        cases.push((r, "endpoints"));
    }
    cases
}

#[tokio::test]
async fn a_thousand_bad_messages_get_their_answers_and_break_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let mut good = Collector::start_with(root.path(), &agg, &pki.collector("good"), "100ms", "");
    eventually(
        Duration::from_secs(10),
        "the good collector's first reports",
        || async { (stored(&agg, &pki, "good").len() >= 2).then_some(()) },
    )
    .await;
    let evil = pki.collector("evil");
    let mut grpc = tonic::client::Grpc::new(channel(&agg, &evil).await.expect("channel"));
    let mut sent = 0usize;

    // Garbage: each either fails to decode (the stream ends with invalid-argument) or
    // decodes into nonsense that validation rejects.
    for _ in 0..400 {
        let len = rand::rng().random_range(1..300);
        let bytes: Vec<u8> = (0..len).map(|_| rand::rng().random()).collect();
        sent += 1;
        match send_raw(&mut grpc, vec![bytes]).await {
            Answer::Refused(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}"),
            Answer::Acks(acks) => {
                assert_eq!(acks.len(), 1);
                assert_eq!(acks[0].outcome, AckOutcome::Rejected as i32, "{acks:?}");
            }
        }
    }

    // Truncated reports: a cut inside a field fails to decode; a cut at a field
    // boundary is a shorter valid message and is judged as such.
    let mut full = report(99, 1);
    full.collector_version = "x".repeat(200);
    full.services = vec![ServiceStatus {
        name: "WAPCSvc".into(),
        ..Default::default()
    }];
    let bytes = full.encode_to_vec();
    for i in 0..300 {
        let cut = 1 + (i * 7) % (bytes.len() - 1);
        sent += 1;
        match send_raw(&mut grpc, vec![bytes[..cut].to_vec()]).await {
            Answer::Refused(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "cut {cut}: {s:?}")
            }
            Answer::Acks(acks) => assert_eq!(acks.len(), 1, "cut {cut}"),
        }
    }

    // Out of range: structurally valid, so all on one stream, each rejected by name.
    let cases = out_of_range_reports();
    let (reports, needles): (Vec<Report>, Vec<&str>) = cases.into_iter().unzip();
    sent += reports.len();
    match send_raw(
        &mut grpc,
        reports.iter().map(Message::encode_to_vec).collect(),
    )
    .await
    {
        Answer::Acks(acks) => {
            assert_eq!(acks.len(), reports.len());
            for (ack, needle) in acks.iter().zip(&needles) {
                assert_eq!(
                    ack.outcome,
                    AckOutcome::Rejected as i32,
                    "{needle}: {ack:?}"
                );
                assert!(
                    ack.reason.contains(needle),
                    "`{}` should mention {needle}",
                    ack.reason
                );
            }
        }
        Answer::Refused(s) => panic!("out-of-range reports must be rejected one by one: {s:?}"),
    }

    // Oversized: refused with out-of-range, saying what the limit is.
    for _ in 0..5 {
        let mut r = report(5, 1);
        r.collector_version = "y".repeat((1 << 20) + 10);
        sent += 1;
        match send_raw(&mut grpc, vec![r.encode_to_vec()]).await {
            Answer::Refused(s) => {
                assert_eq!(s.code(), tonic::Code::OutOfRange, "{s:?}");
                assert!(s.message().contains("bytes"), "{}", s.message());
            }
            Answer::Acks(a) => panic!("an oversized message was accepted: {a:?}"),
        }
    }
    assert!(sent >= 1000, "{sent} messages");

    // Nothing broke: the server runs, never panicked, and the good collector still flows.
    assert!(agg.is_running(), "the aggregator is still running");
    let before = stored(&agg, &pki, "good").len();
    eventually(
        Duration::from_secs(10),
        "the good collector to keep flowing",
        || async { (stored(&agg, &pki, "good").len() > before + 3).then_some(()) },
    )
    .await;
    good.terminate();
    let log = agg.log();
    assert!(!log.contains("panicked"), "the aggregator panicked:\n{log}");
    let evil_rows = stored(&agg, &pki, "evil");
    assert!(
        evil_rows
            .iter()
            .all(|(epoch, _)| *epoch == 99 || *epoch == 0),
        "only whole, valid reports were stored: {evil_rows:?}"
    );
    agg.kill();
}

#[tokio::test]
async fn escape_sequences_in_reports_are_neutralised_in_human_output() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let tls = pki.collector("hostile");
    // A window title change, a screen clear and a bell in facts a report carries.
    let hostile = "evil\u{1b}]0;owned\u{7}\u{1b}[2J";
    let mut r = connwatch_tests::report(1, 1);
    r.host = Some(connwatch_shared::wire::HostInfo {
        hostname: hostile.into(),
        os_name: hostile.into(),
        ..Default::default()
    });
    r.probe_errors = vec![connwatch_shared::wire::ProbeError {
        probe: "log".into(),
        reason: hostile.into(),
    }];
    connwatch_tests::send_reports(&agg, &tls, vec![r])
        .await
        .expect("the report is taken");
    for args in [
        vec!["connector", "hostile"],
        vec!["connectors"],
        vec!["findings"],
        vec!["status"],
    ] {
        let out = agg.cli(&pki, &args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{args:?} printed a control character: {text:?}"
        );
    }
    let shown = agg.cli(&pki, &["connector", "hostile"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("evil\u{fffd}]0;owned"));
}
