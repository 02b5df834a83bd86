//! The policy file: parsed once, validated completely, compiled into immutable data.
//!
//! [`Policy::from_json`] reports every problem it finds, each with the JSON pointer of the
//! offending field, or returns a policy in which every reference resolves, every schema compiles
//! and every key parses. No other module sees raw config.

mod error;
mod read;

use std::time::Duration;

use http::{HeaderName, Method};

pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, ConfigWarning};

use crate::api_key::ApiKeyProvider;
use crate::jwt::JwtProvider;
use crate::quota::Rate;
use crate::route::Template;
use crate::schema::RouteSchema;

/// Where `secret_env` values come from: environment variables natively, Worker secrets,
/// Spin variables. The core never reads the environment itself.
pub trait Secrets {
    /// The value of secret `name`, if the runtime has it.
    fn get(&self, name: &str) -> Option<String>;
}

/// No secrets at all (for configs that use none, and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSecrets;

impl Secrets for NoSecrets {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

impl<F: Fn(&str) -> Option<String>> Secrets for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A validated, compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// The document's version ([`crate::policy_version`]).
    pub(crate) version: crate::PolicyVersion,
    /// How long runtimes that load the policy from a store (Workers KV) may keep using it before
    /// reading the store again.
    pub(crate) config_ttl: Duration,
    /// Verified-token cache bounds: entries and bytes (`token_cache_entries`, `token_cache_bytes`).
    pub(crate) token_cache: (usize, usize),
    pub(crate) origins: Vec<Origin>,
    pub(crate) providers: Vec<Provider>,
    pub(crate) quotas: Vec<Quota>,
    pub(crate) routes: Vec<Route>,
    /// The top-level `cors`: every route's unless it says otherwise, and the policy of the
    /// gateway's answers made before a route is known (400, 404, 405).
    pub(crate) cors: Option<crate::cors::Cors>,
    /// Every API-key header in the policy: never forwarded to any origin.
    pub(crate) api_key_headers: Vec<HeaderName>,
    /// The top-level `forward_headers` allow list: every route's unless it has its own.
    pub(crate) forward_headers: Option<crate::forward::headers::AllowList>,
    /// Which peers are proxies whose address header tells the client's (`client_ip`).
    pub(crate) client_ip: Option<crate::client_ip::ClientIpRule>,
    /// The top-level IP rules, checked before anything else in a request.
    pub(crate) ip: Option<crate::ip_rules::IpRules>,
    /// The top-level lockout: every authenticated route's unless it has its own.
    pub(crate) lockout: Option<crate::lockout::Lockout>,
    /// What `check` should tell the operator about a policy that is valid but likely not what
    /// was meant (see [`Policy::warnings`]).
    pub(crate) warnings: Vec<ConfigWarning>,
}

/// When a policy's JSON Schemas (`body_schema`, `query_schema`) are compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaCompilation {
    /// Every schema, at load: a broken one is reported with every other problem. For runtimes
    /// that load a policy once and keep it.
    #[default]
    AtLoad,
    /// Each route's schemas when a request first needs them; everything else is still checked at
    /// load. For runtimes that compile the policy on every request (Spin), where compiling every
    /// route's schemas would dominate each request, and which have already validated this exact
    /// text once with [`SchemaCompilation::AtLoad`]. Should a schema still fail to compile, its
    /// requests get 503 `no-policy` and the problem is in [`crate::LogFacts::policy_problems`].
    OnFirstUse,
}

/// What the runtime that loads a policy can carry out. A field that needs what the runtime lacks
/// is refused at load, with its pointer and what to do instead, never silently ignored: a policy
/// means the same on every runtime that accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// It reads certificate and key files for an origin's `tls` (natively).
    pub origin_tls_files: bool,
}

impl Capabilities {
    /// `portcullis serve`, and the tools that run beside it (`check`, `test`).
    pub const NATIVE: Capabilities = Capabilities {
        origin_tls_files: true,
    };
    /// Workers and Spin: no file system; their outbound TLS is the platform's to configure.
    pub const EDGE: Capabilities = Capabilities {
        origin_tls_files: false,
    };
}

impl Policy {
    /// Parse, validate and compile a policy file for the native runtime ([`Capabilities::NATIVE`]).
    /// `secrets` resolves `secret_env` names.
    pub fn from_json(text: &str, secrets: &dyn Secrets) -> Result<Policy, ConfigErrors> {
        Policy::from_json_on(
            text,
            secrets,
            SchemaCompilation::AtLoad,
            Capabilities::NATIVE,
        )
    }

    /// [`Policy::from_json`] for an edge runtime ([`Capabilities::EDGE`]), choosing when JSON
    /// Schemas are compiled.
    pub fn from_json_with(
        text: &str,
        secrets: &dyn Secrets,
        schemas: SchemaCompilation,
    ) -> Result<Policy, ConfigErrors> {
        Policy::from_json_on(text, secrets, schemas, Capabilities::EDGE)
    }

    /// Compile for a runtime with `capabilities`, choosing when JSON Schemas are compiled.
    pub fn from_json_on(
        text: &str,
        secrets: &dyn Secrets,
        schemas: SchemaCompilation,
        capabilities: Capabilities,
    ) -> Result<Policy, ConfigErrors> {
        read::policy(text, secrets, schemas, capabilities)
    }

