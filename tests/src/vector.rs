//! The vector format: what a file of cases looks like on disk.
//!
//! A vector file is one topic: a policy (`config`), the secrets it needs, and cases that each send
//! one request (or a burst of them) and say what the client and the origin must see. Every struct
//! refuses unknown fields, so a typo in a vector is an error rather than a silently skipped check.
//!
//! Strings in requests and expectations may hold placeholders, replaced by the runner:
//! `${ORIGIN}`, `${ORIGIN_HOST}` (its `host:port`) and `${DEAD_ORIGIN}`, `${token:NAME}` (a token from
//! `tokens.generated.json`), `${repeat:N:TEXT}` (TEXT repeated N times), `${IDP}` (the test
//! identity provider's base URL, for files that use it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::idp::IdpMode;

/// One vector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    /// What the file covers.
    pub description: String,
    /// The policy the gateway runs for every case in this file; `null` for a gateway with no
    /// policy at all (see [`crate::target::Target::start_without_policy`]).
    pub config: Value,
    /// Secrets (`secret_env` names and values) the gateway needs for this config.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The test IdP's mode when the gateway starts (default `serve:A`). The IdP runs for a file
    /// whose config uses `${IDP}`, whose scenarios switch it, or that sets this.
    #[serde(default)]
    pub idp_initial: Option<IdpMode>,
    /// The cases, run in order against one gateway.
    pub cases: Vec<Case>,
}

/// One case: a single request (optionally repeated) or a concurrent burst.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique within the file; the xfail lists name cases as `file-stem/name`.
    pub name: String,
    /// One line: the bug or bypass this case pins.
    pub note: String,
    /// The request to send.
    #[serde(default)]
    pub request: Option<Request>,
    /// Send `request` this many times in sequence; every response must meet `expect`.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// What the client and the origin must see.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Per target name (`native`, `workers`, `spin`): what that runtime answers instead, and why
    /// (its HTTP server refuses the request before the adapter runs, say). Checked as exactly as
    /// `expect`; other targets get `expect`.
    #[serde(default)]
    pub expect_on: BTreeMap<String, TargetExpect>,
    /// Send many copies of a request at once.
    #[serde(default)]
    pub burst: Option<Burst>,
    /// For bursts: how many responses of each status (keys are status codes as strings).
    #[serde(default)]
    pub expect_statuses: Option<BTreeMap<String, u32>>,
    /// A scenario: steps run in order (requests, bursts, IdP switches, fetch-count checks).
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
}

/// What one runtime answers in place of a case's `expect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetExpect {
    /// Why this runtime differs: what answers, and where (shown in the report).
    pub why: String,
    /// What the client and the origin must see on this runtime.
    pub expect: Expect,
}

/// One step of a scenario; exactly one kind per step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Switch the test IdP to this mode.
    #[serde(default)]
    pub idp: Option<IdpMode>,
    /// Send a request (with `expect`), as a case does.
    #[serde(default)]
    pub request: Option<Request>,
    /// What the request's response must be.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Send a burst (with `expect_statuses`), as a case does.
    #[serde(default)]
    pub burst: Option<Burst>,
    /// For a burst: how many responses of each status.
    #[serde(default)]
    pub expect_statuses: Option<BTreeMap<String, u32>>,
    /// How many requests the IdP got for a path since the file started or the last reset.
    #[serde(default)]
    pub expect_idp_fetches: Option<FetchCount>,
    /// `true`: count IdP requests from zero again.
    #[serde(default)]
    pub idp_reset_count: Option<bool>,
    /// Wait this long (keep it short: a second or so).
    #[serde(default)]
    pub sleep_ms: Option<u64>,
}

/// Bounds on the IdP's request count for one path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchCount {
    /// The path, without query (`/jwks`, `/.well-known/openid-configuration`).
    pub path: String,
    /// At least this many.
    #[serde(default)]
    pub min: u64,
    /// At most this many.
    pub max: u64,
}

/// Scenario steps longer than this are refused (files must stay fast).
pub const MAX_SLEEP_MS: u64 = 5_000;

