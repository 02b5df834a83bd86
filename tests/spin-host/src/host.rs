//! Per-instance state, and the Spin interfaces (`wit/host.wit`) implemented on it: key-value
//! (`fermyon:spin/key-value@2.0.0` and `wasi:keyvalue@0.2.0-draft2`) and variables
//! (`fermyon:spin/variables@2.0.0` and `wasi:config/store`). WASI 0.2 and `wasi:http` come from
//! wasmtime-wasi and wasmtime-wasi-http, on the same resource table.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::{Backend, DEFAULT_STORE};
use crate::outbound::{AllowedHosts, Outbound};
use crate::variables::{lookup, LookupError};

wasmtime::component::bindgen!({
    path: "wit",
    world: "spin-imports",
    imports: { default: trappable },
    with: {
        "fermyon:spin/key-value.store": SpinStore,
        "wasi:keyvalue/store.bucket": Bucket,
        "wasi:keyvalue/atomics.cas": Cas,
    },
});

use fermyon::spin::{key_value, variables as spin_variables};
use wasi::config::store as config;
use wasi::keyvalue::{atomics, batch, store as wasi_kv};

/// What every instance of one component shares: its configuration and the store.
pub struct ComponentConfig {
    /// The component id in the manifest.
    pub id: Arc<str>,
    /// The default key-value store.
    pub kv: Arc<dyn Backend>,
    /// `key_value_stores`: labels it may open.
    pub stores: Vec<String>,
    /// Its variables, resolved.
    pub variables: BTreeMap<String, String>,
    /// `allowed_outbound_hosts`, parsed.
    pub allowed: Arc<AllowedHosts>,
    /// `environment`.
    pub environment: Vec<(String, String)>,
}

/// The data of one `Store`: one request's instance.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Outbound,
    config: Arc<ComponentConfig>,
}

impl HostState {
    /// Fresh state for one instance of `config`'s component. Component stdout and stderr go to
    /// this process's; there is no stdin, no arguments, no preopened directories and no sockets.
    pub fn new(config: Arc<ComponentConfig>) -> HostState {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &config.environment {
            wasi.env(k, v);
        }
        HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: Outbound {
                component: config.id.clone(),
                allowed: config.allowed.clone(),
                waited_us: Arc::new(AtomicU64::new(0)),
            },
            config,
        }
    }

    /// The counter of microseconds spent waiting for outbound responses.
    pub fn outbound_waited(&self) -> Arc<AtomicU64> {
        self.hooks.waited_us.clone()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A linker with WASI 0.2, `wasi:http` and the Spin interfaces of `wit/host.wit`.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    SpinImports::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    answer_past_deadlines_as_ready(&mut linker)?;
    Ok(linker)
}

