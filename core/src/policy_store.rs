//! Which policy is live: the one state machine every runtime runs its policy source through.
//!
//! A runtime reads its source (a file, a KV key) when [`PolicyStore::claim_read`] says so and
//! hands over what it got ([`PolicyRead`]); [`PolicyStore::apply`] decides what is live:
//!
//! - **first load**: a text that compiles becomes live, and the runtime is told to fetch its
//!   remote key sets before deciding its first request ([`Applied::start_up`]), as a process
//!   fetches them before it reports ready;
//! - **reload**: the source is read again `config_ttl_s` after the last read; the same text keeps
//!   the same [`Gateway`] (and so its key sets and token cache), a new valid text replaces it;
//! - **keep the last good policy**: a text that does not compile, a missing key or a failed read
//!   never replaces a live policy. Each problem is reported once per refused text, with its JSON
//!   pointer, together with which policy stays live; with none live, requests get 503
//!   `no-policy` ([`crate::exchange::no_policy`]) and the source is read again after a second.
//!   A refused text is not validated again until [`RECHECK_REFUSED`] has passed: what it was
//!   refused for may lie outside the text (a secret not set yet), so it is checked once in a
//!   while, and reported again only if it is refused for something new.
//!
//! A runtime whose instances keep no memory between requests (Spin) keeps the store's
//! [`Memo`] beside the policy instead: it records which text was validated in full, so later
//! instances compile only the schemas of the route they match, and do the start-up fetch only
//! for a text no instance has started yet (and only that one reports it `policy_loaded`); and
//! which text was refused, so later instances neither validate it nor report it again. A memo
//! only ever saves work: a text it does not name, or names as refused more than
//! [`RECHECK_REFUSED`] ago, is validated in full.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{ConfigErrors, SchemaCompilation};
use crate::decision::Gateway;
use crate::event::{Event, Kind, Level, LogSink};
use crate::fetch::Fetch;
use crate::policy_version::PolicyVersion;
use crate::time::{Clock, UnixTime};

/// How soon to read the source again when no good policy is live, or while one request is
/// already reading it.
pub const RETRY_WITHOUT_POLICY: Duration = Duration::from_secs(1);

/// How long a refused text stays refused without being validated again. What it was refused for
/// may be outside the text (a `secret_env` variable that is not set yet), so a text is never
/// refused for good; a recheck that finds the same problems reports nothing.
pub const RECHECK_REFUSED: Duration = Duration::from_secs(60);

/// What a runtime got from its policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyRead {
    /// The policy text.
    Text(String),
    /// The source holds nothing (`what` names it: the KV key, the file).
    Missing(String),
    /// Reading failed; `why` is for the operator.
    Failed(String),
}

/// What [`PolicyStore::apply`] did.
#[derive(Debug)]
pub struct Applied {
    /// The live gateway, if any (`None`: answer 503 `no-policy`).
    pub gateway: Option<Arc<Gateway>>,
    /// The live gateway is new and its remote key sets have not been fetched: call
    /// [`Gateway::start_up`] before deciding with it.
    pub start_up: bool,
    /// What to tell the operator.
    pub events: Vec<Event>,
}

impl Applied {
    /// Carry out what was applied: hand the events to `log`, fetch a new gateway's remote key
    /// sets before its first request (logging what that did too), and return the live gateway.
    pub async fn start<F: Fetch + ?Sized>(
        self,
        fetch: &F,
        clock: &dyn Clock,
        log: &dyn LogSink,
    ) -> Option<Arc<Gateway>> {
        for event in &self.events {
            log.event(event);
        }
        let gateway = self.gateway?;
        if self.start_up {
            for event in gateway.start_up(fetch, clock).await {
                log.event(&event);
            }
        }
        Some(gateway)
    }
}

/// What a runtime without memory keeps between requests (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Memo {
    /// SHA-256 (hex) of the last text validated in full, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated: Option<String>,
    /// The last text refused, if none has been validated since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// The build that validated or refused them: another build validates again.
    pub by: String,
}

/// A refused text, as a [`Memo`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// SHA-256 (hex) of the text.
    pub text: String,
    /// SHA-256 (hex) of the problems it was refused for (each pointer and message, as
    /// `policy_rejected` lists them): a recheck that finds the same ones reports nothing.
    pub errors: String,
    /// When it was last validated, in seconds since the Unix epoch.
    pub at: u64,
}

