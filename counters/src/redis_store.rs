//! Quota counts in Redis or Valkey, shared by every gateway that names the same store.
//!
//! One request is one script call ([`SPEND`]) for all of its route's quotas: the script reads
//! each key, applies the GCRA step on the server's clock and writes every key or none, setting
//! each key to expire when its state stops mattering. The script answers with the states it
//! read and the server's time, and the verdicts are then worked out here by the core's own
//! [`step_all`], so Redis and every other store count by one definition — the script only
//! decides whether to write, by the same comparison.
//!
//! Keys are `PREFIX{BUCKET}:QUOTA`: the bucket (a digest of the subject — consumer, address,
//! header value) is a Cluster hash tag, so a request's quotas that count the same subject share
//! a slot. A route whose quotas count different subjects may span slots on a Cluster; those are
//! spent one slot at a time, in order, and the slots already spent are given back ([`REFUND`])
//! when a later one refuses: the one case that is not a single atomic step.
//!
//! The store is reached through the `redis` crate's connection manager (one node, or the master
//! Sentinel names) or its Cluster client, which reconnect by themselves with backoff; until a
//! connection exists, or when a call takes longer than the timeout, the request gets the
//! deployment's or the quota's `on_store_error`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use portcullis_core::quota::{step, step_all};
use portcullis_core::{OnStoreError, Spend, State, StoreError, UnixTime, Verdict};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ErrorKind, RedisError, Script};

use crate::location::Location;

/// The spend script: every key or none (see the module docs).
pub const SPEND: &str = include_str!("spend.lua");
/// The give-back script for the cross-slot case.
pub const REFUND: &str = include_str!("refund.lua");
/// The read-only script: one key's state and the server's time.
pub const PEEK: &str = include_str!("peek.lua");

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Between attempts to find a store that is not there yet (Cluster, Sentinel), at most.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long start-up waits for the store to answer before serving without it.
pub const WARM_UP: Duration = Duration::from_secs(3);

/// What the deployment chose, with `--counter-store-*`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Prepended to every key (`--counter-store-prefix`).
    pub prefix: String,
    /// How long one call may take (`--counter-store-timeout-ms`).
    pub timeout: Duration,
    /// For quotas that leave `on_store_error` out (`--counter-store-on-error`).
    pub on_error: OnStoreError,
}

