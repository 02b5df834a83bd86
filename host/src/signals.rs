//! SIGINT and SIGTERM, for a graceful shutdown.

/// SIGINT and SIGTERM, listened for from the moment of [`Signals::install`].
///
/// Installed before the readiness line is printed: a supervisor that sends SIGTERM right after
/// seeing it must get a graceful shutdown, not the default disposition's abrupt exit.
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Start listening. Must run inside the tokio runtime. If the handlers cannot be installed
    /// the gateway still serves; it just cannot be shut down gracefully.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                (Err(e), _) | (_, Err(e)) => {
                    crate::output::notice(
                        true,
                        "signals_unavailable",
                        &format!("cannot listen for SIGINT/SIGTERM: {e}"),
                        &[],
                    );
                    None
                }
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Resolves on the first SIGINT or SIGTERM since [`Signals::install`].
    pub async fn recv(self) {
        #[cfg(unix)]
        match self.streams {
            Some((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending::<()>().await,
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
