//! Quota state in a Durable Object: one object per quota key (`id_from_name(key)`).
//!
//! The object applies the core's step ([`serial`]) to its state: input gates deliver one request
//! at a time while storage is in flight, so read–step–write is atomic per key for every Worker
//! instance anywhere, and an alarm at the state's expiry deletes it. The Worker side
//! ([`DurableStore`]) posts `{rate, now}` for the [`Verdict`]; a call that fails or outlasts
//! [`STORE_TIMEOUT`] is a [`StoreError`], and the core fails closed with 503 unless the quota
//! says `on_store_error: allow`.

use std::time::Duration;

use portcullis_core::fault::{self, Fault};
use portcullis_core::quota::serial::{self, StepRequest};
use portcullis_core::quota::{CounterStore, Rate, StoreError, Verdict};
use portcullis_core::time::within;
use portcullis_core::UnixTime;
use worker::{
    durable_object, Delay, DurableObject, Env, Method, ObjectNamespace, Request, RequestInit,
    Response, ScheduledTime,
};

/// The Durable Object binding.
pub const DO_BINDING: &str = "PORTCULLIS_QUOTAS";
/// How long the Worker waits for the object before giving up with [`StoreError::Timeout`].
pub const STORE_TIMEOUT: Duration = Duration::from_secs(1);
/// The storage key of the object's state.
const STATE_KEY: &str = "gcra";

/// The [`CounterStore`] backed by the `PORTCULLIS_QUOTAS` namespace.
pub struct DurableStore {
    namespace: Result<ObjectNamespace, String>,
    /// Where to post the step: `/fault` when a fault-injection build's request asked the object
    /// to throw ([`Fault::QuotaStore`]).
    url: &'static str,
}

impl DurableStore {
    /// The store for this request's `env`. A missing binding surfaces as a [`StoreError`] only
    /// when a quota is actually checked.
    pub fn new(env: &worker::Env, fault: Option<Fault>) -> Self {
        DurableStore {
            namespace: env.durable_object(DO_BINDING).map_err(|e| e.to_string()),
            url: match fault {
                Some(Fault::QuotaStore) => "https://quota.portcullis/fault",
                _ => "https://quota.portcullis/step",
            },
        }
    }

    async fn call(&self, key: &str, ask: StepRequest) -> Result<Verdict, StoreError> {
        let failed = |_: worker::Error| StoreError::Unavailable;
        let namespace = self
            .namespace
            .as_ref()
            .map_err(|_| StoreError::Unavailable)?;
        let stub = namespace
            .id_from_name(key)
            .and_then(|id| id.get_stub())
            .map_err(failed)?;
        let body = serde_json::to_string(&ask).map_err(|_| StoreError::Corrupt)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let request = Request::new_with_init(self.url, &init).map_err(failed)?;
        let mut response = stub.fetch_with_request(request).await.map_err(failed)?;
        if response.status_code() != 200 {
            return Err(StoreError::Unavailable);
        }
        response
            .json::<Verdict>()
            .await
            .map_err(|_| StoreError::Corrupt)
    }
}

impl CounterStore for DurableStore {
    async fn apply(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let call = self.call(key, StepRequest::new(rate, now));
        within(Delay::from(STORE_TIMEOUT), call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    async fn peek(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let call = self.call(key, StepRequest::peek(rate, now));
        within(Delay::from(STORE_TIMEOUT), call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }
}

/// One quota key's GCRA state.
#[durable_object]
pub struct QuotaCounter {
    state: worker::State,
}

impl DurableObject for QuotaCounter {
    fn new(state: worker::State, _env: Env) -> Self {
        QuotaCounter { state }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        if fault::COMPILED_IN && req.path() == "/fault" {
            return Err(worker::Error::RustError(fault::CAUSE.to_owned()));
        }
        let Ok(ask) = req.json::<StepRequest>().await else {
            return Response::error("expected {rate, now}", 400);
        };
        let storage = self.state.storage();
        let (verdict, changed) = ask.apply(storage.get(STATE_KEY).await?);
        if let Some(next) = changed {
            storage.put(STATE_KEY, next).await?;
            storage.set_alarm(alarm_at(next.expires_at())).await?;
        }
        Response::from_json(&verdict)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let storage = self.state.storage();
        match serial::on_expiry(storage.get(STATE_KEY).await?, crate::now()) {
            // Still meaningful (a later request pushed it out): look again when it expires.
            Some(at) => storage.set_alarm(alarm_at(at)).await?,
            None => storage.delete_all().await?,
        }
        Response::empty()
    }
}

/// The alarm time for `at`, rounded up to the next millisecond.
fn alarm_at(at: UnixTime) -> ScheduledTime {
    let millis = at.as_micros().div_ceil(1000) as f64;
    ScheduledTime::new(js_sys::Date::new(&js_sys::Number::from(millis).into()))
}