/// The live policy and what is known about the source.
#[derive(Debug, Default)]
pub struct PolicyStore {
    live: Option<Live>,
    refused: Option<Refusal>,
    next_read: Option<UnixTime>,
    validated: Option<[u8; 32]>,
}

/// The text refused last, what for, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    text: [u8; 32],
    errors: [u8; 32],
    at: UnixTime,
}

impl Refusal {
    /// Whether a text with `digest` is still to be taken as refused at `now`, without validating
    /// it again. A refusal dated after `now` (another instance's clock, a memo written by hand)
    /// counts as due, so nothing can postpone the recheck.
    fn holds(&self, digest: &[u8; 32], now: UnixTime) -> bool {
        self.text == *digest && self.at <= now && now < self.at.saturating_add(RECHECK_REFUSED)
    }
}

#[derive(Debug)]
struct Live {
    digest: [u8; 32],
    gateway: Arc<Gateway>,
}

/// Which build of the core this is, for [`Memo::by`].
const BUILD: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));

impl PolicyStore {
    /// A store with nothing live.
    pub fn new() -> Self {
        PolicyStore::default()
    }

    /// The live gateway, if any.
    pub fn live(&self) -> Option<Arc<Gateway>> {
        self.live.as_ref().map(|l| Arc::clone(&l.gateway))
    }

    /// Whether the runtime should read its source now. When it should and a policy is live, the
    /// read is claimed: other requests keep deciding with the live policy, and are not told to
    /// read too, until this read is applied or a second has passed.
    pub fn claim_read(&mut self, now: UnixTime) -> bool {
        let due = self.next_read.is_none_or(|at| now >= at);
        if due && self.live.is_some() {
            self.next_read = Some(now.saturating_add(RETRY_WITHOUT_POLICY));
        }
        due
    }

    /// Apply what the runtime read from `source` (a name for the operator: the file, the KV
    /// key). `compile` turns a text into a gateway with the runtime's secrets, signature
    /// backend and stores, compiling schemas as the store says.
    pub fn apply(
        &mut self,
        read: PolicyRead,
        source: &str,
        now: UnixTime,
        compile: impl FnOnce(&str, SchemaCompilation) -> Result<Gateway, ConfigErrors>,
    ) -> Applied {
        let mut events = Vec::new();
        let mut start_up = false;
        match read {
            PolicyRead::Text(text) => {
                let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                if self.live.as_ref().is_some_and(|l| l.digest == digest) {
                    self.refused = None;
                } else if self.refused.is_some_and(|r| r.holds(&digest, now)) {
                    // Refused lately and reported then: nothing new to say.
                } else {
                    let schemas = if self.validated == Some(digest) {
                        SchemaCompilation::OnFirstUse
                    } else {
                        SchemaCompilation::AtLoad
                    };
                    match compile(&text, schemas) {
                        Ok(gateway) => {
                            // A text validated in full by an earlier instance was started up,
                            // and reported as loaded, by it.
                            start_up = matches!(schemas, SchemaCompilation::AtLoad);
                            if start_up {
                                events.push(self.loaded(now, &gateway, source));
                            }
                            self.validated = Some(digest);
                            self.refused = None;
                            self.live = Some(Live {
                                digest,
                                gateway: Arc::new(gateway),
                            });
                        }
                        Err(errors) => {
                            let listed = listed(&errors);
                            let refusal = Refusal {
                                text: digest,
                                errors: Sha256::digest(Value::from(listed.clone()).to_string())
                                    .into(),
                                at: now,
                            };
                            let known = self.refused.is_some_and(|r| {
                                (r.text, r.errors) == (refusal.text, refusal.errors)
                            });
                            if !known {
                                events.push(self.rejected(now, &text, &errors, listed, source));
                            }
                            self.refused = Some(refusal);
                            // With nothing live here (an instance that keeps no memory), the
                            // refused text is what the source holds now: the text validated
                            // before it is no longer live, and goes live again as a new one.
                            if self.live.is_none() {
                                self.validated = None;
                            }
                        }
                    }
                }
            }
            PolicyRead::Missing(what) => {
                events.push(self.unavailable(now, &format!("{what} is empty"), source));
            }
            PolicyRead::Failed(why) => events.push(self.unavailable(now, &why, source)),
        }
        let wait = match &self.live {
            Some(live) => live.gateway.policy().config_ttl(),
            None => RETRY_WITHOUT_POLICY,
        };
        self.next_read = Some(now.saturating_add(wait));
        Applied {
            gateway: self.live(),
            start_up: start_up && self.live.is_some(),
            events,
        }
    }

