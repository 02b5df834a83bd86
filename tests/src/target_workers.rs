//! [`WorkersTarget`]: the Cloudflare Workers adapter in the real Workers runtime (`workerd`, via
//! `wrangler dev --local`), no mocks.
//!
//! The Worker is built once with `worker-build --release` and the `fault-injection` feature, into
//! [`TEST_BUILD_DIR`] (or taken prebuilt from `$PORTCULLIS_WORKER_BUILD`, a directory holding
//! worker-build's `index.js`). Each start gets its
//! own directory with a `wrangler.toml` naming that build (the same bindings as the repository's
//! `wrangler.toml`, without its `[build]` step), a `.dev.vars` holding the secrets, and a persist
//! directory; the policy goes into local KV with `wrangler kv key put --local`. Tools are the
//! repository's pinned ones: `node_modules/.bin/wrangler` (`npm ci` at the repository root),
//! `node_modules/binaryen/bin/wasm-opt`, and `wasm-bindgen` 0.2.130 (`$WASM_BINDGEN_BIN`, else
//! `~/.cargo/bin/wasm-bindgen`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::target::{drain_lines, LogLines, Target, WithoutPolicy};

/// What a recording dataset ([`AnalyticsBinding::Recording`]) logs before each data point's JSON.
pub const RECORDED_POINT: &str = "portcullis-test-analytics ";

/// What the Worker gets as its `PORTCULLIS_ANALYTICS` binding.
///
/// `wrangler dev --local` accepts an `analytics_engine_datasets` binding, but miniflare's local
/// dataset discards every write (its `writeDataPoint` is an empty function), so nothing written
/// to it can be observed. The recording and refusing datasets are plain objects with the same
/// `writeDataPoint`, put in the binding's place by a wrapper module around the built Worker: the
/// Worker's own code runs unchanged in workerd and sees only a different binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsBinding {
    /// No binding, as in the repository's `wrangler.toml` (the binding is commented out there).
    Absent,
    /// The binding as `wrangler.toml` documents it: miniflare's local dataset.
    Dataset,
    /// A dataset that logs each data point, as [`RECORDED_POINT`] and its JSON, to the console.
    Recording,
    /// A dataset whose every write throws.
    Refusing,
}

/// How long `wrangler dev` may take to report ready.
pub const WORKERS_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root (the directory holding `wrangler.toml` and `package.json`).
pub fn repo_root() -> PathBuf {
    crate::suite_dir().join("..")
}

/// Where the suite's build of the Worker goes, relative to `adapters/cloudflare`: not `build/`,
/// which `wrangler dev` and `bench/run` use, since this one has the `fault-injection` feature.
pub const TEST_BUILD_DIR: &str = "target/build-fault-injection";

/// Build the Worker with `worker-build --release --features fault-injection` in
/// `adapters/cloudflare`, into [`TEST_BUILD_DIR`] (or use `$PORTCULLIS_WORKER_BUILD`), and return
/// the directory holding `index.js`.
pub fn build_worker() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PORTCULLIS_WORKER_BUILD") {
        let dir = PathBuf::from(dir);
        if !dir.join("index.js").is_file() {
            bail!("PORTCULLIS_WORKER_BUILD={} has no index.js", dir.display());
        }
        return Ok(dir);
    }
    let root = repo_root();
    let crate_dir = root.join("adapters").join("cloudflare");
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let wasm_bindgen = std::env::var_os("WASM_BINDGEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo/bin/wasm-bindgen"));
    let worker_build = std::env::var_os("WORKER_BUILD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo/bin/worker-build"));
    let mut command = Command::new(&worker_build);
    command
        .args([
            "--release",
            "--out-dir",
            TEST_BUILD_DIR,
            "--features",
            "fault-injection",
        ])
        .current_dir(&crate_dir)
        .env("WASM_BINDGEN_BIN", &wasm_bindgen)
        .env(
            "WASM_OPT_BIN",
            root.join("node_modules/binaryen/bin/wasm-opt"),
        )
        .env(
            "ESBUILD_BIN",
            root.join("node_modules/@esbuild/linux-x64/bin/esbuild"),
        )
        .stdin(Stdio::null());
    let status = command
        .status()
        .with_context(|| format!("running {}", worker_build.display()))?;
    if !status.success() {
        bail!("worker-build --release failed ({status})");
    }
    let dir = crate_dir.join(TEST_BUILD_DIR);
    if !dir.join("index.js").is_file() {
        bail!(
            "worker-build succeeded but {} has no index.js",
            dir.display()
        );
    }
    Ok(dir)
}