impl Step {
    fn validate(&self) -> anyhow::Result<()> {
        let kinds = [
            self.idp.is_some(),
            self.request.is_some() || self.expect.is_some(),
            self.burst.is_some() || self.expect_statuses.is_some(),
            self.expect_idp_fetches.is_some(),
            self.idp_reset_count.is_some(),
            self.sleep_ms.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            bail!("a step is exactly one of idp, request+expect, burst+expect_statuses, expect_idp_fetches, idp_reset_count, sleep_ms");
        }
        match (&self.request, &self.expect) {
            (Some(r), Some(e)) => {
                r.validate()?;
                if e.status.is_none() && e.status_any.is_none() {
                    bail!("expect needs status or status_any");
                }
            }
            (None, None) => {}
            _ => bail!("a request step needs both request and expect"),
        }
        match (&self.burst, &self.expect_statuses) {
            (Some(b), Some(_)) => b.validate()?,
            (None, None) => {}
            _ => bail!("a burst step needs both burst and expect_statuses"),
        }
        if let Some(f) = &self.expect_idp_fetches {
            if f.min > f.max || !f.path.starts_with('/') {
                bail!("expect_idp_fetches needs a path starting with / and min <= max");
            }
        }
        if self.idp_reset_count == Some(false) {
            bail!("idp_reset_count is only ever true");
        }
        if self.sleep_ms.is_some_and(|ms| ms > MAX_SLEEP_MS) {
            bail!("sleep_ms is at most {MAX_SLEEP_MS}");
        }
        Ok(())
    }
}

/// A concurrent burst of identical requests (or of a list of requests, taken in turn).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// The request every member of the burst sends.
    #[serde(default)]
    pub request: Option<Request>,
    /// Instead of `request`: member `i` sends `requests[i % len]`.
    #[serde(default)]
    pub requests: Option<Vec<Request>>,
    /// How many requests in all.
    pub count: u32,
    /// How many in flight at once.
    pub concurrency: u32,
}

/// A request, sent byte-exact over a fresh connection.
///
/// The runner adds `Host` (unless `headers` has one), `Content-Length` for a body (unless
/// `chunked` or `headers` has one), `Connection: close` (unless `headers` has a `Connection`) and
/// `x-conformance-id`. Nothing else is added or changed; header names keep their case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Method token, sent as is.
    #[serde(default = "default_method")]
    pub method: String,
    /// Raw request target, sent as is (no normalisation of any kind).
    #[serde(default)]
    pub target: String,
    /// Header lines in order, names as written.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// Body as compact JSON.
    #[serde(default)]
    pub body_json: Option<Value>,
    /// Body as base64 bytes.
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Body made of repeated text (one part or a list of parts, concatenated).
    #[serde(default)]
    pub body_repeat: Option<OneOrMany<Repeat>>,
    /// Send the body with `Transfer-Encoding: chunked` and no `Content-Length`.
    #[serde(default)]
    pub chunked: bool,
    /// Shut down the sending side once the request is written (the client says "no more").
    #[serde(default)]
    pub half_close: bool,
    /// A whole request as text (CRLFs written out); the runner only inserts `x-conformance-id`
    /// after the request line. Excludes every other request field.
    #[serde(default)]
    pub raw: Option<String>,
    /// A whole request as base64 bytes, for bytes JSON strings cannot carry.
    #[serde(default)]
    pub raw_base64: Option<String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// Text repeated `count` times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// The text.
    pub text: String,
    /// How many times.
    pub count: usize,
}

