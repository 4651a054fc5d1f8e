//! For the binaries' `main`: SIGINT and SIGTERM (Ctrl-C on Windows) become one
//! cancellation, which the libraries take as their shutdown signal.

use tokio_util::sync::CancellationToken;

/// Waits for the first stop signal, then cancels `shutdown`.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stopping");
    shutdown.cancel();
}
