//! Quota state in a Durable Object: one object per quota key (`id_from_name(key)`).
//!
//! The object applies the core's step for such a store ([`serial`]) to its stored state: Durable
//! Object input gates deliver one request at a time while storage operations are in flight, so
//! read–step–write is atomic per key, and every Worker instance anywhere counts against the same
//! state. An alarm at the state's expiry deletes it, so storage holds only keys active within
//! their window.
//!
//! The Worker side ([`DurableStore`]) posts `{rate, now}` and gets the [`Verdict`] back. A call
//! that fails or takes longer than [`STORE_TIMEOUT`] is a [`StoreError`]; the core then fails
//! closed with 503 unless the quota says `on_store_error: allow`.

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
    /// A fault-injection build's request asked the object to throw ([`Fault::QuotaStore`]).
    throw: bool,
}

impl DurableStore {
    /// The store for this request's `env`. A missing binding surfaces as a [`StoreError`] only
    /// when a quota is actually checked.
    pub fn new(env: &worker::Env) -> Self {
        DurableStore {
            namespace: env.durable_object(DO_BINDING).map_err(|e| e.to_string()),
            throw: false,
        }
    }

    /// Ask the object to throw on every call, when `fault` is [`Fault::QuotaStore`].
    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.throw = fault == Some(Fault::QuotaStore);
        self
    }

    async fn call(&self, key: &str, rate: Rate, now: UnixTime) -> Result<Verdict, StoreError> {
        let failed = |_: worker::Error| StoreError::Unavailable;
        let namespace = self
            .namespace
            .as_ref()
            .map_err(|_| StoreError::Unavailable)?;
        let stub = namespace
            .id_from_name(key)
            .and_then(|id| id.get_stub())
            .map_err(failed)?;
        let body =
            serde_json::to_string(&StepRequest::new(rate, now)).map_err(|_| StoreError::Corrupt)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        if self.throw {
            let headers = worker::Headers::new();
            headers
                .set(fault::HEADER, Fault::QuotaStore.value())
                .map_err(failed)?;
            init.with_headers(headers);
        }
        let request =
            Request::new_with_init("https://quota.portcullis/step", &init).map_err(failed)?;
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
        within(Delay::from(STORE_TIMEOUT), self.call(key, rate, now))
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
        let asked = req.headers().get(fault::HEADER)?;
        if fault::COMPILED_IN && asked.as_deref() == Some(Fault::QuotaStore.value()) {
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
