//! The `connwatch.v1.Ingest` route, written out instead of generated so that each
//! report arrives both decoded (to validate and evaluate) and as the bytes it came
//! in, which the store keeps as they are: re-encoding a report cost the writer more
//! than compressing a whole group of them, and the bytes keep fields a newer
//! collector sends that this build does not know.

use super::service::IngestService;
use bytes::{Buf, Bytes};
use connwatch_shared::wire::{Ack, Report};
use prost::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

/// The one method of the service.
const STREAM_PATH: &str = "/connwatch.v1.Ingest/Stream";
/// Each stream keeps a read and a write buffer for as long as its collector stays
/// connected, which at fleet scale is tens of thousands of them: tonic's 8 KiB
/// defaults were a quarter of an idle connection's memory. Reports are ~1.5 KiB and
/// acks a few bytes; either buffer grows when a message needs it.
const READ_BUFFER: usize = 2 * 1024;
const WRITE_BUFFER: usize = 256;
/// tonic's default: how much encoded output a stream may gather before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// A report as it arrived: its encoding and what it decodes to.
#[derive(Debug, Clone)]
pub struct Received {
    /// The encoded `Report`, exactly as sent.
    pub raw: Bytes,
    /// The same, decoded.
    pub report: Report,
}

/// Decodes reports keeping their bytes; encodes acks with prost.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReportCodec;

/// Encodes [`Ack`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct AckEncoder;

/// Decodes [`Received`] reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReceivedDecoder;

impl Codec for ReportCodec {
    type Encode = Ack;
    type Decode = Received;
    type Encoder = AckEncoder;
    type Decoder = ReceivedDecoder;

    fn encoder(&mut self) -> AckEncoder {
        AckEncoder
    }

    fn decoder(&mut self) -> ReceivedDecoder {
        ReceivedDecoder
    }
}

impl Encoder for AckEncoder {
    type Item = Ack;
    type Error = Status;

    fn encode(&mut self, item: Ack, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode an ack: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(WRITE_BUFFER, YIELD_THRESHOLD)
    }
}

impl Decoder for ReceivedDecoder {
    type Item = Received;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Received>, Status> {
        let raw = buf.copy_to_bytes(buf.remaining());
        // Worded as tonic's codec words it ("failed to decode Protobuf message: ..."),
        // so the service's explanation applies.
        let report = Report::decode(raw.clone()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(Received { raw, report }))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(READ_BUFFER, YIELD_THRESHOLD)
    }
}

/// The tower service tonic routes `connwatch.v1.Ingest` to.
#[derive(Debug, Clone)]
pub struct IngestRoute {
    service: Arc<IngestService>,
    max_decoding_message_size: usize,
}

impl IngestRoute {
    /// Serves `service`, refusing messages over `max_decoding_message_size` bytes.
    pub fn new(service: IngestService, max_decoding_message_size: usize) -> IngestRoute {
        IngestRoute {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for IngestRoute {
    const NAME: &'static str = connwatch_shared::wire::ingest_server::SERVICE_NAME;
}

struct StreamMethod(Arc<IngestService>);

impl StreamingService<Received> for StreamMethod {
    type Response = Ack;
    type ResponseStream = ReceiverStream<Result<Ack, Status>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Received>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.stream(request).await })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for IngestRoute
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("connwatch.v1.Ingest has only Stream").into_http())
            });
        }
        let method = StreamMethod(self.service.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(ReportCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}
