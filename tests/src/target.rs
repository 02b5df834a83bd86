//! Targets: something that can run a gateway for a given policy and tell where it listens.
//!
//! The runner knows nothing about how a gateway is started; it asks a [`Target`] for a fresh
//! gateway per vector file. [`NativeTarget`] spawns the `portcullis` binary; [`ExternalTarget`]
//! points at a gateway someone else started (e.g. `wrangler dev`) for a single file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// A way to run a gateway.
pub trait Target {
    /// Start a gateway enforcing `config_json`, with `secrets` available to `secret_env`.
    /// Returns the base URL, `http://host:port`.
    fn start(
        &mut self,
        config_json: &str,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String>;
    /// Stop the gateway started last (a no-op when none runs).
    fn stop(&mut self);
    /// A short name for reports and xfail lists (`native`, `worker`, `spin`).
    fn name(&self) -> &str;
    /// Recent diagnostic output from the gateway (its stderr), for failure reports.
    fn diagnostics(&self) -> String {
        String::new()
    }
    /// Start a gateway with no policy at all, for a vector file whose `config` is `null`.
    ///
    /// A runtime that serves without a policy (answering 503 `no-policy`) gives its base URL. A
    /// runtime that by design refuses to start without one gives [`WithoutPolicy::Refused`],
    /// and only after checking that it refused properly: exited non-zero, never listening. By
    /// default a target cannot do either, which fails the file.
    fn start_without_policy(
        &mut self,
        _secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<WithoutPolicy> {
        bail!(
            "target {} cannot start a gateway without a policy",
            self.name()
        )
    }
    /// The gateway's output so far (stdout and stderr lines as read), shared with the threads
    /// that read it, so a check can wait for a log line; `None` if this target cannot see it.
    fn log_lines(&self) -> Option<LogLines> {
        None
    }
    /// The PEM CA to trust when the gateway listens with TLS: requests then go as HTTP/2 over
    /// HTTPS ([`crate::client_h2`]). `None` (the default): plain HTTP/1.1.
    fn tls_ca(&self) -> Option<PathBuf> {
        None
    }
}

/// A gateway's output lines, appended as they are read (the oldest dropped beyond a limit).
pub type LogLines = Arc<Mutex<Vec<String>>>;

/// How a target started without a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithoutPolicy {
    /// It serves at this base URL, and must answer 503 `no-policy`.
    Serving(String),
    /// It refused to start, as it should, in the way described (exit status, first output).
    Refused(String),
}

/// The line a `portcullis serve` process prints once it accepts connections.
pub const LISTENING_PREFIX: &str = "portcullis: listening on ";

/// The URL a `portcullis serve` stderr line says it listens on: the `listening` event's
/// `address` (JSON, the default), or [`LISTENING_PREFIX`] and the URL (`--log-format text`).
pub fn listening_url(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix(LISTENING_PREFIX) {
        return Some(rest.trim().to_owned());
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    (event["event"] == "listening").then(|| event["address"].as_str().map(str::to_owned))?
}

/// How long a gateway may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of stderr kept for diagnostics.
const KEPT_LINES: usize = 200;

/// The native binary: `portcullis serve --config FILE --listen 127.0.0.1:0`, secrets as
/// environment variables, ready when stderr says `portcullis: listening on http://ADDR`.
#[derive(Debug)]
pub struct NativeTarget {
    binary: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    started: usize,
    /// `--tls-cert`, `--tls-key` and the CA that issued the certificate, when serving HTTPS.
    tls: Option<[PathBuf; 3]>,
}

impl NativeTarget {
    /// A target that runs `binary`, writing configs into a fresh temporary directory.
    pub fn new(binary: PathBuf) -> anyhow::Result<NativeTarget> {
        let dir =
            std::env::temp_dir().join(format!("portcullis-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(NativeTarget {
            binary,
            dir,
            child: None,
            log: Arc::default(),
            started: 0,
            tls: None,
        })
    }

    /// The same target serving HTTPS (HTTP/2 and HTTP/1.1) with `cert` and `key`, which `ca`
    /// issued: the runner then sends every request as HTTP/2.
    pub fn with_tls(mut self, cert: PathBuf, key: PathBuf, ca: PathBuf) -> NativeTarget {
        self.tls = Some([cert, key, ca]);
        self
    }

    /// The binary this target runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Target for NativeTarget {
    fn start(
        &mut self,
        config_json: &str,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.stop();
        self.started += 1;
        let config = self.dir.join(format!("config-{}.json", self.started));
        std::fs::write(&config, config_json)
            .with_context(|| format!("writing {}", config.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .envs(secrets)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some([cert, key, _]) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        self.log = log.clone();
        // The per-request log lines go to stdout: keep the latest for failure reports.
        drain_lines(stdout, log.clone());
        let url = match wait_for_listening(stderr, log) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "{e} (exit status {status:?}); stderr:\n{}",
                    self.diagnostics()
                );
            }
        };
        self.child = Some(child);
        Ok(url)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `native` over HTTPS too: the same gateway, so the same `expect_on` entries apply.
    fn name(&self) -> &str {
        "native"
    }

    fn tls_ca(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|[_, _, ca]| ca.clone())
    }

    fn diagnostics(&self) -> String {
        let lines = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let skip = lines.len().saturating_sub(20);
        lines[skip..].join("\n")
    }

    /// `portcullis serve` on a policy file that does not exist: natively there is no gateway
    /// without a policy, since `serve` refuses to start (as for an invalid one). Checked: it
    /// exits non-zero within [`START_TIMEOUT`] and never prints the listening line.
    fn start_without_policy(
        &mut self,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<WithoutPolicy> {
        self.stop();
        let config = self.dir.join("no-policy.json");
        if config.exists() {
            std::fs::remove_file(&config)?;
        }
        let mut child = Command::new(&self.binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .envs(secrets)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`serve` without a policy file still runs after {START_TIMEOUT:?}; it must refuse to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = reader
            .join()
            .map_err(|_| anyhow!("stderr reader panicked"))?;
        if let Some(line) = lines.iter().find(|l| listening_url(l).is_some()) {
            bail!("`serve` without a policy file listened ({line:?}) before exiting {status}");
        }
        match status.code() {
            Some(code) if code != 0 => Ok(WithoutPolicy::Refused(format!(
                "`portcullis serve` without its policy file exited {code} without listening: {}",
                lines.first().map_or("(no output)", String::as_str)
            ))),
            _ => bail!("`serve` without a policy file exited {status}; it must fail"),
        }
    }

    fn log_lines(&self) -> Option<LogLines> {
        Some(self.log.clone())
    }
}

impl Drop for NativeTarget {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Read `stderr` on a thread (for the life of the process, so the pipe never fills) and return
/// the URL from the listening line, or fail if the process exits or stays silent too long.
pub fn wait_for_listening(
    stderr: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = listening_url(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(url);
                }
            }
            keep(&log, line);
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        Ok(url) => bail!("listening line names no http(s):// URL: {url:?}"),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("no listening line within {} s", START_TIMEOUT.as_secs())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the gateway exited before listening"),
    }
}

fn keep(log: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut l) = log.lock() {
        if l.len() >= KEPT_LINES {
            l.remove(0);
        }
        l.push(line);
    }
}

/// Keep reading `pipe` on a thread (so the child never blocks on a full pipe), keeping its lines.
pub fn drain_lines(pipe: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            keep(&log, line);
        }
    });
}

