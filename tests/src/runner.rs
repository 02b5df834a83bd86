//! Running vector files against a target: placeholders, requests, comparison, report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::Value;

use crate::client::{self, BodyFraming, Exchange, Response, Timed, WireRequest};
use crate::idp::{IdpMode, IdpServer};
use crate::origin::{Record, RecordingOrigin, ID_HEADER};
use crate::target::{LogLines, Target, WithoutPolicy};
use crate::vector::{Burst, Case, Expect, OriginExpect, Request, Step, VectorFile};

/// Problem members the gateway may send; anything else would be a leak of internals.
const PROBLEM_MEMBERS: &[&str] = &["type", "title", "status", "detail", "request_id", "errors"];

/// Media type of gateway errors.
const PROBLEM_JSON: &str = "application/problem+json";

/// Problem type prefix.
const PROBLEM_TYPE_BASE: &str = "urn:portcullis:problem:";

/// The request id header on origin requests and gateway responses.
const REQUEST_ID_HEADER: &str = "x-portcullis-request-id";

/// Expected failures for one target: `file-stem/case-name` (or `file-stem/*`) -> reason.
/// Listed cases still run; their failures are printed as XFAIL, and a listed case that passes is
/// an XPASS, which fails the run so the list stays honest.
#[derive(Debug, Clone, Default)]
pub struct XFail {
    entries: BTreeMap<String, Expected>,
}

/// One entry of an expected-failure list.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum Expected {
    /// `"reason"`: the case fails on this target; passing is reported as a failure (XPASS), so
    /// a fixed case cannot stay listed.
    Fails(String),
    /// `{"flaky": "reason"}`: the case fails only sometimes, for a reason outside Portcullis
    /// (local tooling); either outcome is accepted and a failure is still shown as XFAIL.
    Flaky { flaky: String },
}

impl XFail {
    /// No expected failures.
    pub fn none() -> XFail {
        XFail::default()
    }

    /// Load a JSON object `{"file/case": "reason" | {"flaky": "reason"}, ...}`; a missing file
    /// means no entries.
    pub fn load(path: &Path) -> anyhow::Result<XFail> {
        if !path.exists() {
            return Ok(XFail::none());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let entries: BTreeMap<String, Expected> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(XFail { entries })
    }

    /// The reason case `name` of file `stem` is expected to fail, if it is.
    pub fn reason(&self, stem: &str, name: &str) -> Option<&str> {
        self.entry(stem, name).map(|e| match e {
            Expected::Fails(reason) | Expected::Flaky { flaky: reason } => reason.as_str(),
        })
    }

    /// Whether the case is listed as flaky, so that passing is no surprise.
    pub fn flaky(&self, stem: &str, name: &str) -> bool {
        matches!(self.entry(stem, name), Some(Expected::Flaky { .. }))
    }

    fn entry(&self, stem: &str, name: &str) -> Option<&Expected> {
        self.entries
            .get(&format!("{stem}/{name}"))
            .or_else(|| self.entries.get(&format!("{stem}/*")))
    }

    /// Entries that name no case among `known` (`file-stem/case` names), for a warning.
    pub fn unused<'a>(&'a self, known: &[String]) -> Vec<&'a str> {
        self.entries
            .keys()
            .filter(|k| {
                if let Some(stem) = k.strip_suffix("/*") {
                    !known.iter().any(|n| n.starts_with(&format!("{stem}/")))
                } else {
                    !known.contains(k)
                }
            })
            .map(String::as_str)
            .collect()
    }
}

/// How one case ended.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Everything matched.
    Pass,
    /// Something differed: one line per difference.
    Fail(Vec<String>),
    /// Failed, and listed as an expected failure with this reason.
    XFail {
        reason: String,
        failures: Vec<String>,
    },
    /// Passed although listed as an expected failure.
    XPass { reason: String },
    /// Not run: the target, by design, runs no gateway for this file (it refused to start
    /// without a policy, and the target checked that it refused properly), as described.
    NotApplicable { why: String },
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case name.
    pub name: String,
    /// How it ended.
    pub verdict: Verdict,
    /// What was observed (status and time, or burst counts), for the report.
    pub observed: String,
}

/// One file's results.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file's stem (`jwt` for `vectors/jwt.json`).
    pub stem: String,
    /// The target's name.
    pub target: String,
    /// Per case, in file order.
    pub cases: Vec<CaseResult>,
    /// Gateway diagnostics captured when something failed.
    pub diagnostics: String,
}

/// Counts over any number of files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed unexpectedly, plus unexpected passes.
    pub failed: usize,
    /// Cases that failed as listed.
    pub xfailed: usize,
    /// Cases not run because the target checked that it, by design, runs no gateway for them.
    pub not_applicable: usize,
}

impl Summary {
    /// Add another summary.
    pub fn add(&mut self, other: Summary) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.xfailed += other.xfailed;
        self.not_applicable += other.not_applicable;
    }

    /// The closing line: `conformance: N passed, M failed` (and `, K not applicable`).
    pub fn line(&self) -> String {
        let mut line = format!(
            "conformance: {} passed, {} failed",
            self.passed, self.failed
        );
        if self.not_applicable > 0 {
            let _ = write!(line, ", {} not applicable", self.not_applicable);
        }
        line
    }
}

impl FileReport {
    /// Counts for this file.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.cases {
            match c.verdict {
                Verdict::Pass => s.passed += 1,
                Verdict::Fail(_) | Verdict::XPass { .. } => s.failed += 1,
                Verdict::XFail { .. } => s.xfailed += 1,
                Verdict::NotApplicable { .. } => s.not_applicable += 1,
            }
        }
        s
    }

    /// A human-readable report: one line per case, failure details indented.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = self.summary();
        let _ = writeln!(
            out,
            "== {} [{}]: {} passed, {} failed, {} xfail",
            self.stem, self.target, s.passed, s.failed, s.xfailed
        );
        for c in &self.cases {
            match &c.verdict {
                Verdict::Pass => {
                    let _ = writeln!(out, "  PASS  {}  [{}]", c.name, c.observed);
                }
                Verdict::Fail(failures) => {
                    let _ = writeln!(out, "  FAIL  {}  [{}]", c.name, c.observed);
                    for f in failures {
                        let _ = writeln!(out, "        - {}", indent(f));
                    }
                }
                Verdict::XFail { reason, failures } => {
                    let _ = writeln!(out, "  XFAIL {} (expected: {reason})", c.name);
                    for f in failures {
                        let _ = writeln!(out, "        - {}", indent(f));
                    }
                }
                Verdict::XPass { reason } => {
                    let _ = writeln!(out, "  XPASS {} (listed as expected failure: {reason}; remove it from the list)", c.name);
                }
                Verdict::NotApplicable { why } => {
                    let _ = writeln!(out, "  N/A   {} ({why})", c.name);
                }
            }
        }
        if s.failed > 0 && !self.diagnostics.is_empty() {
            let _ = writeln!(out, "  gateway output (last lines):");
            for line in self.diagnostics.lines() {
                let _ = writeln!(out, "    | {line}");
            }
        }
        out
    }
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n          ")
}

