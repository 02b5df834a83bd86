//! The driver: where every request is decided.
//!
//! [`Gateway::decide`] runs the phases in a fixed order that no adapter can change:
//!
//! 0. `client_ip`, `ip_rules` — find the client's address once; the top level's IP rules
//!    refuse an address before anything else is looked at (403).
//! 1. `path` — normalise the request target; refuse anything ambiguous (400).
//! 2. `cors` — a CORS preflight for a route with CORS is answered here (204, or 403): before
//!    any credential is asked for or quota spent, since browsers send preflights without them.
//! 3. `route` — first route in file order whose path and method match (404, 405); `HEAD` goes
//!    wherever `GET` does. Then the route's own IP rules (403).
//! 4. `lockout`, `authn` — an address blocked after too many 401s is refused before anything is
//!    verified (429); then the route's providers, JWT or API key (401), each 401 counted.
//! 5. `authz` — scopes and required claims (403).
//! 6. `body` — declared size, content type, query schema, then the body itself when the route
//!    inspects it (413, 415, 422).
//! 7. `quota` — the only phase that touches a store, so it runs last (429, 503).
//!
//! The result is a [`Decision`]: a request to forward, already rewritten for the origin, or a
//! complete problem response. The adapter carries it out and writes the log line from
//! [`Outcome::log`].

use std::sync::Arc;

use http::{HeaderMap, Request};

use crate::authn::{self, Principal};
use crate::body::{self, BodyPlan, RequestBody};
use crate::client_ip;
use crate::config::Policy;
pub use crate::context::RequestContext;
use crate::cors::{self, Preflight, ResponseCors};
use crate::fetch::Fetch;
use crate::forward::{self, Forward, ForwardBody};
use crate::ip_rules;
use crate::jwks::{KeyEvent, KeyRing, KeySetState, SharedKeySets};
use crate::lockout;
use crate::path;
use crate::problem::Reject;
use crate::quota::{self, CounterStore};
use crate::route::{self, Routed};
use crate::signature::{PureRust, Verify};
use crate::time::UnixTime;
use crate::token_cache::TokenCache;

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<B> {
    /// Send this request to the origin and relay its response (see [`Forward`]).
    Forward(Box<Forward<B>>),
    /// Answer with this problem response; nothing reaches the origin.
    Reject(Reject),
    /// A CORS preflight the route's policy allows: answer `204` with these headers.
    Preflight(HeaderMap),
}

/// A decision plus the facts the adapter logs.
#[derive(Debug)]
pub struct Outcome<B> {
    /// What to do.
    pub decision: Decision<B>,
    /// Facts for the log line.
    pub log: LogFacts,
    /// The CORS headers every response to this request carries, whichever it ends with
    /// (`None`: no CORS policy applies, so the origin's own headers pass).
    pub cors: Option<ResponseCors>,
}

/// Per-request facts every adapter logs in the same shape (see [`crate::log`]).
#[derive(Debug, Clone, Default)]
pub struct LogFacts {
    /// The request id.
    pub request_id: String,
    /// The version of the policy that decided, when one did.
    pub policy: Option<crate::PolicyVersion>,
    /// The matched route's id, when a route matched.
    pub route: Option<String>,
    /// The request method.
    pub method: String,
    /// The path as received (before normalisation), truncated for the log.
    pub path: String,
    /// Key-set events that happened while deciding (a refetch for a new `kid`, a failed refresh,
    /// a skipped key), by provider name. Adapters log them apart from the request line.
    pub key_events: Vec<(String, KeyEvent)>,
    /// The authenticated consumer, when there is one.
    pub consumer: Option<String>,
    /// Problems found in the policy while deciding: a schema compiled on first use
    /// ([`crate::config::SchemaCompilation::OnFirstUse`]) that turned out broken. Adapters log
    /// them, with their JSON pointers, for the operator.
    pub policy_problems: Vec<crate::ConfigError>,
    /// How the quota store failed, when it did (the request was then refused with 503, or
    /// admitted where the quota or the deployment allows that).
    pub store_error: Option<crate::StoreError>,
    /// The client's address ([`crate::client_ip`]), when the runtime reported one.
    pub client_ip: Option<std::net::IpAddr>,
    /// The lockout block this request's 401 started, if it did (an operator event).
    pub lockout: Option<crate::lockout::BlockStarted>,
}