/// A gateway started by someone else, already running the file's config (one file per run).
#[derive(Debug, Clone)]
pub struct ExternalTarget {
    /// Its base URL.
    pub base_url: String,
    /// Its name for reports and xfail lists.
    pub name: String,
}

impl Target for ExternalTarget {
    fn start(
        &mut self,
        _config_json: &str,
        _secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        Ok(self.base_url.trim_end_matches('/').to_owned())
    }

    fn stop(&mut self) {}

    fn name(&self) -> &str {
        &self.name
    }

    /// Whoever started it is trusted to have given it no policy.
    fn start_without_policy(
        &mut self,
        _secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<WithoutPolicy> {
        Ok(WithoutPolicy::Serving(
            self.base_url.trim_end_matches('/').to_owned(),
        ))
    }
}

/// Find the `portcullis` binary: `$PORTCULLIS_BIN` if set, else build it with cargo (the same
/// profile as the running test executable, with the `fault-injection` feature the
/// `outside_decision` vectors need) and use `target/<profile>/portcullis`. A later plain
/// `cargo build -p portcullis` rebuilds it without the feature.
pub fn locate_native_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PORTCULLIS_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("PORTCULLIS_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    // The test executable lives in target/<profile>/deps/; the binary goes to target/<profile>/.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "portcullis",
            "--bin",
            "portcullis",
            "--features",
            "fault-injection",
            "--manifest-path",
        ])
        .arg(&manifest);
    if release {
        command.arg("--release");
    }
    let status = command
        .status()
        .context("running cargo build -p portcullis")?;
    if !status.success() {
        bail!("cargo build -p portcullis failed ({status})");
    }
    let bin = profile_dir.join(format!("portcullis{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!("built portcullis, but {} does not exist", bin.display());
    }
    Ok(bin)
}