/// Values for placeholders.
#[derive(Debug, Clone)]
pub struct Placeholders {
    /// `${ORIGIN}`.
    pub origin: String,
    /// `${DEAD_ORIGIN}`.
    pub dead_origin: String,
    /// `${token:NAME}`.
    pub tokens: BTreeMap<String, String>,
    /// `${IDP}`: the test IdP's base URL, for files that run one.
    pub idp: Option<String>,
}

impl Placeholders {
    /// Replace every `${...}` in `s`. Unknown placeholders are errors, not literal text.
    pub fn expand(&self, s: &str) -> anyhow::Result<String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unterminated placeholder in {:?}", clip(s)))?;
            let inner = &after[..end];
            match inner {
                "ORIGIN" => out.push_str(&self.origin),
                "ORIGIN_HOST" => out.push_str(self.origin.trim_start_matches("http://")),
                "DEAD_ORIGIN" => out.push_str(&self.dead_origin),
                "IDP" => {
                    out.push_str(self.idp.as_deref().ok_or_else(|| {
                        anyhow!("${{IDP}} used, but no test IdP runs for this file")
                    })?)
                }
                _ => {
                    if let Some(name) = inner.strip_prefix("token:") {
                        let token = self.tokens.get(name).ok_or_else(|| {
                            anyhow!("no token named {name:?} in tokens.generated.json (add it to tokens.json and run mint)")
                        })?;
                        out.push_str(token);
                    } else if let Some(spec) = inner.strip_prefix("repeat:") {
                        let (n, text) = spec
                            .split_once(':')
                            .ok_or_else(|| anyhow!("${{repeat:N:TEXT}} expected, got {inner:?}"))?;
                        let n: usize = n
                            .parse()
                            .map_err(|_| anyhow!("bad repeat count in {inner:?}"))?;
                        out.push_str(&text.repeat(n));
                    } else {
                        bail!("unknown placeholder ${{{inner}}}");
                    }
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 120 {
        return s.to_owned();
    }
    let mut end = 120;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn clip_bytes(b: &[u8]) -> String {
    clip(&String::from_utf8_lossy(b))
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn next_id() -> String {
    format!(
        "c{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs vector files against targets, with one recording origin shared by all files.
#[derive(Debug)]
pub struct Runner {
    origin: Arc<RecordingOrigin>,
    placeholders: Placeholders,
    xfail: XFail,
    idp_listen: String,
}

impl Runner {
    /// A runner using `origin`, the tokens in `tokens`, and the expected failures in `xfail`.
    pub fn new(
        origin: RecordingOrigin,
        tokens: BTreeMap<String, String>,
        xfail: XFail,
    ) -> anyhow::Result<Runner> {
        let dead_origin = format!("http://{}", dead_address()?);
        let placeholders = Placeholders {
            origin: origin.url(),
            dead_origin,
            tokens,
            idp: None,
        };
        Ok(Runner {
            origin: Arc::new(origin),
            placeholders,
            xfail,
            idp_listen: "127.0.0.1:0".to_owned(),
        })
    }

    /// Where files that need the test IdP start it (default `127.0.0.1:0`, any free port). A
    /// fixed port lets a config printed beforehand name it as `${IDP}`.
    pub fn set_idp_listen(&mut self, listen: &str) {
        listen.clone_into(&mut self.idp_listen);
    }

    /// The placeholder values (for printing a config, say).
    pub fn placeholders(&self) -> &Placeholders {
        &self.placeholders
    }

    /// The config of `file` with placeholders replaced, as the gateway should load it.
    pub fn config_text(&self, file: &VectorFile) -> anyhow::Result<String> {
        config_text(&self.placeholders, file)
    }

    /// Start the test IdP for `file` if it needs one, in its initial mode.
    async fn start_idp(&self, file: &VectorFile) -> anyhow::Result<Option<IdpServer>> {
        if !file.needs_idp() {
            return Ok(None);
        }
        let initial = file
            .idp_initial
            .clone()
            .unwrap_or_else(|| IdpMode::Short("serve:A".into()));
        // The discovery issuer may name `${IDP}`, which is only known once the server listens:
        // start it in the mode's behaviour, then apply the expanded settings.
        let settings = initial.settings(&key_dir())?;
        let mut server = IdpServer::start(&self.idp_listen, settings.clone()).await?;
        let ph = Placeholders {
            idp: Some(server.url()),
            ..self.placeholders.clone()
        };
        server.set(expand_idp_settings(&ph, settings)?).await?;
        server.reset_counts();
        Ok(Some(server))
    }

    /// Run one vector file: start a gateway for its config, run every case in order, stop it.
    pub async fn run_file(&self, target: &mut dyn Target, path: &Path) -> FileReport {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_owned();
        let mut report = FileReport {
            stem: stem.clone(),
            target: target.name().to_owned(),
            cases: Vec::new(),
            diagnostics: String::new(),
        };
        let file = match VectorFile::load(path) {
            Ok(f) => f,
            Err(e) => {
                report.cases.push(CaseResult {
                    name: "(load)".into(),
                    verdict: Verdict::Fail(vec![format!("{e:#}")]),
                    observed: String::new(),
                });
                return report;
            }
        };
        let mut idp = match self.start_idp(&file).await {
            Ok(idp) => idp,
            Err(e) => {
                report.cases.push(CaseResult {
                    name: "(test IdP)".into(),
                    verdict: Verdict::Fail(vec![format!("could not start the test IdP: {e:#}")]),
                    observed: String::new(),
                });
                return report;
            }
        };
        let ph = Placeholders {
            idp: idp.as_ref().map(IdpServer::url),
            ..self.placeholders.clone()
        };
        let mut policy_version = None;
        let started = if file.config.is_null() {
            tokio::task::block_in_place(|| target.start_without_policy(&file.secrets))
        } else {
            config_text(&ph, &file)
                .and_then(|config| {
                    policy_version = Some(canonical_version(&config)?);
                    tokio::task::block_in_place(|| target.start(&config, &file.secrets))
                })
                .map(WithoutPolicy::Serving)
        };
        let base = match started {
            Ok(WithoutPolicy::Serving(base)) => base,
            Ok(WithoutPolicy::Refused(why)) => {
                for case in &file.cases {
                    report.cases.push(CaseResult {
                        name: case.name.clone(),
                        verdict: Verdict::NotApplicable { why: why.clone() },
                        observed: String::new(),
                    });
                }
                drop(idp);
                return report;
            }
            Err(e) => {
                for case in &file.cases {
                    let failures = vec![format!(
                        "gateway did not start for this file's config: {e:#}"
                    )];
                    report.cases.push(CaseResult {
                        name: case.name.clone(),
                        verdict: self.judge(&stem, &case.name, failures),
                        observed: String::new(),
                    });
                }
                return report;
            }
        };
        let addr = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned();
        let gw = Gateway {
            addr: &addr,
            target: target.name(),
            logs: target.log_lines(),
            policy_version,
            tls_ca: target.tls_ca(),
        };
        for case in &file.cases {
            let (failures, observed) = match self.run_case(&ph, &mut idp, &gw, case).await {
                Ok(r) => r,
                Err(e) => (
                    vec![format!("could not run the case: {e:#}")],
                    String::new(),
                ),
            };
            report.cases.push(CaseResult {
                name: case.name.clone(),
                verdict: self.judge(&stem, &case.name, failures),
                observed,
            });
        }
        // Anything the origin received without a correlation id was not sent by a case as such:
        // a request smuggled inside another one, or a gateway that dropped the id header.
        let stray = self.origin.take("");
        if !stray.is_empty() {
            let list: Vec<String> = stray.iter().map(show_record).collect();
            report.cases.push(CaseResult {
                name: "(no stray requests at the origin)".into(),
                // Judged like a case, so a target's xfail list can name it.
                verdict: self.judge(
                    &stem,
                    "(no stray requests at the origin)",
                    vec![format!(
                        "the origin received {} request(s) without {ID_HEADER}, e.g. smuggled ones: {}",
                        stray.len(),
                        list.join("; ")
                    )],
                ),
                observed: String::new(),
            });
        }
        if report.summary().failed > 0 || report.summary().xfailed > 0 {
            report.diagnostics = target.diagnostics();
        }
        tokio::task::block_in_place(|| target.stop());
        drop(idp);
        report
    }

    fn judge(&self, stem: &str, name: &str, failures: Vec<String>) -> Verdict {
        match (self.xfail.reason(stem, name), failures.is_empty()) {
            (None, true) => Verdict::Pass,
            (None, false) => Verdict::Fail(failures),
            (Some(r), false) => Verdict::XFail {
                reason: r.to_owned(),
                failures,
            },
            (Some(_), true) if self.xfail.flaky(stem, name) => Verdict::Pass,
            (Some(r), true) => Verdict::XPass {
                reason: r.to_owned(),
            },
        }
    }

    async fn run_case(
        &self,
        ph: &Placeholders,
        idp: &mut Option<IdpServer>,
        gw: &Gateway<'_>,
        case: &Case,
    ) -> anyhow::Result<(Vec<String>, String)> {
        if let Some(steps) = &case.steps {
            return self.run_scenario(ph, idp, gw, steps).await;
        }
        if let (Some(burst), Some(statuses)) = (&case.burst, &case.expect_statuses) {
            return self.run_burst(ph, gw, burst, statuses).await;
        }
        let request = case
            .request
            .as_ref()
            .ok_or_else(|| anyhow!("case has no request"))?;
        let (expect, why) = case.expect_for(gw.target);
        let expect = expect.ok_or_else(|| anyhow!("case has no expect"))?;
        let (failures, mut observed) = self
            .run_request(ph, gw, request, expect, case.repeat.unwrap_or(1))
            .await?;
        if let Some(why) = why {
            let _ = write!(observed, "; on {}: {why}", gw.target);
        }
        Ok((failures, observed))
    }

    /// Run a scenario's steps in order; the first step with a difference ends it.
    async fn run_scenario(
        &self,
        ph: &Placeholders,
        idp: &mut Option<IdpServer>,
        gw: &Gateway<'_>,
        steps: &[Step],
    ) -> anyhow::Result<(Vec<String>, String)> {
        for (i, step) in steps.iter().enumerate() {
            let (what, (mut failures, observed)) = if let Some(mode) = &step.idp {
                let server = idp
                    .as_mut()
                    .ok_or_else(|| anyhow!("step {i}: no test IdP runs for this file"))?;
                let settings = expand_idp_settings(ph, mode.settings(&key_dir())?)?;
                server
                    .set(settings)
                    .await
                    .with_context(|| format!("step {i}: switching the IdP"))?;
                let name = match mode {
                    IdpMode::Short(m) => m.clone(),
                    IdpMode::Full(s) => s.mode.clone(),
                };
                (format!("idp {name}"), (Vec::new(), format!("idp {name}")))
            } else if let (Some(request), Some(expect)) = (&step.request, &step.expect) {
                (
                    format!("{} {}", request.method, request.target),
                    self.run_request(ph, gw, request, expect, 1).await?,
                )
            } else if let (Some(burst), Some(statuses)) = (&step.burst, &step.expect_statuses) {
                (
                    format!("burst of {}", burst.count),
                    self.run_burst(ph, gw, burst, statuses).await?,
                )
            } else if let Some(want) = &step.expect_idp_fetches {
                let server = idp
                    .as_ref()
                    .ok_or_else(|| anyhow!("step {i}: no test IdP runs for this file"))?;
                let got = server.count(&want.path);
                let mut f = Vec::new();
                if got < want.min || got > want.max {
                    f.push(format!(
                        "the IdP got {got} request(s) for {} since the last reset, expected {}..={} (all paths: {:?})",
                        want.path,
                        want.min,
                        want.max,
                        server.counts()
                    ));
                }
                (
                    format!("idp fetches {}", want.path),
                    (f, format!("{} fetch(es) of {}", got, want.path)),
                )
            } else if step.idp_reset_count == Some(true) {
                let server = idp
                    .as_ref()
                    .ok_or_else(|| anyhow!("step {i}: no test IdP runs for this file"))?;
                server.reset_counts();
                ("reset".to_owned(), (Vec::new(), "reset".to_owned()))
            } else if let Some(ms) = step.sleep_ms {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                (format!("sleep {ms} ms"), (Vec::new(), format!("{ms} ms")))
            } else {
                bail!("step {i} does nothing");
            };
            if !failures.is_empty() {
                failures.insert(0, format!("step {i} ({what}), observed {observed}:"));
                return Ok((failures, format!("failed at step {i} of {}", steps.len())));
            }
        }
        Ok((Vec::new(), format!("{} steps", steps.len())))
    }

    /// Send `request` `times` times in sequence; every response must meet `expect`.
    async fn run_request(
        &self,
        ph: &Placeholders,
        gw: &Gateway<'_>,
        request: &Request,
        expect: &Expect,
        times: u32,
    ) -> anyhow::Result<(Vec<String>, String)> {
        let addr = gw.addr;
        let times = times.max(1);
        let mut observed = String::new();
        for i in 0..times {
            let id = next_id();
            let wire = self.wire(ph, request, &id, addr)?;
            let outcome = send(addr, gw.tls_ca.as_deref(), &wire).await;
            let records = self.origin.take(&id);
            observed = match &outcome {
                Ok(Timed {
                    exchange: Exchange::Response(r),
                    elapsed,
                }) => {
                    format!("{} in {} ms", r.status, elapsed.as_millis())
                }
                Ok(Timed {
                    exchange: Exchange::Closed(_),
                    elapsed,
                }) => {
                    format!("closed in {} ms", elapsed.as_millis())
                }
                Err(_) => "hung".to_owned(),
            };
            if times > 1 {
                observed = format!("×{times}, last {observed}");
            }
            let mut failures = match outcome {
                Ok(timed) => {
                    let mut f = self.check(ph, expect, &timed, &records)?;
                    if let (Some(want), Exchange::Response(response)) =
                        (&expect.access_log, &timed.exchange)
                    {
                        check_access_log(want, response, gw, &mut f).await;
                    }
                    f
                }
                Err(e) => vec![format!("{e:#}")],
            };
            if !failures.is_empty() {
                if times > 1 {
                    failures.insert(0, format!("request {} of {times} failed:", i + 1));
                }
                return Ok((failures, observed));
            }
        }
        Ok((Vec::new(), observed))
    }

    async fn run_burst(
        &self,
        ph: &Placeholders,
        gw: &Gateway<'_>,
        burst: &Burst,
        want: &BTreeMap<String, u32>,
    ) -> anyhow::Result<(Vec<String>, String)> {
        let addr = gw.addr;
        let members = burst.members();
        if members.is_empty() {
            bail!("a burst needs a request");
        }
        let ids: Vec<String> = (0..burst.count).map(|_| next_id()).collect();
        let wires = ids
            .iter()
            .enumerate()
            .map(|(i, id)| self.wire(ph, &members[i % members.len()], id, addr))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let semaphore = Arc::new(tokio::sync::Semaphore::new(burst.concurrency as usize));
        let mut tasks = Vec::new();
        for wire in wires {
            let semaphore = semaphore.clone();
            let (addr, ca) = (addr.to_owned(), gw.tls_ca.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                send(&addr, ca.as_deref(), &wire).await
            }));
        }
        let mut got: BTreeMap<String, u32> = BTreeMap::new();
        let mut admitted = 0usize;
        for task in tasks {
            let key = match task.await? {
                Ok(Timed {
                    exchange: Exchange::Response(r),
                    ..
                }) => {
                    if r.status < 400 {
                        admitted += 1;
                    }
                    r.status.to_string()
                }
                Ok(Timed {
                    exchange: Exchange::Closed(_),
                    ..
                }) => "closed".to_owned(),
                Err(_) => "hung".to_owned(),
            };
            *got.entry(key).or_default() += 1;
        }
        let mut failures = Vec::new();
        if &got != want {
            failures.push(format!(
                "statuses: expected {}, got {}",
                show_counts(want),
                show_counts(&got)
            ));
        }
        let reached: usize = ids.iter().map(|id| self.origin.take(id).len()).sum();
        if reached != admitted {
            failures.push(format!(
                "origin received {reached} requests, but {admitted} responses were not errors"
            ));
        }
        Ok((failures, show_counts(&got)))
    }

    /// Build the bytes for `request`, tagged with correlation `id`, for a gateway at `addr`.
    fn wire(
        &self,
        ph: &Placeholders,
        request: &Request,
        id: &str,
        addr: &str,
    ) -> anyhow::Result<WireRequest> {
        if request.raw.is_some() || request.raw_base64.is_some() {
            let bytes = match (&request.raw, &request.raw_base64) {
                (Some(text), _) => ph.expand(text)?.into_bytes(),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .context("raw_base64")?,
                (None, None) => unreachable!(),
            };
            let cut = bytes
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(bytes.len(), |i| i + 2);
            let mut head = bytes[..cut].to_vec();
            if cut == bytes.len() && !head.ends_with(b"\r\n") {
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(format!("{ID_HEADER}: {id}\r\n").as_bytes());
            head.extend_from_slice(&bytes[cut..]);
            let is_head = head.starts_with(b"HEAD ");
            return Ok(WireRequest {
                head,
                body: Vec::new(),
                framing: BodyFraming::Plain,
                is_head,
                half_close: request.half_close,
            });
        }
        let target = ph.expand(&request.target)?;
        let mut headers: Vec<(String, String)> = Vec::with_capacity(request.headers.len() + 4);
        for (n, v) in &request.headers {
            headers.push((ph.expand(n)?, ph.expand(v)?));
        }
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let body: Option<Vec<u8>> = if let Some(b) = &request.body {
            Some(ph.expand(b)?.into_bytes())
        } else if let Some(j) = &request.body_json {
            Some(serde_json::to_vec(j)?)
        } else if let Some(b) = &request.body_base64 {
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .context("body_base64")?,
            )
        } else {
            request.body_repeat.as_ref().map(|parts| {
                let mut out = Vec::new();
                for p in parts.as_slice() {
                    for _ in 0..p.count {
                        out.extend_from_slice(p.text.as_bytes());
                    }
                }
                out
            })
        };
        let mut head = String::with_capacity(256 + target.len());
        let _ = write!(head, "{} {} HTTP/1.1\r\n", request.method, target);
        if !has("host") {
            let _ = write!(head, "Host: {addr}\r\n");
        }
        let mut extra: Vec<(String, String)> = Vec::new();
        if request.chunked {
            if !has("transfer-encoding") {
                extra.push(("Transfer-Encoding".into(), "chunked".into()));
            }
        } else if let Some(b) = &body {
            if !has("content-length") {
                extra.push(("Content-Length".into(), b.len().to_string()));
            }
        }
        if !has("connection") {
            extra.push(("Connection".into(), "close".into()));
        }
        for (n, v) in headers.iter().chain(extra.iter()) {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(head, "{ID_HEADER}: {id}\r\n\r\n");
        Ok(WireRequest {
            head: head.into_bytes(),
            body: body.unwrap_or_default(),
            framing: if request.chunked {
                BodyFraming::Chunked(16 * 1024)
            } else {
                BodyFraming::Plain
            },
            is_head: request.method == "HEAD",
            half_close: request.half_close,
        })
    }

    /// Compare one exchange with `expect`; one line per difference.
    fn check(
        &self,
        ph: &Placeholders,
        expect: &Expect,
        timed: &Timed,
        records: &[Record],
    ) -> anyhow::Result<Vec<String>> {
        let mut f = Vec::new();
        if let Some(max) = expect.max_ms {
            if timed.elapsed.as_millis() > u128::from(max) {
                f.push(format!(
                    "took {} ms, more than the allowed {max} ms",
                    timed.elapsed.as_millis()
                ));
            }
        }
        let origin_rule: Option<Option<&OriginExpect>> = match &expect.origin {
            Some(o) => Some(o.as_ref()),
            None => match &expect.problem {
                Some(slug) if !slug.starts_with("origin-") => Some(None),
                _ => None,
            },
        };
        let response = match &timed.exchange {
            Exchange::Response(r) => r,
            Exchange::Closed(why) => {
                if !expect.or_closed {
                    f.push(format!(
                        "expected a response with status {}, but {why}",
                        want_status(expect)
                    ));
                }
                if let Some(None) = origin_rule {
                    if !records.is_empty() {
                        f.push(format!(
                            "origin must not receive this request, but received it {} time(s): {}",
                            records.len(),
                            show_record(&records[0])
                        ));
                    }
                }
                return Ok(f);
            }
        };
        let status_ok = match (&expect.status, &expect.status_any) {
            (Some(s), _) => response.status == *s,
            (None, Some(any)) => any.contains(&response.status),
            (None, None) => true,
        };
        if !status_ok {
            f.push(format!(
                "status: expected {}, got {} (body: {})",
                want_status(expect),
                response.status,
                clip_bytes(&response.body)
            ));
        }
        for (name, want) in &expect.headers {
            let got = response.header(name);
            match (want, got) {
                (None, Some(g)) => f.push(format!(
                    "response header {name}: expected absent, got {g:?}"
                )),
                (Some(w), got) => {
                    let w = ph.expand(w)?;
                    if got.as_deref() != Some(w.as_str()) {
                        f.push(format!(
                            "response header {name}: expected {w:?}, got {got:?}"
                        ));
                    }
                }
                (None, None) => {}
            }
        }
        for name in &expect.header_present {
            if !response.has_header(name) {
                f.push(format!(
                    "response header {name}: expected present, got absent"
                ));
            }
        }
        for (name, value) in &expect.headers_not {
            let value = ph.expand(value)?;
            if response.header(name).as_deref() == Some(value.as_str()) {
                f.push(format!(
                    "response header {name}: must not be {value:?}, but is"
                ));
            }
        }
        if let Some(slug) = &expect.problem {
            check_problem(slug, &expect.problem_errors_pointers, response, &mut f);
        }
        if response.status >= 400 && is_problem(response) {
            // Whatever the case expects, a problem never carries internals.
            let text = String::from_utf8_lossy(&response.body);
            for leak in [
                ph.origin.as_str(),
                ph.dead_origin.as_str(),
                "panicked",
                "RUST_BACKTRACE",
                "src/",
            ] {
                if text.contains(leak) {
                    f.push(format!(
                        "problem body leaks internals ({leak:?}): {}",
                        clip(&text)
                    ));
                }
            }
        }
        if let Some(b) = &expect.body {
            let b = ph.expand(b)?;
            if response.body != b.as_bytes() {
                f.push(format!(
                    "body: expected {:?}, got {:?}",
                    clip(&b),
                    clip_bytes(&response.body)
                ));
            }
        }
        if let Some(j) = &expect.body_json {
            match serde_json::from_slice::<Value>(&response.body) {
                Ok(v) if &v == j => {}
                Ok(v) => f.push(format!("body JSON: expected {j}, got {v}")),
                Err(e) => f.push(format!(
                    "body JSON: expected {j}, got non-JSON ({e}): {}",
                    clip_bytes(&response.body)
                )),
            }
        }
        let text = String::from_utf8_lossy(&response.body);
        for s in &expect.body_not_contains {
            let s = ph.expand(s)?;
            if !s.is_empty() && text.contains(&s) {
                f.push(format!(
                    "body must not contain {:?}, but does: {}",
                    clip(&s),
                    clip(&text)
                ));
            }
        }
        match origin_rule {
            Some(None) if !records.is_empty() => f.push(format!(
                "origin must not receive this request, but received it {} time(s): {}",
                records.len(),
                show_record(&records[0])
            )),
            None | Some(None) => {}
            Some(Some(want)) => match records {
                [] => f.push(
                    "origin: expected to receive the request, but it never arrived".to_owned(),
                ),
                [record] => {
                    check_origin(ph, want, record, &mut f)?;
                    // The id the origin saw is the id the client is told.
                    let origin_id = record
                        .headers
                        .iter()
                        .find(|(n, _)| n == REQUEST_ID_HEADER)
                        .map(|(_, v)| v.clone());
                    match (origin_id, response.header(REQUEST_ID_HEADER)) {
                        (None, _) => f.push(format!("origin: expected header {REQUEST_ID_HEADER}, got absent")),
                        (Some(o), Some(r)) if o != r => f.push(format!(
                            "response {REQUEST_ID_HEADER} {r:?} differs from the one the origin received ({o:?})"
                        )),
                        (Some(_), None) => f.push(format!("response header {REQUEST_ID_HEADER}: expected present, got absent")),
                        _ => {}
                    }
                }
                many => f.push(format!(
                    "origin received the request {} times, expected once",
                    many.len()
                )),
            },
        }
        Ok(f)
    }
}

/// The gateway a file's cases run against.
struct Gateway<'a> {
    /// Its `host:port`.
    addr: &'a str,
    /// The target's name (for `expect_on`).
    target: &'a str,
    /// Its output, if the target shows it (for `access_log`).
    logs: Option<LogLines>,
    /// The version of the policy it was started with, as the suite computes it on its own
    /// (what `access_log` values `${POLICY}` stand for).
    policy_version: Option<String>,
    /// The CA of its TLS listener: requests go as HTTP/2 over HTTPS ([`crate::client_h2`]).
    tls_ca: Option<PathBuf>,
}

/// Send `wire` to `addr`: as written over HTTP/1.1, or as HTTP/2 over TLS trusting `tls_ca`.
async fn send(addr: &str, tls_ca: Option<&Path>, wire: &WireRequest) -> anyhow::Result<Timed> {
    match tls_ca {
        None => client::send(addr, wire).await,
        Some(ca) => crate::client_h2::send(addr, ca, wire).await,
    }
}

/// What an `access_log` value stands for the version of the file's policy.
const POLICY_PLACEHOLDER: &str = "${POLICY}";

/// A policy text's version as the README defines it: SHA-256 of its RFC 8785 canonical form, the
/// first 12 hex digits. Computed here apart from the gateway, so the vectors check its figure.
pub fn canonical_version(config: &str) -> anyhow::Result<String> {
    use sha2::Digest;
    let value: Value = serde_json::from_str(config)?;
    let canonical = serde_jcs::to_vec(&value)?;
    let digest = sha2::Sha256::digest(&canonical);
    Ok(digest[..6].iter().map(|b| format!("{b:02x}")).collect())
}

/// How long an access line may take to show in the target's output (it is read by another
/// thread, and a gateway may write it after the response).
const ACCESS_LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The access line with the response's request id (a JSON object with a `decision` member,
/// anywhere in an output line: wrangler and Spin may prefix or colour it) must have `want`'s
/// members.
async fn check_access_log(
    want: &BTreeMap<String, Value>,
    response: &Response,
    gw: &Gateway<'_>,
    f: &mut Vec<String>,
) {
    let Some(logs) = &gw.logs else {
        f.push(format!(
            "access log: target {} does not show the gateway's output, so the line cannot be checked",
            gw.target
        ));
        return;
    };
    let Some(id) = response.header(REQUEST_ID_HEADER) else {
        f.push(format!(
            "access log: no {REQUEST_ID_HEADER} in the response to find the line by"
        ));
        return;
    };
    let deadline = tokio::time::Instant::now() + ACCESS_LOG_WAIT;
    let line = loop {
        let found = logs.lock().ok().and_then(|lines| {
            lines.iter().rev().find_map(|line| {
                let json = &line[line.find('{')?..=line.rfind('}')?];
                let v: Value = serde_json::from_str(json).ok()?;
                (v.get("request_id")?.as_str()? == id && v.get("decision").is_some()).then_some(v)
            })
        });
        if let Some(line) = found {
            break line;
        }
        if tokio::time::Instant::now() > deadline {
            f.push(format!(
                "access log: no access line with request_id {id:?} in the gateway's output within {} s",
                ACCESS_LOG_WAIT.as_secs()
            ));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for (name, value) in want {
        let placeholder = value.as_str() == Some(POLICY_PLACEHOLDER);
        let value = match (&gw.policy_version, placeholder) {
            (Some(version), true) => &Value::String(version.clone()),
            _ => value,
        };
        if line.get(name) != Some(value) {
            f.push(format!(
                "access log {name}: expected {value}, got {} (line: {line})",
                line.get(name).unwrap_or(&Value::Null)
            ));
        }
    }
}

fn want_status(expect: &Expect) -> String {
    let mut s = match (&expect.status, &expect.status_any) {
        (Some(s), _) => s.to_string(),
        (None, Some(any)) => format!("one of {any:?}"),
        (None, None) => "any".to_owned(),
    };
    if expect.or_closed {
        s.push_str(" (or a closed connection)");
    }
    s
}

fn show_counts(m: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn show_record(r: &Record) -> String {
    format!("{} {}", r.method, clip(&r.target))
}

fn media_type(response: &Response) -> Option<String> {
    response.header("content-type").map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

fn is_problem(response: &Response) -> bool {
    media_type(response).as_deref() == Some(PROBLEM_JSON)
}

fn check_problem(slug: &str, pointers: &[String], response: &Response, f: &mut Vec<String>) {
    if !is_problem(response) {
        f.push(format!(
            "problem {slug}: expected content-type {PROBLEM_JSON}, got {:?} (body: {})",
            response.header("content-type"),
            clip_bytes(&response.body)
        ));
        return;
    }
    let body: Value = match serde_json::from_slice(&response.body) {
        Ok(v) => v,
        Err(e) => {
            f.push(format!(
                "problem {slug}: body is not JSON ({e}): {}",
                clip_bytes(&response.body)
            ));
            return;
        }
    };
    let Some(obj) = body.as_object() else {
        f.push(format!("problem {slug}: body is not a JSON object: {body}"));
        return;
    };
    let want_type = format!("{PROBLEM_TYPE_BASE}{slug}");
    if obj.get("type").and_then(Value::as_str) != Some(want_type.as_str()) {
        f.push(format!(
            "problem type: expected {want_type:?}, got {}",
            obj.get("type").unwrap_or(&Value::Null)
        ));
    }
    if obj.get("status").and_then(Value::as_u64) != Some(u64::from(response.status)) {
        f.push(format!(
            "problem status member {} differs from the response status {}",
            obj.get("status").unwrap_or(&Value::Null),
            response.status
        ));
    }
    match obj.get("request_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => {
            if let Some(h) = response.header(REQUEST_ID_HEADER) {
                if h != id {
                    f.push(format!("problem request_id {id:?} differs from the {REQUEST_ID_HEADER} header {h:?}"));
                }
            }
        }
        _ => f.push(format!(
            "problem: expected a non-empty string request_id, got {}",
            obj.get("request_id").unwrap_or(&Value::Null)
        )),
    }
    if obj
        .get("title")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        f.push("problem: expected a non-empty title".to_owned());
    }
    for key in obj.keys() {
        if !PROBLEM_MEMBERS.contains(&key.as_str()) {
            f.push(format!(
                "problem has an unexpected member {key:?} (allowed: {PROBLEM_MEMBERS:?})"
            ));
        }
    }
    // Headers every problem of this kind carries, whatever the case says.
    let required: &[&str] = match slug {
        "unauthenticated" => &["www-authenticate"],
        "method-not-allowed" => &["allow"],
        "quota-exceeded" => &["retry-after", "ratelimit-policy", "ratelimit"],
        _ => &[],
    };
    for name in required {
        if !response.has_header(name) {
            f.push(format!(
                "problem {slug}: expected response header {name}, got absent"
            ));
        }
    }
    if !response.has_header(REQUEST_ID_HEADER) {
        f.push(format!(
            "problem {slug}: expected response header {REQUEST_ID_HEADER}, got absent"
        ));
    }
    if response.header("cache-control").as_deref() != Some("no-store") {
        f.push(format!(
            "problem {slug}: expected cache-control \"no-store\", got {:?}",
            response.header("cache-control")
        ));
    }
    if !pointers.is_empty() {
        let got: Vec<&str> = obj
            .get("errors")
            .and_then(Value::as_array)
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.get("pointer").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        for p in pointers {
            if !got.contains(&p.as_str()) {
                f.push(format!(
                    "problem errors: expected pointer {p:?} among {got:?}"
                ));
            }
        }
    }
}

fn check_origin(
    ph: &Placeholders,
    want: &OriginExpect,
    record: &Record,
    f: &mut Vec<String>,
) -> anyhow::Result<()> {
    if let Some(p) = &want.path {
        let p = ph.expand(p)?;
        if record.target != p {
            f.push(format!(
                "origin path: expected {:?}, got {:?}",
                clip(&p),
                clip(&record.target)
            ));
        }
    }
    if let Some(m) = &want.method {
        if &record.method != m {
            f.push(format!(
                "origin method: expected {m:?}, got {:?}",
                record.method
            ));
        }
    }
    for (name, value) in &want.headers {
        let got = client::join_header(&record.headers, name);
        match (value, got) {
            (None, Some(g)) => f.push(format!(
                "origin header {name}: expected absent, got {:?}",
                clip(&g)
            )),
            (Some(w), got) => {
                let w = ph.expand(w)?;
                if got.as_deref() != Some(w.as_str()) {
                    f.push(format!(
                        "origin header {name}: expected {:?}, got {:?}",
                        clip(&w),
                        got.as_deref().map(clip)
                    ));
                }
            }
            (None, None) => {}
        }
    }
    for (name, value) in &want.headers_not {
        let value = ph.expand(value)?;
        if client::join_header(&record.headers, name).as_deref() == Some(value.as_str()) {
            f.push(format!(
                "origin header {name}: must not be {value:?}, but is"
            ));
        }
    }
    for name in &want.header_present {
        if client::join_header(&record.headers, name).is_none() {
            f.push(format!(
                "origin header {name}: expected present, got absent"
            ));
        }
    }
    if let Some(b) = &want.body {
        let b = ph.expand(b)?;
        if record.body != b.as_bytes() {
            f.push(format!(
                "origin body: expected {:?}, got {:?}",
                clip(&b),
                clip_bytes(&record.body)
            ));
        }
    }
    if let Some(j) = &want.body_json {
        match serde_json::from_slice::<Value>(&record.body) {
            Ok(v) if &v == j => {}
            Ok(v) => f.push(format!("origin body JSON: expected {j}, got {v}")),
            Err(e) => f.push(format!(
                "origin body JSON: expected {j}, got non-JSON ({e}): {}",
                clip_bytes(&record.body)
            )),
        }
    }
    if let Some(n) = want.body_len {
        if record.body.len() != n {
            f.push(format!(
                "origin body length: expected {n}, got {}",
                record.body.len()
            ));
        }
    }
    if let Some(sig) = &want.signature {
        if let Err(why) = verify_signature(sig, record) {
            f.push(format!("origin signature: {why}"));
        }
    }
    Ok(())
}

/// The origin's check of `x-portcullis-signature`, written from the document
/// (docs/origin-verification.md) rather than from the gateway's code, so that the two agree
/// only if both follow it: one header, `t=` within five minutes of now, `v1=` the HMAC-SHA256
/// of the canonical lines.
fn verify_signature(want: &crate::vector::SignatureExpect, record: &Record) -> Result<(), String> {
    use hmac::Mac;
    use sha2::Digest;
    let values: Vec<&str> = record
        .headers
        .iter()
        .filter(|(n, _)| n == "x-portcullis-signature")
        .map(|(_, v)| v.as_str())
        .collect();
    let [value] = values[..] else {
        return Err(format!(
            "expected one x-portcullis-signature, got {values:?}"
        ));
    };
    let (t, v1) = value
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .ok_or_else(|| format!("not t=…,v1=…: {value:?}"))?;
    let t: u64 = t
        .parse()
        .map_err(|_| format!("t is not a number: {value:?}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(t) > 300 {
        return Err(format!("t={t} is {} s from now", now.abs_diff(t)));
    }
    let header = |name: &str| client::join_header(&record.headers, name);
    let request_id = header("x-portcullis-request-id").ok_or("no x-portcullis-request-id")?;
    let consumer = header("x-portcullis-consumer").unwrap_or_else(|| "-".to_owned());
    let body = match want.body_signed {
        true => hex::encode(sha2::Sha256::digest(&record.body)),
        false => "UNSIGNED-PAYLOAD".to_owned(),
    };
    let canonical = format!(
        "v1\n{t}\n{}\n{}\n{request_id}\n{consumer}\n{body}",
        record.method, record.target
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(want.secret.as_bytes())
        .map_err(|e| e.to_string())?;
    mac.update(canonical.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    match expected == v1 {
        true => Ok(()),
        false => Err(format!("v1 does not verify over {canonical:?}")),
    }
}

/// The config of `file` with placeholders replaced by `ph`.
fn config_text(ph: &Placeholders, file: &VectorFile) -> anyhow::Result<String> {
    let text = serde_json::to_string_pretty(&file.config)?;
    if text.contains("${jwk:") {
        bail!("config has a ${{jwk:...}} placeholder: run `cargo run -p portcullis-conformance --bin mint`");
    }
    ph.expand(&text)
}

/// Where the test IdP finds public keys for its key sets.
fn key_dir() -> PathBuf {
    crate::suite_dir().join("keys")
}

/// Replace placeholders in the parts of IdP settings that may hold them.
fn expand_idp_settings(
    ph: &Placeholders,
    mut settings: crate::idp::Settings,
) -> anyhow::Result<crate::idp::Settings> {
    settings.discovery_issuer = settings
        .discovery_issuer
        .map(|i| ph.expand(&i))
        .transpose()?;
    Ok(settings)
}

/// A loopback address with nothing listening (bound, then released).
fn dead_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(addr.to_string())
}

/// Run `files` against `target` on a fresh runtime with a recording origin listening on
/// `origin_listen` (`127.0.0.1:0` for any port); print each file's report and return the
/// reports. The tokens come from `tokens.generated.json` beside the first file.
pub fn run_files(
    target: &mut dyn Target,
    files: &[PathBuf],
    xfail: &XFail,
    origin_listen: &str,
) -> anyhow::Result<Vec<FileReport>> {
    run_files_with_idp(target, files, xfail, origin_listen, "127.0.0.1:0")
}

/// [`run_files`], with the test IdP (for files that need one) listening on `idp_listen`.
pub fn run_files_with_idp(
    target: &mut dyn Target,
    files: &[PathBuf],
    xfail: &XFail,
    origin_listen: &str,
    idp_listen: &str,
) -> anyhow::Result<Vec<FileReport>> {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let tokens = crate::vector::load_tokens(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let origin = RecordingOrigin::start(origin_listen).await?;
        let mut runner = Runner::new(origin, tokens, xfail.clone())?;
        runner.set_idp_listen(idp_listen);
        let mut reports = Vec::new();
        for file in files {
            let report = runner.run_file(target, file).await;
            println!("{}", report.render());
            reports.push(report);
        }
        Ok(reports)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ph() -> Placeholders {
        Placeholders {
            origin: "http://127.0.0.1:1234".into(),
            dead_origin: "http://127.0.0.1:9".into(),
            tokens: [("t".to_owned(), "a.b.c".to_owned())].into_iter().collect(),
            idp: None,
        }
    }

    #[test]
    fn placeholders_expand() {
        let p = ph();
        assert_eq!(p.expand("${ORIGIN}/x").unwrap(), "http://127.0.0.1:1234/x");
        assert_eq!(p.expand("${ORIGIN_HOST}").unwrap(), "127.0.0.1:1234");
        assert_eq!(p.expand("Bearer ${token:t}").unwrap(), "Bearer a.b.c");
        assert_eq!(p.expand("${repeat:3:a:b}!").unwrap(), "a:ba:ba:b!");
        assert_eq!(p.expand("plain").unwrap(), "plain");
        assert!(p.expand("${token:missing}").is_err());
        assert!(p.expand("${NOPE}").is_err());
        assert!(p.expand("${ORIGIN").is_err());
    }

    #[test]
    fn xfail_wildcards_and_unused() {
        let x: XFail = XFail {
            entries: serde_json::from_str(
                r#"{"jwt/a": "r1", "body/*": "r2", "gone/x": "r3", "path/f": {"flaky": "r4"}}"#,
            )
            .unwrap(),
        };
        assert_eq!(x.reason("jwt", "a"), Some("r1"));
        assert!(!x.flaky("jwt", "a"));
        assert_eq!(x.reason("jwt", "b"), None);
        assert_eq!(x.reason("body", "anything"), Some("r2"));
        assert_eq!(x.reason("path", "f"), Some("r4"));
        assert!(x.flaky("path", "f"));
        let known = vec!["jwt/a".to_owned(), "body/z".to_owned(), "path/f".to_owned()];
        assert_eq!(x.unused(&known), vec!["gone/x"]);
    }

    fn runner_free_wire(request: &Request) -> WireRequest {
        // `wire` needs no origin state beyond placeholders; build a throwaway runner around it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let origin = RecordingOrigin::start("127.0.0.1:0").await.unwrap();
            let runner = Runner::new(origin, ph().tokens, XFail::none()).unwrap();
            runner.wire(&ph(), request, "ID", "gw:1").unwrap()
        })
    }

    #[test]
    fn wire_is_byte_exact_with_added_headers() {
        let request: Request = serde_json::from_str(
            r#"{"method": "POST", "target": "/a/%2e%2e//b\\c?x=${repeat:2:y}", "headers": [["X-Mixed-Case", "v"], ["Authorization", "Bearer ${token:t}"]], "body": "hi"}"#,
        )
        .unwrap();
        let wire = runner_free_wire(&request);
        assert_eq!(
            String::from_utf8(wire.head).unwrap(),
            "POST /a/%2e%2e//b\\c?x=yy HTTP/1.1\r\nHost: gw:1\r\nX-Mixed-Case: v\r\nAuthorization: Bearer a.b.c\r\nContent-Length: 2\r\nConnection: close\r\nx-conformance-id: ID\r\n\r\n"
        );
        assert_eq!(wire.body, b"hi");
    }

    #[test]
    fn wire_raw_gets_only_the_id() {
        let request: Request =
            serde_json::from_str(r#"{"raw": "GET / HTTP/1.1\r\nHost: x\r\n\r\n"}"#).unwrap();
        let wire = runner_free_wire(&request);
        assert_eq!(
            String::from_utf8(wire.head).unwrap(),
            "GET / HTTP/1.1\r\nx-conformance-id: ID\r\nHost: x\r\n\r\n"
        );
    }
}