/// A compiled policy, ready to decide requests. Cheap to share: it is immutable.
///
/// Calling protocol, for every request:
/// 1. build a [`RequestContext`] (clock, request id, client address);
/// 2. call [`Gateway::decide`] with the request, whose body implements [`RequestBody`], and the
///    runtime's [`CounterStore`];
/// 3. on [`Decision::Reject`], answer with [`Reject::to_response`]; on [`Decision::Forward`], send
///    [`Forward::request`] with [`Forward::timeout`], then pass the origin's response headers
///    through [`forward::prepare_response`]; on failure answer with
///    [`forward::origin_unreachable`] or [`forward::origin_timeout`];
/// 4. write one log line with [`crate::log::LogLine`].
#[derive(Debug)]
pub struct Gateway {
    policy: Policy,
    keys: KeyRing,
    tokens: TokenCache,
    verifier: Box<dyn Verify>,
}

impl Gateway {
    /// Wrap a validated policy, with empty key-set state for its remote key sources.
    pub fn new(policy: Policy) -> Self {
        let keys = KeyRing::new(policy.providers.iter().map(|p| p.remote_keys().is_some()));
        let (entries, bytes) = policy.token_cache;
        Gateway {
            policy,
            keys,
            tokens: TokenCache::new(entries, bytes),
            verifier: Box::new(PureRust),
        }
    }

    /// The same gateway with `verifier` for public-key signatures instead of the pure-Rust
    /// default (see [`crate::signature`]).
    pub fn with_verifier(mut self, verifier: impl Verify + 'static) -> Self {
        self.verifier = Box::new(verifier);
        self
    }

    /// The same gateway coordinating its key-set fetches with other instances through `store`,
    /// for runtimes whose instances share no memory (Spin): each remote key set's state is kept
    /// in the store under its name ([`Gateway::key_set_names`]), read when a request needs a
    /// fetch, and written as soon as a fetch ends, so one fetch serves every instance and the
    /// minimum refresh interval holds across them (see [`crate::jwks::shared`]). Runtimes whose
    /// requests share memory need none: their [`KeyRing`] already holds one state per provider.
    pub fn with_shared_key_sets(mut self, store: impl SharedKeySets + 'static) -> Self {
        let mut names = vec![None; self.policy.providers.len()];
        for (index, name) in self.remote_providers() {
            names[index] = Some(name);
        }
        self.keys.share(Box::new(store), names);
        self
    }