/// A Redis (or Valkey) counter store: one node, the master of a Sentinel set, or a Cluster.
pub struct RedisStore {
    link: Arc<Link>,
    settings: Settings,
    spend: Script,
    refund: Script,
    peek: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// A live connection, cheap to clone (both kinds multiplex one socket per node).
#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How to (re)make the connection.
enum Target {
    /// One node: its managers reconnect by themselves.
    Node(redis::Client),
    /// Ask Sentinel for the master, again whenever the master stops answering as one.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// Discover the Cluster from its seed nodes.
    Cluster(ClusterClient),
}

/// The shared connection, replaced whole when the store is found again, and whether a search
/// is under way. Serving threads prefer connections of their own ([`Link::here`]); the shared
/// one, driven on the runtime that opened the store, serves until a thread's own is up.
struct Link {
    connection: ArcSwapOption<Connection>,
    /// Sentinel's answer: the master that the shared connection and the threads' own talk to.
    master: ArcSwapOption<redis::Client>,
    /// Bumped whenever the shared connection is given up, so threads drop theirs too.
    generation: AtomicU64,
    target: Target,
    searching: AtomicBool,
    runtime: tokio::runtime::Handle,
}

thread_local! {
    /// This thread's own connection to each open store, so that a serving thread (one event
    /// loop per core, see `portcullis_host::run_per_core`) talks to Redis on its own loop: a
    /// call through a connection driven by another thread costs two cross-thread wake-ups.
    static HERE: RefCell<Vec<Here>> = const { RefCell::new(Vec::new()) };
}

/// One thread's connection to one store (`link`: the store's address), for one generation;
/// `None` while it is being made.
struct Here {
    link: usize,
    generation: u64,
    connection: Option<Connection>,
}

impl RedisStore {
    /// A store at `location` (any Redis form), connecting in the background: the gateway starts
    /// and answers (with `on_store_error`) even while the store is down. Must be called on a
    /// tokio runtime that outlives the store: its connection tasks run there.
    pub fn open(location: &Location, settings: Settings) -> Result<RedisStore, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the Redis counter store needs a tokio runtime".to_owned())?;
        let describe = location.describe();
        let fail = |e: RedisError| format!("counter store {describe}: {e}");
        let (connection, target) = match location {
            Location::Memory => return Err("memory is not a Redis store".into()),
            Location::Node(url) => {
                let client = redis::Client::open(url.as_str()).map_err(fail)?;
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
                        .map_err(fail)?;
                (Some(Connection::Node(manager)), Target::Node(client))
            }
            Location::Sentinel {
                sentinels,
                master,
                auth,
                db,
            } => {
                let addrs = sentinels.iter().map(|s| tcp_addr(s)).collect::<Vec<_>>();
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                        .map_err(fail)?
                        .set_client_to_redis_db(*db);
                if let Some((user, password)) = auth {
                    if !user.is_empty() {
                        builder = builder.set_client_to_redis_username(user);
                    }
                    builder = builder.set_client_to_redis_password(password);
                }
                let client = builder.build().map_err(fail)?;
                (None, Target::Sentinel(tokio::sync::Mutex::new(client)))
            }
            Location::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.clone())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .retries(1)
                    .build()
                    .map_err(fail)?;
                (None, Target::Cluster(client))
            }
        };
        let link = Arc::new(Link {
            connection: ArcSwapOption::from(connection.map(Arc::new)),
            master: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            target,
            searching: AtomicBool::new(false),
            runtime,
        });
        link.search();
        Ok(RedisStore {
            link,
            settings,
            spend: Script::new(SPEND),
            refund: Script::new(REFUND),
            peek: Script::new(PEEK),
        })
    }

    /// What quotas that leave `on_store_error` out do when this store fails.
    pub fn on_error(&self) -> OnStoreError {
        self.settings.on_error
    }

    /// Wait up to [`WARM_UP`] for the store to answer a `PING`, then load the scripts (on
    /// every primary of a Cluster), so the first requests do not each pay for a connection and
    /// a `NOSCRIPT` round trip. The last reason it did not answer, if it did not.
    pub async fn warm_up(&self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WARM_UP;
        loop {
            let answered = self.ping().await;
            if answered.is_err() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            answered?;
            if let Some(mut connection) = self.link.current() {
                for script in [SPEND, REFUND, PEEK] {
                    let load = redis::cmd("SCRIPT").arg("LOAD").arg(script).clone();
                    let loaded: Result<redis::Value, _> = match &mut connection {
                        Connection::Node(c) => load.query_async(c).await,
                        Connection::Cluster(c) => load.query_async(c).await,
                    };
                    loaded.map_err(|e| format!("loading the quota scripts: {e}"))?;
                }
            }
            return Ok(());
        }
    }

    /// Whether the store answers now (`PING`, within the timeout): for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self
            .link
            .current()
            .ok_or("not connected yet (retrying)".to_owned())?;
        let ping = redis::cmd("PING");
        let answered = match &mut connection {
            Connection::Node(c) => self.bounded(ping.query_async::<String>(c)).await,
            Connection::Cluster(c) => self.bounded(ping.query_async::<String>(c)).await,
        };
        answered.map(drop).map_err(|e| e.to_string())
    }

    /// Spend one request on each of `spends` (see [`portcullis_core::CounterStore::apply_all`]).
    pub async fn spend_all(&self, spends: &[Spend]) -> Vec<Result<Verdict, StoreError>> {
        let failed = |e: StoreError| vec![Err(e); spends.len()];
        let Some(mut connection) = self.link.here().or_else(|| self.link.current()) else {
            self.link.search();
            return failed(StoreError::Unavailable);
        };
        let single = match &connection {
            Connection::Node(_) => true,
            Connection::Cluster(_) => spends
                .windows(2)
                .all(|w| w[0].key.bucket() == w[1].key.bucket()),
        };
        if single {
            return match self.spend(&mut connection, spends).await {
                Ok((verdicts, _)) => verdicts.into_iter().map(Ok).collect(),
                Err(e) => failed(e),
            };
        }
        // A Cluster route whose quotas count different subjects: one slot at a time.
        let mut verdicts = Vec::with_capacity(spends.len());
        let mut spent = 0;
        for group in spends.chunk_by(|a, b| a.key.bucket() == b.key.bucket()) {
            match self.spend(&mut connection, group).await {
                Ok((more, true)) => {
                    verdicts.extend(more);
                    spent += group.len();
                }
                Ok((more, false)) => {
                    verdicts.extend(more);
                    self.give_back(&mut connection, &spends[..spent]).await;
                    return verdicts.into_iter().map(Ok).collect();
                }
                Err(e) => {
                    self.give_back(&mut connection, &spends[..spent]).await;
                    return failed(e);
                }
            }
        }
        verdicts.into_iter().map(Ok).collect()
    }

    /// One script call for `spends`, which share a slot: the verdicts (up to the first
    /// refusal) and whether the keys were written.
    async fn spend(
        &self,
        connection: &mut Connection,
        spends: &[Spend],
    ) -> Result<(Vec<Verdict>, bool), StoreError> {
        let mut call = self.spend.prepare_invoke();
        for spend in spends {
            call.key(self.key(spend))
                .arg(spend.rate.interval_us())
                .arg(spend.rate.burst_us());
        }
        let reply = self.invoke(connection, &call).await?;
        read_reply(&reply, spends)
    }

    /// The verdict spending `spend` would get now, by the server's clock, with nothing written
    /// (see [`portcullis_core::CounterStore::peek`]).
    pub async fn peek(&self, spend: &Spend) -> Result<Verdict, StoreError> {
        let Some(mut connection) = self.link.here().or_else(|| self.link.current()) else {
            self.link.search();
            return Err(StoreError::Unavailable);
        };
        let mut call = self.peek.prepare_invoke();
        call.key(self.key(spend));
        let reply = self.invoke(&mut connection, &call).await?;
        read_peek(&reply, spend)
    }

    /// Run a prepared script call, once more if the connection turned out dead.
    async fn invoke(
        &self,
        connection: &mut Connection,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        // Both tries share the one deadline the deployment gave the call.
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut retried = false;
        let reply: Vec<i64> = loop {
            let reply = match connection {
                Connection::Node(c) => bounded(deadline, call.invoke_async(c)).await,
                Connection::Cluster(c) => bounded(deadline, call.invoke_async(c)).await,
            };
            match reply {
                // The connection was found dead (the server restarted, a socket was reset): the
                // client is already reconnecting, so try once more within the deadline rather
                // than fail this request. Should the first try have run before its reply was
                // lost, the key is spent twice: the caller is admitted less, never more.
                Err(Failure::Redis(e))
                    if !retried && (e.is_connection_dropped() || e.is_io_error()) =>
                {
                    retried = true;
                }
                other => break other.map_err(|e| self.failed(e))?,
            }
        };
        Ok(reply)
    }

    /// Give back what `spends` took. Best effort: if this fails too, those units stay spent
    /// until their keys expire (never more admitted than the limits allow).
    async fn give_back(&self, connection: &mut Connection, spends: &[Spend]) {
        for group in spends.chunk_by(|a, b| a.key.bucket() == b.key.bucket()) {
            let mut call = self.refund.prepare_invoke();
            for spend in group {
                call.key(self.key(spend)).arg(spend.rate.interval_us());
            }
            let _: Result<i64, _> = match connection {
                Connection::Node(c) => self.bounded(call.invoke_async(c)).await,
                Connection::Cluster(c) => self.bounded(call.invoke_async(c)).await,
            };
        }
    }

    /// `PREFIX{BUCKET}:QUOTA`.
    fn key(&self, spend: &Spend) -> String {
        redis_key(&self.settings.prefix, spend.key.as_str())
    }

    /// `call`, or a timeout error past the deployment's timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        bounded(tokio::time::Instant::now() + self.settings.timeout, call).await
    }

    /// The store error a failed call means; a lost master also starts a new search for it.
    fn failed(&self, failure: Failure) -> StoreError {
        match failure {
            Failure::Timeout => StoreError::Timeout,
            Failure::Redis(e) if e.code() == Some("PORTCULLIS_CORRUPT") => StoreError::Corrupt,
            Failure::Redis(e) if matches!(e.kind(), ErrorKind::UnexpectedReturnType) => {
                StoreError::Corrupt
            }
            Failure::Redis(e) => {
                if matches!(self.link.target, Target::Sentinel(_))
                    && (e.is_io_error()
                        || e.is_connection_dropped()
                        || e.is_connection_refusal()
                        || e.code() == Some("READONLY"))
                {
                    self.link.connection.store(None);
                    self.link.generation.fetch_add(1, Ordering::AcqRel);
                    self.link.search();
                }
                StoreError::Unavailable
            }
        }
    }
}