/// The Worker under `wrangler dev --local`, one process (and by default one fresh persist
/// directory, so quota state never leaks) per [`Target::start`].
#[derive(Debug)]
pub struct WorkersTarget {
    build: PathBuf,
    wrangler: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    started: usize,
    /// The directory of the current run (config, `.dev.vars`, persisted state).
    run_dir: Option<PathBuf>,
    port: Option<u16>,
    /// Whether the Worker gets its `PORTCULLIS_QUOTAS` Durable Object binding.
    quota_binding: bool,
    /// What the Worker gets as `PORTCULLIS_ANALYTICS`.
    analytics: AnalyticsBinding,
}

impl WorkersTarget {
    /// A target serving the Worker in `build` (see [`build_worker`]).
    pub fn new(build: PathBuf) -> anyhow::Result<WorkersTarget> {
        let wrangler = repo_root().join("node_modules/.bin/wrangler");
        if !wrangler.is_file() {
            bail!(
                "{} is missing: run `npm ci` in the repository root",
                wrangler.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("portcullis-workers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkersTarget {
            build,
            wrangler,
            dir,
            child: None,
            log: Arc::default(),
            started: 0,
            run_dir: None,
            port: None,
            quota_binding: true,
            analytics: AnalyticsBinding::Absent,
        })
    }

    /// Runs from the next start on get `analytics` as their `PORTCULLIS_ANALYTICS` binding.
    pub fn with_analytics(mut self, analytics: AnalyticsBinding) -> Self {
        self.analytics = analytics;
        self
    }

    /// Runs from the next start on have no Durable Object binding: the quota store is missing,
    /// as with a deployment whose `wrangler.toml` forgot it.
    pub fn without_quota_binding(mut self) -> Self {
        self.quota_binding = false;
        self
    }

    fn wrangler(&self, run_dir: &Path) -> Command {
        let mut command = Command::new(&self.wrangler);
        command
            .current_dir(run_dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "1")
            .env("NO_COLOR", "1")
            .env("WRANGLER_LOG_PATH", run_dir.join("wrangler-logs"))
            // wrangler's dev registry (`~/.config/.wrangler/registry` by default) is shared by
            // every `wrangler dev` on the machine, and a session reloads its Worker when another
            // registers or leaves; a reload answers in-flight POSTs 503 "worker restarted
            // mid-request". A registry of the run's own keeps other sessions out of the suite.
            .env("WRANGLER_REGISTRY_PATH", run_dir.join("wrangler-registry"))
            .stdin(Stdio::null());
        command
    }

    /// Write `config_json` as the policy in the current run's local KV (while the Worker runs:
    /// it sees the new text within `config_ttl_s`).
    pub fn put_config(&self, config_json: &str) -> anyhow::Result<()> {
        self.put_config_bytes(config_json.as_bytes())
    }

    /// Write any bytes as the policy's KV value, text or not.
    pub fn put_config_bytes(&self, value: &[u8]) -> anyhow::Result<()> {
        let run_dir = self
            .run_dir
            .as_ref()
            .ok_or_else(|| anyhow!("not started"))?;
        self.put_config_in(run_dir, value)
    }

    fn put_config_in(&self, run_dir: &Path, config_json: impl AsRef<[u8]>) -> anyhow::Result<()> {
        let file = run_dir.join("policy.json");
        std::fs::write(&file, config_json)?;
        let out = self
            .wrangler(run_dir)
            .args([
                "kv",
                "key",
                "put",
                "--local",
                "--binding",
                "PORTCULLIS_CONFIG",
                "config",
            ])
            .arg("--path")
            .arg(&file)
            .arg("--persist-to")
            .arg(run_dir.join("state"))
            .output()
            .context("running wrangler kv key put")?;
        if !out.status.success() {
            bail!(
                "wrangler kv key put failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Delete the policy from the current run's local KV.
    pub fn delete_config(&self) -> anyhow::Result<()> {
        let run_dir = self
            .run_dir
            .as_ref()
            .ok_or_else(|| anyhow!("not started"))?;
        let out = self
            .wrangler(run_dir)
            .args([
                "kv",
                "key",
                "delete",
                "--local",
                "--binding",
                "PORTCULLIS_CONFIG",
                "config",
            ])
            .arg("--persist-to")
            .arg(run_dir.join("state"))
            .output()
            .context("running wrangler kv key delete")?;
        if !out.status.success() {
            bail!("wrangler kv key delete failed ({})", out.status);
        }
        Ok(())
    }

    /// Start on a fresh run directory. `config_json` of `None` leaves KV empty (no policy).
    pub fn start_with(
        &mut self,
        config_json: Option<&str>,
        secrets: &BTreeMap<String, String>,
    ) -> anyhow::Result<String> {
        self.stop();
        self.started += 1;
        let run_dir = self.dir.join(format!("run-{}", self.started));
        std::fs::create_dir_all(&run_dir)?;
        std::fs::write(run_dir.join("wrangler.toml"), self.wrangler_toml(&run_dir))?;
        if let Some(wrapper) = self.analytics_wrapper() {
            std::fs::write(run_dir.join(WRAPPER_MODULE), wrapper)?;
        }
        let mut vars = String::new();
        for (name, value) in secrets {
            vars.push_str(&format!("{name}={}\n", dotenv_quote(value)));
        }
        std::fs::write(run_dir.join(".dev.vars"), vars)?;
        if let Some(config) = config_json {
            self.put_config_in(&run_dir, config)?;
        }
        self.run_dir = Some(run_dir);
        self.port = None;
        self.spawn()
    }

    /// Stop `wrangler dev` and start it again on the same state, port and config.
    pub fn restart(&mut self) -> anyhow::Result<String> {
        self.stop();
        self.spawn()
    }

    /// Start `wrangler dev`, again with fresh ports when workerd lost a race for one of them:
    /// a port found free is free only until someone else binds it, and wrangler picks
    /// further internal ports of its own the same way.
    fn spawn(&mut self) -> anyhow::Result<String> {
        let fixed = self.port;
        let mut attempt = 1;
        loop {
            match self.spawn_once(fixed) {
                Err(e) if attempt < BIND_ATTEMPTS && e.to_string().contains(ADDRESS_IN_USE) => {
                    eprintln!("wrangler dev lost a port to another process; starting again");
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                result => return result,
            }
        }
    }

    fn spawn_once(&mut self, fixed: Option<u16>) -> anyhow::Result<String> {
        let run_dir = self.run_dir.clone().ok_or_else(|| anyhow!("not started"))?;
        let [fresh, inspector] = free_ports()?;
        let port = fixed.unwrap_or(fresh);
        let mut command = self.wrangler(&run_dir);
        command
            .args(["dev", "--local", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(inspector.to_string())
            .arg("--persist-to")
            .arg(run_dir.join("state"))
            .args(["--show-interactive-dev-session=false", "--log-level", "log"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that stopping it also stops workerd.
            .process_group(0);
        let mut child = command.spawn().context("spawning wrangler dev")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        self.log = log.clone();
        drain_lines(stderr, log.clone());
        let ready = wait_for_ready(stdout, log);
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

    fn wrangler_toml(&self, run_dir: &Path) -> String {
        let main = match self.analytics {
            AnalyticsBinding::Recording | AnalyticsBinding::Refusing => {
                run_dir.join(WRAPPER_MODULE)
            }
            AnalyticsBinding::Absent | AnalyticsBinding::Dataset => self.build.join("index.js"),
        };
        let mut toml = format!(
            r#"name = "portcullis-test"
main = {main:?}
compatibility_date = "2026-04-20"

[[kv_namespaces]]
binding = "PORTCULLIS_CONFIG"
id = "portcullis-test-config"
"#,
            main = main.display().to_string()
        );
        if self.quota_binding {
            toml.push_str(
                r#"
[durable_objects]
bindings = [{ name = "PORTCULLIS_QUOTAS", class_name = "QuotaCounter" }]

[[migrations]]
tag = "v1"
new_sqlite_classes = ["QuotaCounter"]
"#,
            );
        }
        if self.analytics == AnalyticsBinding::Dataset {
            toml.push_str(
                r#"
[[analytics_engine_datasets]]
binding = "PORTCULLIS_ANALYTICS"
dataset = "portcullis"
"#,
            );
        }
        toml
    }

    /// The module that serves the built Worker with a recording or refusing dataset as its
    /// `PORTCULLIS_ANALYTICS` (see [`AnalyticsBinding`]), or `None` when the Worker is served as
    /// it is built. The Worker's exports (its Durable Object class) are passed on; its `fetch`
    /// runs with an environment that is the real one plus the stand-in binding.
    fn analytics_wrapper(&self) -> Option<String> {
        let write = match self.analytics {
            AnalyticsBinding::Recording => {
                format!("console.log({RECORDED_POINT:?} + JSON.stringify(point));")
            }
            AnalyticsBinding::Refusing => {
                r#"throw new TypeError("the test's dataset refuses every write");"#.to_owned()
            }
            AnalyticsBinding::Absent | AnalyticsBinding::Dataset => return None,
        };
        let built = self.build.join("index.js").display().to_string();
        Some(format!(
            r#"import Worker from {built:?};
export * from {built:?};

const dataset = {{ writeDataPoint(point) {{ {write} }} }};

export default {{
  fetch(request, env, ctx) {{
    const bound = Object.create(env, {{ PORTCULLIS_ANALYTICS: {{ value: dataset }} }});
    return Worker.prototype.fetch.call({{ env: bound, ctx }}, request);
  }},
}};
"#
        ))
    }
}

impl Target for WorkersTarget {
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
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    fn name(&self) -> &str {
        "workers"
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

impl Drop for WorkersTarget {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The file name of [`WorkersTarget::analytics_wrapper`]'s module in a run directory.
const WRAPPER_MODULE: &str = "analytics-wrapper.js";

/// A `.dev.vars` value, double-quoted with `\` and `"` escaped and no newlines.
fn dotenv_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How often a start that lost a port race is tried in all.
const BIND_ATTEMPTS: u32 = 3;
/// What workerd prints when a port it was given is taken.
const ADDRESS_IN_USE: &str = "Address already in use";

/// Distinct free ports: every listener is held until all are chosen, so none repeats.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Keep every line of `stdout` and return once wrangler says `Ready on`.
fn wait_for_ready(
    stdout: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("Ready on") {
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
    match rx.recv_timeout(WORKERS_START_TIMEOUT) {
        Ok(()) => Ok(()),
        Err(mpsc::RecvTimeoutError::Timeout) => bail!(
            "wrangler dev not ready within {} s",
            WORKERS_START_TIMEOUT.as_secs()
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => bail!("wrangler dev exited before ready"),
    }
}

/// One request no route can act on (`OPTIONS /` is a 404 or 405: decided before authentication,
/// quotas and the origin), so that the isolate loads the policy and fetches remote key sets
/// before the first vector, as `portcullis serve` does before it reports ready.
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
        .context("warm-up request to the Worker")?;
    if !answer.starts_with(b"HTTP/1.1 ") {
        bail!("warm-up request got no HTTP response");
    }
    Ok(())
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}