    /// Origins by name and URL, for adapters that warm connection pools or list them.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.origins.iter()
    }

    /// The policy's version: the hash of its canonical form ([`crate::policy_version`]).
    pub fn version(&self) -> crate::PolicyVersion {
        self.version
    }

    /// How long a runtime that reads the policy from a store may use it before reading again
    /// (`config_ttl_s`, default 30 s).
    pub fn config_ttl(&self) -> Duration {
        self.config_ttl
    }

    /// Things in a valid policy that likely do not do what was meant, each with its JSON
    /// pointer: an allow-list entry the header table overrides, a quota a client can dodge.
    /// They never stop a policy from loading; `portcullis check` prints them.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// Route ids in match order.
    pub fn route_ids(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.id.as_str())
    }
}

/// An upstream the gateway forwards to.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Its name in the config.
    pub name: String,
    /// `scheme://authority[/base]`, without a trailing slash: the forwarded path is appended.
    pub base: String,
    /// Wait at most this long for the origin's response headers.
    pub timeout: Duration,
    /// Keys to sign forwarded requests with (`"sign"`), so the origin can refuse any request
    /// that did not come through the gateway.
    pub sign: Option<crate::origin_signing::SigningKeys>,
    /// How to reach it over TLS when the public roots are not the answer (`"tls"`).
    pub tls: Option<std::sync::Arc<OriginTls>>,
}

/// An origin's `tls`: what the native runtime's client uses instead of the defaults. Files are
/// read by the runtime when the policy loads, so a missing or broken one refuses the policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginTls {
    /// PEM certificates of the CAs to trust for this origin, instead of the public roots.
    pub ca_file: Option<String>,
    /// PEM certificate chain and private key to present (mutual TLS).
    pub client_cert: Option<(String, String)>,
    /// The name to send (SNI) and verify the certificate against, instead of the URL's host.
    pub server_name: Option<String>,
}

/// A named identity provider.
#[derive(Debug)]
pub(crate) struct Provider {
    pub(crate) name: String,
    pub(crate) kind: ProviderKind,
}

impl Provider {
    /// The remote key source, if this is a JWT provider with one.
    pub(crate) fn remote_keys(&self) -> Option<&crate::jwks::RemoteKeys> {
        match &self.kind {
            ProviderKind::Jwt(jwt) => match jwt.source() {
                crate::jwt::KeySource::Remote(cfg) => Some(cfg),
                _ => None,
            },
            ProviderKind::ApiKey(_) => None,
        }
    }
}

#[derive(Debug)]
pub(crate) enum ProviderKind {
    Jwt(Box<JwtProvider>),
    ApiKey(ApiKeyProvider),
}

/// A named quota.
#[derive(Debug, Clone)]
pub struct Quota {
    pub(crate) name: String,
    pub(crate) rate: Rate,
    pub(crate) by: QuotaBy,
    /// `None`: what the store's deployment chose ([`crate::CounterStore::on_error`]).
    pub(crate) on_store_error: Option<OnStoreError>,
}

/// What a quota counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaBy {
    /// The authenticated consumer.
    Consumer,
    /// The client address as the runtime reports it.
    Ip,
    /// The route: one budget shared by every caller.
    Route,
    /// The value of a request header.
    Header(HeaderName),
}

impl QuotaBy {
    /// Short label used in store keys.
    pub fn label(&self) -> &str {
        match self {
            QuotaBy::Consumer => "consumer",
            QuotaBy::Ip => "ip",
            QuotaBy::Route => "route",
            QuotaBy::Header(h) => h.as_str(),
        }
    }
}

/// What to do when the counter store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Refuse with 503 (the default: fail closed).
    Deny,
    /// Skip this quota for the request.
    Allow,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub(crate) id: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) template: Template,
    pub(crate) origin: usize,
    pub(crate) auth: RouteAuth,
    pub(crate) request: RequestRules,
    pub(crate) quotas: Vec<usize>,
    /// The route's `cors`: the top level's, none, or its own.
    pub(crate) cors: crate::cors::CorsSetting,
    /// The route's own `forward_headers` allow list, replacing the top level's.
    pub(crate) forward_headers: Option<crate::forward::headers::AllowList>,
    /// The route's IP rules, checked after the top level's, before authentication.
    pub(crate) ip: Option<crate::ip_rules::IpRules>,
    /// The route's own lockout, replacing the top level's.
    pub(crate) lockout: Option<crate::lockout::Lockout>,
}

/// Who may call a route.
#[derive(Debug)]
pub(crate) enum RouteAuth {
    /// Explicitly public (`"auth": "none"`).
    Public,
    /// Authenticated by one of `providers`, holding every scope and claim.
    Required {
        providers: Vec<usize>,
        scopes: Vec<String>,
        claims: Vec<(String, serde_json::Value)>,
    },
}

/// What a request's content must look like.
#[derive(Debug, Default)]
pub(crate) struct RequestRules {
    pub(crate) max_body_bytes: Option<u64>,
    /// Accepted media types, lower case, without parameters.
    pub(crate) content_types: Vec<String>,
    pub(crate) body_schema: Option<RouteSchema>,
    pub(crate) query_schema: Option<RouteSchema>,
    /// The query parameters `query_schema` declares lists: the only ones that may repeat.
    pub(crate) query_lists: Vec<String>,
}

impl RequestRules {
    /// Compile this route's schemas if they were deferred; the first problem if one is broken.
    pub(crate) fn compile_schemas(&self) -> Result<(), ConfigError> {
        for schema in [&self.body_schema, &self.query_schema]
            .into_iter()
            .flatten()
        {
            schema.get().map_err(Clone::clone)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
