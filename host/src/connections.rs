//! How the native server holds its clients' connections: how long a client may take to send a
//! request head, how many connections are served at once, and the open-file limit that lets it
//! serve them.
//!
//! These are transport settings of `portcullis serve` (command-line options, not the policy):
//! what a request may do is the policy's; how long a socket may sit there, and how many may,
//! is the machine's.
//!
//! - **Header timeout** ([`DEFAULT_HEADER_TIMEOUT`]). A client gets this long, from the moment
//!   the gateway starts waiting for a request head, to send all of it (request line and
//!   headers). Past it the connection is closed, however steadily the bytes trickle in, so a
//!   slowloris client holds a connection for this long at most. For the first request the wait
//!   starts at the accept; the same wait covers a keep-alive connection between two requests,
//!   so it is also how long an idle connection is kept open (on a connection whose first byte
//!   was slow to come, what was left of the timeout when it came: hyper holds one timeout per
//!   connection).
//! - **Connection cap** ([`DEFAULT_MAX_CONNECTIONS`]). At most this many client connections
//!   are served at once, across all serving threads. At the cap the gateway stops accepting;
//!   new connections wait in the kernel's listen queue until a served one closes (an idle one
//!   does within the header timeout), rather than being refused. The cap keeps file
//!   descriptors for the connections to origins: without it, a flood of idle clients would use
//!   up the open-file limit and every origin request would fail.
//! - **Open-file limit.** At start-up the soft limit is raised to the hard limit (as nginx's
//!   `worker_rlimit_nofile` and Go's runtime do), and the cap is lowered if the limit still
//!   cannot hold two descriptors per connection (the client's and one to an origin) plus
//!   [`SPARE_DESCRIPTORS`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The header timeout unless `--header-timeout-ms` says otherwise: far longer than any real
/// client needs to send a head, short enough that a slow or idle connection is soon reclaimed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection cap unless `--max-connections` says otherwise (and the open-file limit
/// allows it).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors kept for everything that is not a connection: the listener, standard streams,
/// key-set fetches, the runtime's own.
pub const SPARE_DESCRIPTORS: u64 = 64;

/// Descriptors one served connection may need: its own and one to an origin.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// The connection settings as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// See the module docs.
    pub header_timeout: Duration,
    /// The cap asked for; `None` is [`DEFAULT_MAX_CONNECTIONS`], quietly fitted to the limit.
    pub max_connections: Option<usize>,
    /// How long requests in flight at a shutdown signal get to finish before the process exits
    /// anyway (a deploy should not wait on a client streaming a huge upload).
    pub drain: Duration,
}

/// How many client connections are open now (see [`Connections::open`]).
#[derive(Debug, Clone)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// Connections accepted and not yet closed.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open connection (see [`Connections::opened`]).
#[derive(Debug)]
pub struct Opened(Arc<AtomicUsize>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`Settings::drain`] by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: None,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// The settings in force, shared by every serving thread: one count of connections for the
/// whole process.
#[derive(Debug, Clone)]
pub struct Connections {
    header_timeout: Duration,
    drain: Duration,
    /// TLS on every connection (`--tls-cert`), or plain HTTP/1.
    tls: Option<crate::tls::Tls>,
    open: Arc<AtomicUsize>,
    max: usize,
    slots: Arc<Semaphore>,
}

impl Connections {
    /// Put `settings` into force: raise the open-file limit, then fit the cap to it. Returns
    /// the connections and, when an explicitly asked-for cap had to be lowered (or the limit
    /// could not be read or raised), a line for the operator.
    pub fn start(settings: Settings) -> (Connections, Option<String>) {
        let (limit, limit_note) = match raise_open_file_limit() {
            Ok(limit) => (Some(limit), None),
            Err(why) => (None, Some(why)),
        };
        let (max, cap_note) = fit_cap(settings.max_connections, limit);
        let note = match (limit_note, cap_note) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        let mut connections = Connections::new(settings.header_timeout, max);
        connections.drain = settings.drain;
        (connections, note)
    }