    /// The name of the signature backend in use.
    pub fn verifier_name(&self) -> &'static str {
        self.verifier.name()
    }

    /// Refresh the remote key sets that are due (every one when `force`), within each provider's
    /// minimum refresh interval. Runtimes with memory call this at start-up and in the background,
    /// so requests rarely wait on a fetch. Returns what happened, per provider name.
    pub async fn refresh_keys<F: Fetch + ?Sized>(
        &self,
        now: UnixTime,
        fetch: &F,
        force: bool,
    ) -> Vec<(String, KeyEvent)> {
        // Concurrently, so that several unreachable IdPs cost one timeout, not the sum.
        let refreshes = self
            .policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(index, provider)| {
                let cfg = provider.remote_keys()?;
                Some(async move {
                    let events = self.keys.refresh(index, cfg, now, fetch, force).await;
                    events
                        .into_iter()
                        .map(|e| (provider.name.clone(), e))
                        .collect::<Vec<_>>()
                })
            });
        futures_util::future::join_all(refreshes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The start-up rule for a policy that just went live ([`crate::policy_store::Applied`]):
    /// fetch every remote key set that is not there yet, so the first requests do not each wait
    /// on the IdP, as a process fetches them before it reports ready. With shared key sets, a
    /// set another instance already published is adopted instead of fetched.
    pub async fn start_up<F: Fetch + ?Sized>(
        &self,
        fetch: &F,
        clock: &dyn crate::time::Clock,
    ) -> Vec<crate::event::Event> {
        self.refresh_due(fetch, clock).await
    }

    /// Refresh the remote key sets that are due, within each provider's minimum interval, and
    /// say what happened: what a runtime with memory runs in the background (see
    /// [`Gateway::keys_due`]), so requests rarely wait on the IdP.
    pub async fn refresh_due<F: Fetch + ?Sized>(
        &self,
        fetch: &F,
        clock: &dyn crate::time::Clock,
    ) -> Vec<crate::event::Event> {
        let events = self.refresh_keys(clock.now(), fetch, false).await;
        let now = clock.now();
        events
            .iter()
            .map(|(provider, event)| crate::event::Event::key_set(now, provider, event))
            .collect()
    }

    /// Whether [`refresh_keys`](Self::refresh_keys) without `force` would fetch anything at
    /// `now`. Synchronous and cheap (no allocation), so a runtime can call it on every request
    /// and schedule the background refresh only when it has work to do.
    pub fn keys_due(&self, now: UnixTime) -> bool {
        self.policy
            .providers
            .iter()
            .enumerate()
            .any(|(index, provider)| {
                provider
                    .remote_keys()
                    .is_some_and(|cfg| self.keys.refresh_wanted(index, cfg, now))
            })
    }

    /// Providers with remote key sources and whether each holds a usable key set at `now`.
    pub async fn key_status(&self, now: UnixTime) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for (index, provider) in self.policy.providers.iter().enumerate() {
            if let Some(cfg) = provider.remote_keys() {
                out.push((
                    provider.name.clone(),
                    self.keys.ready(index, cfg, now).await,
                ));
            }
        }
        out
    }

    /// What keeps this gateway from being ready at `now`, for a readiness probe: the providers
    /// whose remote key set has not arrived (empty when every one has).
    pub async fn unready(&self, now: UnixTime) -> Vec<String> {
        let status = self.key_status(now).await;
        let missing: Vec<String> = status.into_iter().filter(|k| !k.1).map(|k| k.0).collect();
        match missing.is_empty() {
            true => Vec::new(),
            false => vec![format!("no key set yet for: {}", missing.join(", "))],
        }
    }

    /// Names of the remote key sets, one per provider with a `jwks_url` or `oidc_issuer`:
    /// `{provider}:{source fingerprint}`, so a name changes whenever the provider's key source
    /// does. Runtimes that keep no memory between requests keep each [`KeySetState`] in a store
    /// under its name: through [`Gateway::with_shared_key_sets`], which also makes fetches
    /// single-flight across instances, or by hand ([`Gateway::key_sets`],
    /// [`Gateway::restore_key_set`]).
    pub fn key_set_names(&self) -> Vec<String> {
        self.remote_providers().map(|(_, name)| name).collect()
    }

    /// Every remote key set's current state, by name (see [`Gateway::key_set_names`]).
    pub async fn key_sets(&self) -> Vec<(String, KeySetState)> {
        let mut out = Vec::new();
        for (index, name) in self.remote_providers() {
            if let Some(state) = self.keys.state(index).await {
                out.push((name, state));
            }
        }
        out
    }

    /// Start from a key-set state kept in a store, so a fresh instance does not fetch keys
    /// another one already has. A name this policy does not have is ignored (returns `false`).
    pub async fn restore_key_set(&self, name: &str, state: KeySetState) -> bool {
        match self.remote_providers().find(|(_, n)| n == name) {
            Some((index, _)) => self.keys.set_state(index, state).await,
            None => false,
        }
    }

    fn remote_providers(&self) -> impl Iterator<Item = (usize, String)> + '_ {
        self.policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(index, provider)| {
                let cfg = provider.remote_keys()?;
                Some((
                    index,
                    format!("{}:{}", provider.name, cfg.source.fingerprint()),
                ))
            })
    }

    /// The policy this gateway enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decide one request. See the type's docs for the calling protocol.
    pub async fn decide<B, S, F>(
        &self,
        request: Request<B>,
        ctx: &RequestContext,
        store: &S,
        fetch: &F,
    ) -> Outcome<B>
    where
        B: RequestBody,
        S: CounterStore + ?Sized,
        F: Fetch + ?Sized,
    {
        let (parts, body) = request.into_parts();
        let raw_path = parts.uri.path();
        let mut log = LogFacts {
            request_id: ctx.request_id.clone(),
            policy: Some(self.policy.version),
            route: None,
            method: parts.method.as_str().to_owned(),
            path: crate::log::clip(raw_path),
            consumer: None,
            key_events: Vec::new(),
            policy_problems: Vec::new(),
            store_error: None,
            client_ip: None,
            lockout: None,
        };
        let client = client_ip::resolve(self.policy.client_ip.as_ref(), ctx.peer, &parts.headers);
        log.client_ip = client.addr;
        // Until a route is known, the top-level policy is the one that applies.
        let mut cors = self
            .policy
            .cors
            .as_ref()
            .map(|c| c.for_actual(&parts.headers));
        let facts = Facts { ctx, client };
        let run = self.run(&parts, body, &facts, store, fetch, &mut log, &mut cors);
        let decision = match run.await {
            Ok(Admitted::Forward(forward)) => Decision::Forward(forward),
            Ok(Admitted::Preflight(headers)) => Decision::Preflight(headers),
            Err(reject) => Decision::Reject(reject),
        };
        Outcome {
            decision,
            log,
            cors,
        }
    }

    #[allow(clippy::too_many_arguments)] // the phases' inputs, each named for what it is
    async fn run<B, S, F>(
        &self,
        parts: &http::request::Parts,
        body: B,
        facts: &Facts<'_>,
        store: &S,
        fetch: &F,
        log: &mut LogFacts,
        cors: &mut Option<ResponseCors>,
    ) -> Result<Admitted<B>, Reject>
    where
        B: RequestBody,
        S: CounterStore + ?Sized,
        F: Fetch + ?Sized,
    {
        let policy = &self.policy;
        let Facts { ctx, client } = facts;
        ip_rules::admit(policy.ip.as_ref(), client.addr)?;
        let normal = path::normalise(parts.uri.path())?;
        if cors::is_preflight(&parts.method, &parts.headers) {
            if let Preflight::Allowed { headers, route } =
                cors::preflight(policy, &normal, &parts.headers, cors)?
            {
                log.route = Some(route.id.clone());
                ip_rules::admit(route.ip.as_ref(), client.addr)?;
                return Ok(Admitted::Preflight(headers));
            }
        }
        let routed: Routed<'_> = route::select(policy, &normal, &parts.method)?;
        log.route = Some(routed.route.id.clone());
        *cors = (routed.route.cors)
            .effective(policy.cors.as_ref())
            .map(|c| c.for_actual(&parts.headers));
        ip_rules::admit(routed.route.ip.as_ref(), client.addr)?;
        let lockout = lockout::applying(policy, routed.route);
        if let Some(lockout) = lockout {
            let failed = &mut log.store_error;
            lockout.check(client.addr, store, ctx.now, failed).await?;
        }
        let authenticated = authn::authenticate(
            policy,
            &self.keys,
            &self.tokens,
            self.verifier.as_ref(),
            routed.route,
            &parts.headers,
            ctx.now,
            fetch,
            &mut log.key_events,
        )
        .await;
        let principal: Option<Arc<Principal>> = match (authenticated, lockout) {
            (Ok(principal), _) => principal,
            (Err(reject), Some(lockout)) if reject.status() == http::StatusCode::UNAUTHORIZED => {
                let failed = &mut log.store_error;
                log.lockout = lockout.fail(client.addr, store, ctx.now, failed).await;
                return Err(reject);
            }
            (Err(reject), _) => return Err(reject),
        };
        log.consumer = principal.as_ref().map(|p| p.consumer.clone());
        let permit = crate::authz::check(routed.route, principal.as_deref())?;
        if let Err(problem) = routed.route.request.compile_schemas() {
            log.policy_problems.push(problem);
            return Err(body::broken_schema());
        }
        let plan = body::check_head(routed.route, parts)?;
        forward::headers::screen(policy, &parts.headers)?; // the header table's refusals (400)
        let body = match plan {
            BodyPlan::Stream => ForwardBody::Stream(body),
            BodyPlan::Inspect { limit } => {
                let bytes = body::read(body, limit, routed.route).await?;
                body::check_body(routed.route, &bytes)?;
                ForwardBody::Buffered(bytes)
            }
        };
        let headers = &parts.headers;
        let failed = &mut log.store_error;
        let grant = quota::admit(policy, routed.route, &permit, facts, headers, store, failed);
        let grant = grant.await?;
        Ok(Admitted::Forward(Box::new(forward::build(
            policy,
            &routed,
            &normal,
            parts,
            body,
            principal.as_deref(),
            grant,
            facts,
        ))))
    }
}

/// What the phases know about a request besides its message: the adapter's facts and the
/// client they make under the policy.
pub(crate) struct Facts<'a> {
    pub(crate) ctx: &'a RequestContext,
    pub(crate) client: client_ip::Client,
}

/// A request the phases let through: to the origin, or answered as an allowed preflight.
enum Admitted<B> {
    Forward(Box<Forward<B>>),
    Preflight(HeaderMap),
}