    /// The source could not even be opened (`why`): [`PolicyStore::apply`] with
    /// [`PolicyRead::Failed`], for callers that have nothing to compile with.
    pub fn unreadable(&mut self, why: String, source: &str, now: UnixTime) -> Applied {
        self.apply(PolicyRead::Failed(why), source, now, |_, _| {
            Err(ConfigErrors(Vec::new()))
        })
    }

    fn live_version(&self) -> Option<PolicyVersion> {
        self.live.as_ref().map(|l| l.gateway.policy().version())
    }

    fn what_stays(&self) -> &'static str {
        match self.live {
            Some(_) => "keeping the last good policy",
            None => "no policy: answering 503",
        }
    }

    /// `policy_loaded`: `gateway` goes live in place of what is live now.
    fn loaded(&self, now: UnixTime, gateway: &Gateway, source: &str) -> Event {
        let policy = gateway.policy();
        let previous = self.live_version();
        let what = match previous {
            Some(_) => "policy reloaded",
            None => "policy loaded",
        };
        Event::new(now, Level::Info, Kind::PolicyLoaded, what)
            .under(Some(policy.version()))
            .with("previous", previous.map(|v| v.to_string()))
            .with("source", source)
            .with("routes", policy.routes.len())
            .with("providers", policy.providers.len())
            .with("quotas", policy.quotas.len())
            .with("verifier", gateway.verifier_name())
    }

    /// `policy_rejected`: `text` was refused with `errors` (`listed` as the event lists them);
    /// what is live stays.
    fn rejected(
        &self,
        now: UnixTime,
        text: &str,
        errors: &ConfigErrors,
        listed: Vec<Value>,
        source: &str,
    ) -> Event {
        let words: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        let message = format!(
            "policy refused: {}; {}",
            words.join("; "),
            self.what_stays()
        );
        Event::new(now, Level::Warn, Kind::PolicyRejected, message)
            .under(self.live_version())
            .with(
                "rejected",
                PolicyVersion::of_text(text).map(|v| v.to_string()),
            )
            .with("errors", listed)
            .with("source", source)
    }

    /// `policy_unavailable`: the source could not be read (`why`); what is live stays.
    fn unavailable(&self, now: UnixTime, why: &str, source: &str) -> Event {
        let message = format!("{why}; {}", self.what_stays());
        Event::new(now, Level::Warn, Kind::PolicyUnavailable, message)
            .under(self.live_version())
            .with("source", source)
    }

    /// The live policy turned out broken on first use of one of its schemas (only possible for
    /// a text compiled with [`SchemaCompilation::OnFirstUse`]): forget it and that its text was
    /// validated, so the next read validates in full and refuses it as a whole.
    pub fn forget_validation(&mut self) {
        self.validated = None;
        self.live = None;
    }

    /// What a runtime without memory keeps for the next instance: `None` when nothing was
    /// validated or refused.
    pub fn memo(&self) -> Option<Memo> {
        if self.validated.is_none() && self.refused.is_none() {
            return None;
        }
        Some(Memo {
            validated: self.validated.map(hex::encode),
            refused: self.refused.map(|r| Refused {
                text: hex::encode(r.text),
                errors: hex::encode(r.errors),
                at: r.at.as_secs(),
            }),
            by: BUILD.to_owned(),
        })
    }

    /// Start from what an earlier instance kept. A memo from another build is ignored, and so is
    /// any part of it that does not decode.
    pub fn recall(&mut self, memo: &Memo) {
        if memo.by != BUILD {
            return;
        }
        if let Some(digest) = memo.validated.as_deref().and_then(digest) {
            self.validated = Some(digest);
        }
        if let Some(refused) = &memo.refused {
            if let (Some(text), Some(errors)) = (digest(&refused.text), digest(&refused.errors)) {
                let at = UnixTime::from_secs(refused.at);
                self.refused = Some(Refusal { text, errors, at });
            }
        }
    }
}

/// Each error as `policy_rejected` lists it: its JSON pointer and message.
fn listed(errors: &ConfigErrors) -> Vec<Value> {
    errors
        .0
        .iter()
        .map(|e| json!({ "pointer": e.pointer, "message": e.kind.to_string() }))
        .collect()
}

/// A SHA-256 digest from its hex form.
fn digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests;