/// `call`, or a timeout error at `deadline`.
async fn bounded<T>(
    deadline: tokio::time::Instant,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Failure::Redis(e)),
        Err(_) => Err(Failure::Timeout),
    }
}

/// Why a call failed, before it is mapped to a [`StoreError`].
enum Failure {
    Timeout,
    Redis(RedisError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("no answer within the timeout"),
            Failure::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl Link {
    fn current(&self) -> Option<Connection> {
        self.connection.load_full().map(|c| (*c).clone())
    }

    /// This serving thread's own connection, once it is up. The first call on a thread (on a
    /// single-threaded runtime: a serving thread) starts making it there, in the background;
    /// until then, and on any other runtime, `None`, and the caller uses the shared one.
    fn here(self: &Arc<Self>) -> Option<Connection> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let on_serving_thread =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread);
        if !on_serving_thread {
            return None;
        }
        let (id, generation) = (
            Arc::as_ptr(self) as usize,
            self.generation.load(Ordering::Acquire),
        );
        let start = HERE.with_borrow_mut(|all| {
            all.retain(|h| h.link != id || h.generation == generation);
            match all.iter().find(|h| h.link == id) {
                Some(here) => Err(here.connection.clone()),
                None => {
                    all.push(Here {
                        link: id,
                        generation,
                        connection: None,
                    });
                    Ok(())
                }
            }
        });
        if let Err(found) = start {
            return found;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let made = link.connect_here().await;
            HERE.with_borrow_mut(|all| {
                let at = all
                    .iter()
                    .position(|h| h.link == id && h.generation == generation);
                match (at, made) {
                    (Some(at), Some(connection)) => all[at].connection = Some(connection),
                    // Not made: forget the attempt, so a later request tries again.
                    (Some(at), None) => drop(all.remove(at)),
                    (None, _) => {}
                }
            });
        });
        None
    }

    /// A connection made on the calling thread's runtime, to the node, the master Sentinel
    /// named last, or the Cluster.
    async fn connect_here(&self) -> Option<Connection> {
        let attempt = async {
            let client = match &self.target {
                Target::Node(client) => client.clone(),
                Target::Sentinel(_) => (*self.master.load_full()?).clone(),
                Target::Cluster(client) => {
                    return client
                        .get_async_connection()
                        .await
                        .ok()
                        .map(Connection::Cluster);
                }
            };
            let manager = ConnectionManager::new_with_config(client, manager_config());
            manager.await.ok().map(Connection::Node)
        };
        tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt)
            .await
            .ok()
            .flatten()
    }

    /// Find the store in the background (one search at a time), retrying with backoff until a
    /// connection exists. A one-node store needs no search: its manager reconnects itself.
    fn search(self: &Arc<Self>) {
        if matches!(self.target, Target::Node(_)) || self.searching.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = Arc::clone(self);
        self.runtime.spawn(async move {
            let mut wait = Duration::from_millis(50);
            while link.connection.load().is_none() {
                match link.connect().await {
                    Some(connection) => link.connection.store(Some(Arc::new(connection))),
                    None => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
            link.searching.store(false, Ordering::Release);
        });
    }

    async fn connect(&self) -> Option<Connection> {
        let attempt = async {
            match &self.target {
                Target::Node(_) => None,
                Target::Sentinel(sentinel) => {
                    let client = sentinel.lock().await.async_get_client().await.ok()?;
                    let manager =
                        ConnectionManager::new_with_config(client.clone(), manager_config())
                            .await
                            .ok()?;
                    self.master.store(Some(Arc::new(client)));
                    Some(Connection::Node(manager))
                }
                Target::Cluster(client) => {
                    let connection = client.get_async_connection().await.ok()?;
                    Some(Connection::Cluster(connection))
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt)
            .await
            .ok()
            .flatten()
    }
}

/// Reconnect quickly and give up on an attempt soon: a request never waits on a reconnection
/// longer than the call timeout anyway, and the next request starts another attempt.
fn manager_config() -> ConnectionManagerConfig {
    // No response timeout of the client's own: every call is bounded by the deployment's
    // (`--counter-store-timeout-ms`), and a second timer per call only costs CPU.
    ConnectionManagerConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200))
}

/// `HOST:PORT` (or `[V6]:PORT`) as a Sentinel address; location parsing checked the form.
fn tcp_addr(host_port: &str) -> redis::ConnectionAddr {
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "26379"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    redis::ConnectionAddr::Tcp(host.to_owned(), port.parse().unwrap_or(26379))
}

/// The Redis key of a core quota key (`{quota}|…|{bucket}`): `PREFIX{BUCKET}:QUOTA`.
pub fn redis_key(prefix: &str, key: &str) -> String {
    let (quota, bucket) = key.rsplit_once('|').unwrap_or(("", key));
    format!("{prefix}{{{bucket}}}:{quota}")
}

/// The verdicts in a spend script's reply `[written, now_us, tat_1 … tat_n]`, worked out by the
/// core's [`step_all`]; a reply of another shape, or one whose write disagrees with the core's
/// verdicts, is [`StoreError::Corrupt`] (fail as the quota says, never guess).
pub fn read_reply(reply: &[i64], spends: &[Spend]) -> Result<(Vec<Verdict>, bool), StoreError> {
    let [written, now, tats @ ..] = reply else {
        return Err(StoreError::Corrupt);
    };
    if tats.len() != spends.len() || *now <= 0 || tats.iter().any(|t| *t < 0) {
        return Err(StoreError::Corrupt);
    }
    let states = tats
        .iter()
        .map(|&tat| (tat > 0).then_some(State { tat: tat as u64 }));
    let (verdicts, new) = step_all(states, spends, UnixTime::from_micros(*now as u64));
    match (*written, new.is_some()) {
        (1, true) => Ok((verdicts, true)),
        (0, false) => Ok((verdicts, false)),
        _ => Err(StoreError::Corrupt),
    }
}

/// The verdict in a peek script's reply `[now_us, tat]`, worked out by the core's [`step`]; a
/// reply of another shape is [`StoreError::Corrupt`].
pub fn read_peek(reply: &[i64], spend: &Spend) -> Result<Verdict, StoreError> {
    let [now, tat] = reply else {
        return Err(StoreError::Corrupt);
    };
    if *now <= 0 || *tat < 0 {
        return Err(StoreError::Corrupt);
    }
    let state = (*tat > 0).then_some(State { tat: *tat as u64 });
    Ok(step(state, UnixTime::from_micros(*now as u64), spend.rate).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::config::QuotaBy;
    use portcullis_core::quota::store_key;
    use portcullis_core::Rate;

    fn spend(quota: &str, limit: u32, subject: &str) -> Spend {
        let rate = Rate {
            limit: limit.try_into().unwrap(),
            window_us: 60_000_000,
        };
        Spend {
            key: store_key(quota, rate, &QuotaBy::Consumer, subject),
            rate,
        }
    }

    #[test]
    fn keys_put_the_bucket_in_a_hash_tag() {
        let s = spend("per-user", 10, "alice");
        let key = redis_key("portcullis:", s.key.as_str());
        assert_eq!(
            key,
            format!(
                "portcullis:{{{}}}:per-user|10/60000000us|consumer",
                s.key.bucket()
            )
        );
    }

    #[test]
    fn replies_are_read_by_the_cores_step() {
        let spends = [spend("a", 2, "x"), spend("b", 1, "x")];
        let now = 1_750_000_000_000_000i64;
        let (verdicts, written) = read_reply(&[1, now, 0, 0], &spends).unwrap();
        assert!(written && verdicts.iter().all(|v| v.allowed));
        assert_eq!(verdicts[0].remaining, 1);
        // b already at its limit: not written, refused by b.
        let full = now + 60_000_000;
        let (verdicts, written) = read_reply(&[0, now, 0, full], &spends).unwrap();
        assert!(!written);
        assert_eq!(verdicts.len(), 2);
        assert!(verdicts[0].allowed && !verdicts[1].allowed);
    }

    #[test]
    fn replies_that_disagree_or_are_malformed_are_corrupt() {
        let spends = [spend("a", 1, "x")];
        let now = 1_750_000_000_000_000i64;
        for reply in [
            vec![],
            vec![1],
            vec![1, now],
            vec![1, now, 0, 0],
            vec![1, -5, 0],
            vec![1, now, -1],
            // The script wrote although the core refuses, or did not although it admits.
            vec![1, now, now + 60_000_000],
            vec![0, now, 0],
            vec![7, now, 0],
        ] {
            assert_eq!(
                read_reply(&reply, &spends).map(|_| ()),
                Err(StoreError::Corrupt),
                "{reply:?}"
            );
        }
    }
}