/// A single value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Several.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// As a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// What the client must receive, and what the origin must (not) have received.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exact status.
    #[serde(default)]
    pub status: Option<u16>,
    /// Any of these statuses.
    #[serde(default)]
    pub status_any: Option<Vec<u16>>,
    /// The gateway may also close the connection without a response (never hang).
    #[serde(default)]
    pub or_closed: bool,
    /// Response headers: exact value, or `null` for "must be absent".
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Response headers that must be present, any value.
    #[serde(default)]
    pub header_present: Vec<String>,
    /// Response headers that must not have this value (absent is fine).
    #[serde(default)]
    pub headers_not: BTreeMap<String, String>,
    /// Problem slug: the body is `application/problem+json` with type
    /// `urn:portcullis:problem:<slug>`, the same status and a non-empty `request_id`.
    #[serde(default)]
    pub problem: Option<String>,
    /// JSON pointers that the problem's `errors[].pointer` set must contain.
    #[serde(default)]
    pub problem_errors_pointers: Vec<String>,
    /// Exact response body text.
    #[serde(default)]
    pub body: Option<String>,
    /// Response body as JSON, compared structurally.
    #[serde(default)]
    pub body_json: Option<Value>,
    /// Strings the response body must not contain (secrets, echoed values, internals).
    #[serde(default)]
    pub body_not_contains: Vec<String>,
    /// The whole exchange must finish within this many milliseconds.
    #[serde(default)]
    pub max_ms: Option<u64>,
    /// The gateway's access line for this request (found by the response's
    /// `x-portcullis-request-id` among the target's output) has these members with these values,
    /// e.g. `{"status": 503, "reason": "no-policy:no_policy"}`.
    #[serde(default)]
    pub access_log: Option<BTreeMap<String, Value>>,
    /// Absent: not checked, except that a problem other than `origin-*` implies `null`.
    /// `null`: the origin must not have received the request. An object: it received it once,
    /// like this.
    #[serde(default, deserialize_with = "present")]
    pub origin: Option<Option<OriginExpect>>,
}

/// What the origin must have received.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginExpect {
    /// Exact request target (path and query) as received.
    #[serde(default)]
    pub path: Option<String>,
    /// Exact method.
    #[serde(default)]
    pub method: Option<String>,
    /// Headers: exact value (repeated headers joined with ", "), or `null` for "absent".
    /// Names are compared case-insensitively.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// Headers that must be present, any value.
    #[serde(default)]
    pub header_present: Vec<String>,
    /// Headers that must not have this value (absent is fine).
    #[serde(default)]
    pub headers_not: BTreeMap<String, String>,
    /// Exact body text.
    #[serde(default)]
    pub body: Option<String>,
    /// Body as JSON, compared structurally.
    #[serde(default)]
    pub body_json: Option<Value>,
    /// Body length in bytes.
    #[serde(default)]
    pub body_len: Option<usize>,
    /// `x-portcullis-signature` must verify, recomputed here from what the origin received
    /// (docs/origin-verification.md), with this key.
    #[serde(default)]
    pub signature: Option<SignatureExpect>,
}

/// How the origin checks a signed request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureExpect {
    /// The signing secret (the value, as the origin holds it).
    pub secret: String,
    /// Whether the body's digest is signed (the gateway buffered it) or `UNSIGNED-PAYLOAD`.
    pub body_signed: bool,
}