/// The `wasi:io/poll` version wasmtime-wasi 48 registers (guests importing any 0.2.x reach it).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// `pollable.ready` as Spin 3.x answers it: a timer whose deadline has passed is ready.
///
/// Since bytecodealliance/wasmtime#13085 (not in the wasmtime 42 that Spin 3.6 uses), a
/// past-deadline pollable yields to tokio once before it reports ready, so that a guest polling
/// in a busy loop cannot starve the runtime. Through the non-blocking `pollable.ready` that
/// yield reads as "not ready" on every fresh pollable. A guest that subscribes anew on each poll
/// of its own executor, and checks `ready()` before waiting (as Portcullis's adapter does), then
/// never sees its deadline pass and spins, starving every other request on that worker thread.
/// Asking a second time, after the first ask has recorded its yield, gives Spin 3.x's answer;
/// `wasi:io/poll.poll` keeps wasmtime's yield.
fn answer_past_deadlines_as_ready(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi_io::bindings::wasi::io::poll::HostPollable;
    use wasmtime_wasi_io::poll::DynPollable;
    linker.allow_shadowing(true);
    linker.instance(WASI_IO_POLL)?.func_wrap_async(
        "[method]pollable.ready",
        |mut store: wasmtime::StoreContextMut<'_, HostState>,
         (pollable,): (Resource<DynPollable>,)| {
            Box::new(async move {
                let table = &mut store.data_mut().table;
                let again = Resource::<DynPollable>::new_borrow(pollable.rep());
                if HostPollable::ready(table, pollable).await? {
                    return Ok((true,));
                }
                Ok((HostPollable::ready(table, again).await?,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// An open `fermyon:spin/key-value` store.
pub struct SpinStore(Arc<dyn Backend>);

/// An open `wasi:keyvalue` bucket.
pub struct Bucket(Arc<dyn Backend>);

/// A pending compare-and-swap: `expected` is the value (or absence) last read for `key`.
pub struct Cas {
    kv: Arc<dyn Backend>,
    key: String,
    expected: Option<Vec<u8>>,
}

type Trappable<T> = wasmtime::Result<T>;

impl HostState {
    /// Spin's rule: a label the component did not list is access-denied; a listed label that
    /// does not exist is no-such-store (only `default` exists without a runtime config).
    fn open_store(&self, label: &str) -> Result<Arc<dyn Backend>, key_value::Error> {
        if !self.config.stores.iter().any(|s| s == label) {
            return Err(key_value::Error::AccessDenied);
        }
        if label != DEFAULT_STORE {
            return Err(key_value::Error::NoSuchStore);
        }
        Ok(self.config.kv.clone())
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> Trappable<Arc<dyn Backend>> {
        Ok(self.table.get(bucket)?.0.clone())
    }

    fn new_cas(
        &mut self,
        kv: Arc<dyn Backend>,
        key: String,
    ) -> Trappable<Result<Resource<Cas>, wasi_kv::Error>> {
        let expected = match kv.get(&key) {
            Ok(v) => v,
            Err(e) => return Ok(Err(wasi_kv::Error::Other(e))),
        };
        Ok(Ok(self.table.push(Cas { kv, key, expected })?))
    }
}

impl key_value::Host for HostState {}

impl key_value::HostStore for HostState {
    fn open(&mut self, label: String) -> Trappable<Result<Resource<SpinStore>, key_value::Error>> {
        match self.open_store(&label) {
            Ok(kv) => Ok(Ok(self.table.push(SpinStore(kv))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn get(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, key_value::Error>> {
        Ok(self
            .table
            .get(&store)?
            .0
            .get(&key)
            .map_err(key_value::Error::Other))
    }

    fn set(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), key_value::Error>> {
        Ok(self
            .table
            .get(&store)?
            .0
            .set(&key, &value)
            .map_err(key_value::Error::Other))
    }

    fn delete(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Trappable<Result<(), key_value::Error>> {
        Ok(self
            .table
            .get(&store)?
            .0
            .delete(&key)
            .map_err(key_value::Error::Other))
    }

    fn exists(
        &mut self,
        store: Resource<SpinStore>,
        key: String,
    ) -> Trappable<Result<bool, key_value::Error>> {
        Ok(self
            .table
            .get(&store)?
            .0
            .get(&key)
            .map(|v| v.is_some())
            .map_err(key_value::Error::Other))
    }

    fn get_keys(
        &mut self,
        store: Resource<SpinStore>,
    ) -> Trappable<Result<Vec<String>, key_value::Error>> {
        Ok(self
            .table
            .get(&store)?
            .0
            .keys()
            .map_err(key_value::Error::Other))
    }

    fn drop(&mut self, store: Resource<SpinStore>) -> Trappable<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl wasi_kv::Host for HostState {
    fn open(&mut self, identifier: String) -> Trappable<Result<Resource<Bucket>, wasi_kv::Error>> {
        match self.open_store(&identifier) {
            Ok(kv) => Ok(Ok(self.table.push(Bucket(kv))?)),
            Err(key_value::Error::AccessDenied) => Ok(Err(wasi_kv::Error::AccessDenied)),
            Err(_) => Ok(Err(wasi_kv::Error::NoSuchStore)),
        }
    }
}

impl wasi_kv::HostBucket for HostState {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Trappable<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        Ok(self
            .bucket(&bucket)?
            .get(&key)
            .map_err(wasi_kv::Error::Other))
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        Ok(self
            .bucket(&bucket)?
            .set(&key, &value)
            .map_err(wasi_kv::Error::Other))
    }

    fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        Ok(self
            .bucket(&bucket)?
            .delete(&key)
            .map_err(wasi_kv::Error::Other))
    }

    fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Trappable<Result<bool, wasi_kv::Error>> {
        Ok(self
            .bucket(&bucket)?
            .get(&key)
            .map(|v| v.is_some())
            .map_err(wasi_kv::Error::Other))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Trappable<Result<wasi_kv::KeyResponse, wasi_kv::Error>> {
        if cursor.is_some() {
            // As in Spin: every key comes in the first page, so there is never a cursor to pass.
            return Ok(Err(wasi_kv::Error::Other(
                "list-keys: cursors are not supported".into(),
            )));
        }
        Ok(self
            .bucket(&bucket)?
            .keys()
            .map(|keys| wasi_kv::KeyResponse { keys, cursor: None })
            .map_err(wasi_kv::Error::Other))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> Trappable<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Trappable<Result<i64, wasi_kv::Error>> {
        Ok(self
            .bucket(&bucket)?
            .increment(&key, delta)
            .map_err(wasi_kv::Error::Other))
    }

    fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Trappable<Result<(), atomics::CasError>> {
        let cas = self.table.delete(cas)?;
        match cas
            .kv
            .compare_and_swap(&cas.key, cas.expected.as_deref(), &value)
        {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match self.new_cas(cas.kv, cas.key)? {
                Ok(fresh) => Ok(Err(atomics::CasError::CasFailed(fresh))),
                Err(e) => Ok(Err(atomics::CasError::StoreError(e))),
            },
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_kv::Error::Other(e)))),
        }
    }
}

impl atomics::HostCas for HostState {
    fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Trappable<Result<Resource<Cas>, wasi_kv::Error>> {
        let kv = self.bucket(&bucket)?;
        self.new_cas(kv, key)
    }

    /// Reads the value afresh, and makes it the value a later `swap` expects (as Spin does).
    fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> Trappable<Result<Option<Vec<u8>>, wasi_kv::Error>> {
        let cas = self.table.get_mut(&cas)?;
        match cas.kv.get(&cas.key) {
            Ok(value) => {
                cas.expected.clone_from(&value);
                Ok(Ok(value))
            }
            Err(e) => Ok(Err(wasi_kv::Error::Other(e))),
        }
    }

    fn drop(&mut self, cas: Resource<Cas>) -> Trappable<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Trappable<Result<Vec<(String, Option<Vec<u8>>)>, wasi_kv::Error>> {
        let kv = self.bucket(&bucket)?;
        Ok(keys
            .into_iter()
            .map(|k| kv.get(&k).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map_err(wasi_kv::Error::Other))
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        let kv = self.bucket(&bucket)?;
        Ok(key_values
            .iter()
            .try_for_each(|(k, v)| kv.set(k, v))
            .map_err(wasi_kv::Error::Other))
    }

    fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Trappable<Result<(), wasi_kv::Error>> {
        let kv = self.bucket(&bucket)?;
        Ok(keys
            .iter()
            .try_for_each(|k| kv.delete(k))
            .map_err(wasi_kv::Error::Other))
    }
}

impl spin_variables::Host for HostState {
    fn get(&mut self, name: String) -> Trappable<Result<String, spin_variables::Error>> {
        Ok(lookup(&self.config.variables, &name).map_err(|e| match e {
            LookupError::InvalidName(m) => spin_variables::Error::InvalidName(m),
            LookupError::Undefined(m) => spin_variables::Error::Undefined(m),
        }))
    }
}

impl config::Host for HostState {
    /// As in Spin: an invalid or undefined name is `none`, not an error.
    fn get(&mut self, key: String) -> Trappable<Result<Option<String>, config::Error>> {
        Ok(Ok(lookup(&self.config.variables, &key).ok()))
    }

    fn get_all(&mut self) -> Trappable<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self
            .config
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
