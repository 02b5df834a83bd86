//! `serve`'s options that are the host's: where to listen, how to hold connections, how to stop,
//! and how to write the process's lines. The handler's own options (its policy file) are its
//! command line's; it flattens these in.

use std::time::Duration;

use crate::connections::{Settings, DEFAULT_HEADER_TIMEOUT};

/// `--header-timeout-ms` in the default's unit, and its upper bound (an hour: a longer wait is
/// a mistake, not a setting).
const DEFAULT_HEADER_TIMEOUT_MS: u64 = DEFAULT_HEADER_TIMEOUT.as_millis() as u64;
const MAX_HEADER_TIMEOUT_MS: u64 = 3_600_000;

/// The host's options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port (the readiness line shows it).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// How long a client may take to send a request head (request line and headers), and
    /// how long an idle keep-alive connection is kept; past it the connection is closed.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_HEADER_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_HEADER_TIMEOUT_MS))]
    pub header_timeout_ms: u64,
    /// Most client connections served at once; beyond it new ones wait in the listen queue
    /// until one closes [default: 10000, or fewer if the open-file limit cannot hold two
    /// descriptors per connection].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, apart from the
    /// public one. Off unless given; keep it on loopback or a private network.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// On SIGTERM or SIGINT, stop accepting and give requests in flight this long to finish
    /// before exiting (at once when idle).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_s: u64,
    /// `json` (one object per line on stderr: events, the audit trail, a refused policy's
    /// errors) or `text` (`portcullis: ...` lines, for people).
    #[arg(long, value_name = "FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this PEM certificate chain; needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl Options {
    /// The connection settings these options ask for (already range-checked by clap).
    pub fn settings(&self) -> Settings {
        Settings {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            drain: Duration::from_secs(self.drain_s),
        }
    }

    /// The listener's TLS, when --tls-cert and --tls-key are given: read now, so a bad file
    /// stops the start with what is wrong.
    pub fn tls(&self) -> Result<Option<crate::tls::Tls>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::Tls::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the process's lines are text (`--log-format text`) rather than JSON.
    pub fn text(&self) -> bool {
        self.log_format == "text"
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.options)
    }

    #[test]
    fn the_defaults_are_the_loopback_port_json_lines_and_no_admin() {
        let options = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(options.listen, "127.0.0.1:8787");
        assert_eq!(options.admin, None, "no admin listener unless asked");
        assert!(!options.text(), "JSON lines unless asked");
        assert_eq!(options.settings(), Settings::default());
        assert_eq!(Settings::default().header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn settings_are_read_and_range_checked() {
        let options = parse(&[
            "--header-timeout-ms",
            "250",
            "--max-connections",
            "64",
            "--drain-s",
            "3",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            options.settings(),
            Settings {
                header_timeout: Duration::from_millis(250),
                max_connections: Some(64),
                drain: Duration::from_secs(3),
            }
        );
        for bad in [
            ["--header-timeout-ms", "0"],
            ["--header-timeout-ms", "3600001"],
            ["--max-connections", "0"],
            ["--max-connections", "-1"],
            ["--drain-s", "3601"],
            ["--log-format", "xml"],
            ["--tls-cert", "cert.pem"],
            ["--tls-key", "key.pem"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
