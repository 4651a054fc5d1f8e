//! The `Admin` gRPC service: operations on the aggregator itself. `Backup` asks the
//! writer for a consistent snapshot between two groups, then streams it in the
//! backup file format while ingest goes on.

use crate::backup;
use crate::ingest::writer::Control;
use connwatch_shared::wire::admin_server::Admin;
use connwatch_shared::wire::{BackupChunk, BackupRequest};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Bytes per streamed chunk.
const CHUNK: usize = 256 * 1024;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    writer: mpsc::Sender<Control>,
}

impl AdminService {
    /// A service that asks `writer` for snapshots.
    pub fn new(writer: mpsc::Sender<Control>) -> AdminService {
        AdminService { writer }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = ReceiverStream<Result<BackupChunk, Status>>;

    async fn backup(
        &self,
        _request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Control::Snapshot(reply))
            .await
            .map_err(|_| {
                Status::unavailable("the aggregator is shutting down; try again after it restarts")
            })?;
        let snapshot = rx
            .await
            .map_err(|_| {
                Status::unavailable("the aggregator is shutting down; try again after it restarts")
            })?
            .map_err(|e| Status::internal(format!("cannot read the store for a backup: {e}")))?;
        tracing::info!(records = snapshot.len(), "backup started");
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let (mut w, mut buf) = backup::Writer::start();
            for (k, v) in snapshot.iter() {
                w.record(k, v, &mut buf);
                if buf.len() >= CHUNK {
                    let data = std::mem::take(&mut buf);
                    if tx.send(Ok(BackupChunk { data })).await.is_err() {
                        return;
                    }
                }
            }
            buf.extend(w.finish());
            let _ = tx.send(Ok(BackupChunk { data: buf })).await;
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}