/// Distinguishes "field absent" (`None`) from "field is null" (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl VectorFile {
    /// Read and check one vector file.
    pub fn load(path: &Path) -> anyhow::Result<VectorFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: VectorFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid vector file", path.display()))?;
        file.validate()
            .with_context(|| format!("{} is not a valid vector file", path.display()))?;
        Ok(file)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for case in &self.cases {
            if !names.insert(case.name.as_str()) {
                bail!("case name {:?} appears twice", case.name);
            }
            if case.note.trim().is_empty() {
                bail!("case {:?} has no note", case.name);
            }
            match (
                &case.request,
                &case.expect,
                &case.burst,
                &case.expect_statuses,
            ) {
                (Some(r), Some(_), None, None) => r
                    .validate()
                    .with_context(|| format!("case {:?}", case.name))?,
                (None, None, Some(b), Some(_)) => {
                    if case.repeat.is_some() {
                        bail!("case {:?}: a burst has no repeat", case.name);
                    }
                    b.validate()
                        .with_context(|| format!("case {:?}", case.name))?
                }
                (None, None, None, None) if case.steps.is_some() => {
                    if case.repeat.is_some() {
                        bail!("case {:?}: a scenario has no repeat", case.name);
                    }
                    let steps = case.steps.as_deref().unwrap_or_default();
                    if steps.is_empty() {
                        bail!("case {:?}: a scenario needs steps", case.name);
                    }
                    for (i, step) in steps.iter().enumerate() {
                        step.validate()
                            .with_context(|| format!("case {:?}, step {i}", case.name))?;
                    }
                }
                _ => bail!(
                    "case {:?} needs exactly one of request+expect, burst+expect_statuses or steps",
                    case.name
                ),
            }
            if case.steps.is_some() && (case.request.is_some() || case.burst.is_some()) {
                bail!("case {:?}: a scenario has only steps", case.name);
            }
            if let Some(e) = &case.expect {
                if e.status.is_none() && e.status_any.is_none() {
                    bail!("case {:?}: expect needs status or status_any", case.name);
                }
            }
            if !case.expect_on.is_empty() && case.request.is_none() {
                bail!("case {:?}: expect_on is for request cases", case.name);
            }
            for (target, on) in &case.expect_on {
                if on.why.trim().is_empty() {
                    bail!("case {:?}: expect_on {target:?} needs a why", case.name);
                }
                if on.expect.status.is_none() && on.expect.status_any.is_none() {
                    bail!(
                        "case {:?}: expect_on {target:?} needs status or status_any",
                        case.name
                    );
                }
            }
        }
        Ok(())
    }
}

impl Case {
    /// What `target` must see for this case: its `expect_on` entry (and why) if it has one,
    /// else `expect`.
    pub fn expect_for(&self, target: &str) -> (Option<&Expect>, Option<&str>) {
        match self.expect_on.get(target) {
            Some(on) => (Some(&on.expect), Some(on.why.as_str())),
            None => (self.expect.as_ref(), None),
        }
    }
}

impl Burst {
    /// The requests members send in turn.
    pub fn members(&self) -> &[Request] {
        match (&self.request, &self.requests) {
            (Some(r), None) => std::slice::from_ref(r),
            (None, Some(list)) => list,
            _ => &[],
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.count == 0 || self.concurrency == 0 {
            bail!("burst count and concurrency must be positive");
        }
        if self.members().is_empty() {
            bail!("a burst needs exactly one of request or a non-empty requests list");
        }
        for r in self.members() {
            r.validate()?;
        }
        Ok(())
    }
}

impl VectorFile {
    /// Whether this file needs the test IdP: its config names `${IDP}`, a scenario switches the
    /// IdP or counts its requests, or it sets `idp_initial`.
    pub fn needs_idp(&self) -> bool {
        self.idp_initial.is_some()
            || self.config.to_string().contains("${IDP}")
            || self
                .cases
                .iter()
                .flat_map(|c| c.steps.iter().flatten())
                .any(|s| {
                    s.idp.is_some() || s.expect_idp_fetches.is_some() || s.idp_reset_count.is_some()
                })
    }
}

impl Request {
    fn validate(&self) -> anyhow::Result<()> {
        let bodies = [
            self.body.is_some(),
            self.body_json.is_some(),
            self.body_base64.is_some(),
            self.body_repeat.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if bodies > 1 {
            bail!("a request has at most one of body, body_json, body_base64, body_repeat");
        }
        let raw = self.raw.is_some() || self.raw_base64.is_some();
        if raw
            && (bodies > 0 || !self.headers.is_empty() || !self.target.is_empty() || self.chunked)
        {
            bail!("a raw request has no other request fields");
        }
        if !raw && self.target.is_empty() {
            bail!("a request needs a target");
        }
        Ok(())
    }
}

/// The vector files in `dir` (every `*.json` except `*.generated.json`), sorted by name.
pub fn vector_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") && !name.ends_with(".generated.json") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The token file `mint` writes beside the vectors: name -> compact JWS.
pub const TOKENS_FILE: &str = "tokens.generated.json";

/// Load `tokens.generated.json` from `dir`.
pub fn load_tokens(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = dir.join(TOKENS_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `cargo run -p portcullis-conformance --bin mint`)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
