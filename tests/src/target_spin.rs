//! [`SpinTarget`]: the Spin adapter (`adapters/spin`) under `spin up`, or under the test host
//! `portcullis-spin-host up` when no Spin CLI is at hand. Both get the same command line:
//!
//! ```text
//! PROGRAM up -f RUN/spin.toml --listen 127.0.0.1:PORT --state-dir RUN/state --key-value config=POLICY
//! ```
//!
//! `RUN/spin.toml` is written for each start: the repository's component with the default store,
//! `allowed_outbound_hosts = ["http://127.0.0.1:*"]` (the suite's origins and test IdP listen on
//! loopback ports chosen at run time; [`SpinTarget::set_allowed_outbound_hosts`] narrows it), and
//! one variable per secret, named as the adapter reads `secret_env` (`TEST_HS_SECRET` is variable
//! `test_hs_secret`), its value in `SPIN_VARIABLE_TEST_HS_SECRET`. Every start gets a fresh state
//! directory, so the default key-value store (policy and quota state) never leaks between files.
//!
//! Where things are:
//! - `$PORTCULLIS_SPIN_UP`: the program run as `PROGRAM up ...`. Default: `spin` on `PATH`, else
//!   the test host where `scripts/test-spin` builds it ([`cached_host_binary`]).
//! - `$PORTCULLIS_SPIN_HOST`: the test host binary, used for `kv-set` / `kv-delete` on a state
//!   directory (the default store's SQLite file has Spin's own layout, so this also works while
//!   a real `spin up` serves it). Default: [`cached_host_binary`].
//! - `$PORTCULLIS_SPIN_COMPONENT`: the component. Default:
//!   `adapters/spin/target/wasm32-wasip2/release/portcullis_spin.wasm`, built by
//!   [`build_component`] (with the `fault-injection` feature) unless `$PORTCULLIS_SPIN_PREBUILT=1`
//!   (`scripts/test-spin` has built it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::target::{LogLines, Target, WithoutPolicy};

/// How long `up` may take to print its `Serving http://` line (it compiles the component).
pub const SPIN_START_TIMEOUT: Duration = Duration::from_secs(120);

/// The key of the default store the adapter reads its policy from.
pub const POLICY_KEY: &str = "config";

/// The prefix of the per-request timing lines the test host prints on stderr when
/// `PORTCULLIS_SPIN_HOST_TIMINGS=1`.
pub const TIMING_PREFIX: &str = "spin-host-timing ";

/// The repository root.
pub fn repo_root() -> PathBuf {
    crate::suite_dir().join("..")
}

/// Where `scripts/test-spin` builds the test host:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/portcullis/spin-host-target/release/portcullis-spin-host`.
pub fn cached_host_binary() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache")
        });
    cache.join("portcullis/spin-host-target/release/portcullis-spin-host")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// What runs the app, and with what.
#[derive(Debug, Clone)]
pub struct SpinSetup {
    /// Run as `up -f MANIFEST ...`: `spin` or the test host.
    pub up: PathBuf,
    /// The test host, for `kv-set` / `kv-delete` (absent: the policy cannot be changed live).
    pub kv_tool: Option<PathBuf>,
    /// The component (`.wasm`).
    pub component: PathBuf,
}

impl SpinSetup {
    /// From the environment (see the module docs).
    pub fn from_env() -> anyhow::Result<SpinSetup> {
        let host = env_path("PORTCULLIS_SPIN_HOST").or_else(|| {
            let cached = cached_host_binary();
            cached.is_file().then_some(cached)
        });
        let up = env_path("PORTCULLIS_SPIN_UP")
            .or_else(|| on_path("spin"))
            .or_else(|| host.clone())
            .ok_or_else(|| {
                anyhow!(
                    "no Spin to run: no `spin` on PATH and no test host at {} (run scripts/test-spin, or set PORTCULLIS_SPIN_UP)",
                    cached_host_binary().display()
                )
            })?;
        if !up.is_file() {
            bail!("{} is not a file", up.display());
        }
        let component = env_path("PORTCULLIS_SPIN_COMPONENT").unwrap_or_else(default_component);
        Ok(SpinSetup {
            up,
            kv_tool: host.filter(|h| h.is_file()),
            component,
        })
    }

    /// True when `up` is the real Spin CLI rather than the test host.
    pub fn is_real_spin(&self) -> bool {
        self.up.file_name().is_some_and(|n| n == "spin")
    }
}

/// Where `cargo build --target wasm32-wasip2 --release` in `adapters/spin` puts the component.
pub fn default_component() -> PathBuf {
    repo_root().join("adapters/spin/target/wasm32-wasip2/release/portcullis_spin.wasm")
}