    /// Connections with this header timeout and cap, leaving the open-file limit alone.
    pub fn new(header_timeout: Duration, max: usize) -> Connections {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Connections {
            header_timeout,
            drain: DEFAULT_DRAIN,
            tls: None,
            open: Arc::default(),
            max,
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// The same connections over `tls`, when given.
    pub fn with_tls(mut self, tls: Option<crate::tls::Tls>) -> Connections {
        self.tls = tls;
        self
    }

    /// The listener's TLS, if it has any.
    pub fn tls(&self) -> Option<&crate::tls::Tls> {
        self.tls.as_ref()
    }

    /// The header timeout.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// A handle that reads how many client connections are open, for metrics.
    pub fn open(&self) -> OpenConnections {
        OpenConnections(Arc::clone(&self.open))
    }

    /// Count one accepted connection as open until the guard is dropped. (Slots are no count:
    /// each accept loop holds one while it waits for the next connection.)
    pub fn opened(&self) -> Opened {
        self.open.fetch_add(1, Ordering::Relaxed);
        Opened(Arc::clone(&self.open))
    }

    /// How long in-flight requests get after a shutdown signal ([`Settings::drain`]).
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// The cap in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Wait for a free slot; the connection holds it until the permit is dropped.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        match Arc::clone(&self.slots).acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed; were it, serving must not stop for it.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The cap for a request of `asked` (`None`: the default) under an open-file limit of `limit`
/// (`None`: unknown), and a line for the operator when an explicit request was lowered.
pub fn fit_cap(asked: Option<usize>, limit: Option<u64>) -> (usize, Option<String>) {
    let wanted = asked.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1);
    let Some(limit) = limit else {
        return (wanted, None);
    };
    let fits = limit.saturating_sub(SPARE_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION;
    let fits = usize::try_from(fits).unwrap_or(usize::MAX).max(1);
    if wanted <= fits {
        return (wanted, None);
    }
    let note = asked.map(|asked| {
        format!(
            "--max-connections {asked} lowered to {fits}: the open-file limit is {limit} \
             (two per connection, {SPARE_DESCRIPTORS} spare)"
        )
    });
    (fits, note)
}

/// Raise the soft open-file limit to the hard limit; the soft limit now in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the call only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
        // Refused (macOS caps the soft limit below an unlimited hard one): keep the old limit,
        // which the cap is then fitted to.
    }
    // `rlim_t` is `u64` on Linux and macOS but `i64` on FreeBSD; the limit is never negative.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// Elsewhere the limit is neither read nor raised, and the cap is taken as asked.
#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Result<u64, String> {
    Err("the open-file limit is not known on this platform".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_fits_the_limit_quietly() {
        assert_eq!(
            fit_cap(None, Some(1_000_000)),
            (DEFAULT_MAX_CONNECTIONS, None)
        );
        assert_eq!(fit_cap(None, Some(1024)), (480, None));
        assert_eq!(fit_cap(None, None), (DEFAULT_MAX_CONNECTIONS, None));
    }

    #[test]
    fn an_explicit_cap_is_kept_when_it_fits_and_lowered_with_a_note_when_not() {
        assert_eq!(fit_cap(Some(100), Some(1024)), (100, None));
        let (cap, note) = fit_cap(Some(5000), Some(1024));
        assert_eq!(cap, 480);
        assert_eq!(
            note.as_deref(),
            Some(
                "--max-connections 5000 lowered to 480: the open-file limit is 1024 \
                 (two per connection, 64 spare)"
            )
        );
    }

    #[test]
    fn a_tiny_limit_still_serves_one_connection() {
        assert_eq!(fit_cap(None, Some(10)).0, 1);
        assert_eq!(fit_cap(Some(0), None).0, 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_open_file_limit().unwrap_or_else(|e| panic!("{e}"));
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_open_file_limit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        #[allow(clippy::unnecessary_cast)]
        let now = limit.rlim_cur as u64;
        assert_eq!(now, soft);
        assert!(soft > 0);
    }

    #[tokio::test]
    async fn open_connections_are_those_accepted_and_not_closed() {
        let connections = Connections::new(Duration::from_secs(1), 10);
        let open = connections.open();
        let _waiting = connections.slot().await;
        let a = connections.clone().opened();
        let _b = connections.opened();
        assert_eq!(
            open.count(),
            2,
            "a slot held by a waiting accept loop is no connection"
        );
        drop(a);
        assert_eq!(open.count(), 1);
    }

    #[tokio::test]
    async fn slots_run_out_at_the_cap_and_come_back() {
        let connections = Connections::new(Duration::from_secs(1), 2);
        let a = connections.slot().await;
        let _b = connections.slot().await;
        let third = tokio::time::timeout(Duration::from_millis(50), connections.slot()).await;
        assert!(third.is_err(), "a third slot under a cap of 2");
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(50), connections.slot()).await;
        assert!(third.is_ok(), "a slot freed");
    }
}