/// Build the adapter (`cargo build --target wasm32-wasip2 --release --locked --features
/// fault-injection` in `adapters/spin`, for the `outside_decision` vectors), unless
/// `$PORTCULLIS_SPIN_PREBUILT` or `$PORTCULLIS_SPIN_COMPONENT` is set. A later build without
/// the feature (`spin build`, `bench/run`) rebuilds the component without it.
pub fn build_component() -> anyhow::Result<()> {
    if ["PORTCULLIS_SPIN_PREBUILT", "PORTCULLIS_SPIN_COMPONENT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
    {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--locked",
            "--features",
            "fault-injection",
        ])
        .current_dir(repo_root().join("adapters").join("spin"))
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .status()
        .context("running cargo build for adapters/spin")?;
    if !status.success() {
        bail!("cargo build --target wasm32-wasip2 --release in adapters/spin failed ({status})");
    }
    Ok(())
}

/// The app under `up`, one process and one fresh state directory per [`Target::start`].
#[derive(Debug)]
pub struct SpinTarget {
    setup: SpinSetup,
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    timings: Arc<Mutex<Vec<String>>>,
    started: usize,
    run_dir: Option<PathBuf>,
    port: Option<u16>,
    config: Option<String>,
    secrets: BTreeMap<String, String>,
    extra_env: Vec<(String, String)>,
    allowed_outbound_hosts: Vec<String>,
}

impl SpinTarget {
    /// A target for `setup`, keeping run directories under a fresh temporary directory.
    pub fn new(setup: SpinSetup) -> anyhow::Result<SpinTarget> {
        let dir = std::env::temp_dir().join(format!("portcullis-spin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(SpinTarget {
            setup,
            dir,
            child: None,
            log: Arc::default(),
            timings: Arc::default(),
            started: 0,
            run_dir: None,
            port: None,
            config: None,
            secrets: BTreeMap::new(),
            extra_env: Vec::new(),
            allowed_outbound_hosts: vec!["http://127.0.0.1:*".to_owned()],
        })
    }

    /// What runs the app.
    pub fn setup(&self) -> &SpinSetup {
        &self.setup
    }

    /// `allowed_outbound_hosts` for the next start (default `["http://127.0.0.1:*"]`).
    pub fn set_allowed_outbound_hosts(&mut self, hosts: &[&str]) {
        self.allowed_outbound_hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
    }

    /// The manifest for a run: the component, the default store, the allowed hosts, and one
    /// required secret variable per secret.
    pub fn manifest(&self) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let mut app_vars = String::from("config_key = { default = \"config\" }\n");
        let mut component_vars = String::from("config_key = \"{{ config_key }}\"\n");
        for name in self.secrets.keys() {
            let var = name.to_ascii_lowercase();
            app_vars.push_str(&format!("{var} = {{ required = true, secret = true }}\n"));
            component_vars.push_str(&format!("{var} = \"{{{{ {var} }}}}\"\n"));
        }
        let hosts: Vec<String> = self
            .allowed_outbound_hosts
            .iter()
            .map(|h| quote(h))
            .collect();
        format!(
            "# Written by the conformance suite (tests/src/target_spin.rs) for one run.\n\
             spin_manifest_version = 2\n\n\
             [application]\nname = \"portcullis-conformance\"\n\n\
             [variables]\n{app_vars}\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"portcullis\"\n\n\
             [component.portcullis]\nsource = {source}\n\
             key_value_stores = [\"default\"]\n\
             allowed_outbound_hosts = [{hosts}]\n\n\
             [component.portcullis.variables]\n{component_vars}",
            source = quote(&self.setup.component.to_string_lossy()),
            hosts = hosts.join(", "),
        )
    }

    /// Extra environment for the next start (e.g. `PORTCULLIS_SPIN_HOST_TIMINGS=1`).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.extra_env.push((name.to_owned(), value.to_owned()));
    }

    /// The current run's state directory (the default store is `sqlite_key_value.db` in it).
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("state"))
    }

    /// Take the timing lines (JSON after [`TIMING_PREFIX`]) printed since the last call.
    pub fn take_timings(&self) -> Vec<String> {
        self.timings
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    fn kv(&self, args: &[&str]) -> anyhow::Result<()> {
        let tool = self.setup.kv_tool.as_ref().ok_or_else(|| {
            anyhow!("changing the store needs the test host (PORTCULLIS_SPIN_HOST)")
        })?;
        let state = self.state_dir().ok_or_else(|| anyhow!("not started"))?;
        let out = Command::new(tool)
            .arg(args[0])
            .arg("--state-dir")
            .arg(&state)
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", tool.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} failed ({}): {}",
                tool.display(),
                args[0],
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Replace the policy in the running app's store.
    pub fn put_config(&self, config_json: &str) -> anyhow::Result<()> {
        let run_dir = self
            .run_dir
            .as_ref()
            .ok_or_else(|| anyhow!("not started"))?;
        let file = run_dir.join("policy-update.json");
        std::fs::write(&file, config_json)?;
        let file = file.to_string_lossy().into_owned();
        self.kv(&["kv-set", POLICY_KEY, "--value-file", &file])
    }

    /// Delete the policy from the running app's store.
    pub fn delete_config(&self) -> anyhow::Result<()> {
        self.kv(&["kv-delete", POLICY_KEY])
    }

    /// Start on a fresh state directory; `config_json` of `None` leaves the store empty.
    pub fn start_with(
        &mut self,
        config_json: Option<&str>,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.stop();
        self.started += 1;
        let run_dir = self.dir.join(format!("run-{}", self.started));
        std::fs::create_dir_all(run_dir.join("state"))?;
        self.run_dir = Some(run_dir);
        self.port = None;
        self.config = config_json.map(str::to_owned);
        self.secrets = secrets.clone();
        self.spawn()
    }

    /// Stop and start again on the same state directory and port, without `--key-value` (so
    /// the store keeps whatever it holds).
    pub fn restart(&mut self) -> anyhow::Result<String> {
        self.stop();
        self.config = None;
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<String> {
        let run_dir = self.run_dir.clone().ok_or_else(|| anyhow!("not started"))?;
        let port = match self.port {
            Some(p) => p,
            None => free_port()?,
        };
        let manifest = run_dir.join("spin.toml");
        std::fs::write(&manifest, self.manifest())
            .with_context(|| format!("writing {}", manifest.display()))?;
        let mut command = Command::new(&self.setup.up);
        command
            .arg("up")
            .arg("-f")
            .arg(&manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(run_dir.join("state"));
        if let Some(config) = &self.config {
            command
                .arg("--key-value")
                .arg(format!("{POLICY_KEY}={config}"));
        }
        for (name, value) in &self.secrets {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
            .current_dir(&run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it stops anything it started.
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {} up", self.setup.up.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        self.log = log.clone();
        keep_stderr(stderr, log.clone(), self.timings.clone());
        let ready = wait_for_serving(stdout, log);
        self.child = Some(child);
        self.port = Some(port);
        let base = format!("http://127.0.0.1:{port}");
        if let Err(e) = ready
            .and_then(|()| wait_for_port(port))
            .and_then(|()| warm_up(port))
        {
            self.stop();
            bail!("{e}; output:\n{}", self.diagnostics());
        }
        Ok(base)
    }
}

impl Target for SpinTarget {
    fn start(
        &mut self,
        config_json: &str,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.start_with(Some(config_json), secrets)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    fn name(&self) -> &str {
        "spin"
    }

    fn diagnostics(&self) -> String {
        let lines = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let skip = lines.len().saturating_sub(40);
        lines[skip..].join("\n")
    }
    /// No policy in the store: every request is answered 503 `no-policy`.
    fn start_without_policy(
        &mut self,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<WithoutPolicy> {
        self.start_with(None, secrets).map(WithoutPolicy::Serving)
    }

    fn log_lines(&self) -> Option<LogLines> {
        Some(self.log.clone())
    }
}

impl Drop for SpinTarget {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Keep stderr lines for diagnostics, and timing lines separately (all of them).
fn keep_stderr(
    stderr: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    timings: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(json) = line.strip_prefix(TIMING_PREFIX) {
                if let Ok(mut t) = timings.lock() {
                    t.push(json.to_owned());
                }
                continue;
            }
            if let Ok(mut l) = log.lock() {
                if l.len() >= 400 {
                    l.remove(0);
                }
                l.push(line);
            }
        }
    });
}

/// Keep every stdout line and return once `up` prints `Serving http://` (Spin and the test host
/// both do, on stdout).
fn wait_for_serving(
    stdout: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Read to the end (the component's stdout follows), so the pipe never fills.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("Serving http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            if let Ok(mut l) = log.lock() {
                if l.len() >= 400 {
                    l.remove(0);
                }
                l.push(line);
            }
        }
    });
    match rx.recv_timeout(SPIN_START_TIMEOUT) {
        Ok(()) => Ok(()),
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "`up` did not print `Serving http://` within {} s",
            SPIN_START_TIMEOUT.as_secs()
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("`up` exited before serving"),
    }
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

/// One request no route can act on (`OPTIONS /`: a 404 or 405, decided before authentication,
/// quotas and the origin), so that the first vector does not pay for a cold start.
fn warm_up(port: u16) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(
        format!("OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .context("warm-up request to the app")?;
    if !answer.starts_with(b"HTTP/1.1 ") {
        bail!("warm-up request got no HTTP response");
    }
    Ok(())
}
