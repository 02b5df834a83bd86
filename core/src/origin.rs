//! Sending to the origin: the one piece of I/O a forward needs ([`Origin`]), how a runtime says
//! that no response came ([`OriginError`]) or that its timer ran out first ([`within`]), and
//! what that means to the core: for a forwarded
//! request, an [`OriginResult`] (504 for a timeout, 502 otherwise); for a key-set fetch, a
//! [`FetchError`]. Runtimes send both kinds of request with the same client, so they fail the
//! same way.

use std::future::Future;

use http::HeaderMap;

use crate::exchange::{OriginResult, Outbound, Relay, Step};
use crate::fetch::FetchError;
use crate::time::Clock;

/// How a runtime sends the core's outbound request. Not required to be `Send`: wasm runtimes
/// cannot offer that.
#[allow(async_fn_in_trait)]
pub trait Origin<B> {
    /// The runtime's handle on the origin's response body, still to stream.
    type Body;

    /// Send `outbound`, waiting at most its timeout for the response headers, and say what the
    /// origin did.
    async fn send(&self, outbound: Outbound<B>) -> OriginResult<Self::Body>;
}

impl<B> Step<B> {
    /// Carry the step out as far as the core can: an answer stays an answer; a forward is sent
    /// through `origin` and finished with what it did ([`crate::Pending::finish`]). What is left
    /// for the runtime is to write the answer, or relay the origin's body, and log the record.
    pub async fn run<O: Origin<B>>(self, origin: &O, clock: &dyn Clock) -> Relay<O::Body> {
        match self {
            Step::Answer(answer) => Relay::Answer(answer),
            Step::Forward(outbound, pending) => pending.finish(origin.send(outbound).await, clock),
        }
    }
}

/// What the origin did, from the runtime's `send` raced against its `timer` (a sleep for the
/// outbound request's timeout, see [`crate::time::within`]): [`OriginResult::TimedOut`] if the
/// timer ends first, else the status, headers and body handle `send` got, or why it got none.
/// One mapping, so every runtime tells a timeout (504) from a failure (502) alike.
pub async fn within<R>(
    timer: impl Future,
    send: impl Future<Output = Result<(u16, HeaderMap, R), OriginError>>,
) -> OriginResult<R> {
    match crate::time::within(timer, send).await {
        Some(Ok((status, headers, body))) => OriginResult::Responded {
            status,
            headers,
            body,
        },
        Some(Err(e)) => e.into(),
        None => OriginResult::TimedOut,
    }
}

/// Why the origin gave no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    /// No response headers within the timeout.
    Timeout,
    /// The request could not be built or sent; the text is for the operator's log.
    Failed(String),
}

impl<R> From<OriginError> for OriginResult<R> {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::Timeout => OriginResult::TimedOut,
            OriginError::Failed(cause) => OriginResult::Failed { cause },
        }
    }
}

impl From<OriginError> for FetchError {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::Timeout => FetchError::Timeout,
            OriginError::Failed(cause) => FetchError::Connect { cause },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use http::Request;

    use super::*;
    use crate::config::{NoSecrets, Policy};
    use crate::context::RequestContext;
    use crate::decision::Gateway;
    use crate::fetch::NoFetch;
    use crate::quota::MemoryStore;
    use crate::time::{FixedClock, UnixTime};

    /// A client that sends no body.
    #[derive(Debug)]
    struct Empty;

    impl crate::body::RequestBody for Empty {
        async fn read_to_limit(self, _: u64) -> Result<Vec<u8>, crate::body::BodyError> {
            Ok(Vec::new())
        }
    }

    /// An origin that answers as told and records what it was sent.
    struct Scripted {
        result: RefCell<Option<OriginResult<&'static str>>>,
        sent: RefCell<Vec<String>>,
    }

    impl Origin<Empty> for Scripted {
        type Body = &'static str;

        async fn send(&self, outbound: Outbound<Empty>) -> OriginResult<&'static str> {
            self.sent
                .borrow_mut()
                .push(outbound.request.uri().to_string());
            self.result.borrow_mut().take().expect("one send")
        }
    }

    fn relay(path: &str, result: OriginResult<&'static str>) -> (Relay<&'static str>, Vec<String>) {
        let policy = Policy::from_json(
            r#"{"version": 1,
                "origins": {"api": {"url": "http://origin.test"}},
                "routes": [{"id": "a", "methods": ["GET"], "path": "/a", "origin": "api", "auth": "none"}]}"#,
            &NoSecrets,
        )
        .unwrap();
        let gateway = Gateway::new(policy);
        let ctx = RequestContext {
            now: UnixTime::from_secs(1_000),
            request_id: "r1".into(),
            peer: None,
        };
        let clock = FixedClock(ctx.now);
        let request = Request::get(path).body(Empty).unwrap();
        let origin = Scripted {
            result: RefCell::new(Some(result)),
            sent: RefCell::new(Vec::new()),
        };
        let relay = futures_executor::block_on(async {
            let step = gateway
                .exchange(request, &ctx, &MemoryStore::default(), &NoFetch, &clock)
                .await;
            step.run(&origin, &clock).await
        });
        (relay, origin.sent.into_inner())
    }

    fn status_of(relay: &Relay<&'static str>) -> u16 {
        match relay {
            Relay::Origin { status, .. } => *status,
            Relay::Answer(answer) => answer.response.status().as_u16(),
        }
    }

    #[test]
    fn a_forward_is_sent_and_finished_and_an_answer_sends_nothing() {
        let responded = OriginResult::Responded {
            status: 201,
            headers: HeaderMap::new(),
            body: "from the origin",
        };
        let (relayed, sent) = relay("/a", responded);
        assert_eq!(sent, ["http://origin.test/a"]);
        assert!(matches!(
            relayed,
            Relay::Origin {
                status: 201,
                body: "from the origin",
                ..
            }
        ));
        let (timed_out, _) = relay("/a", OriginError::Timeout.into());
        assert_eq!(status_of(&timed_out), 504);
        let (failed, _) = relay("/a", OriginError::Failed("refused".into()).into());
        assert_eq!(status_of(&failed), 502);
        let aborted = OriginResult::ClientAborted {
            cause: "connection reset".into(),
        };
        let (aborted, _) = relay("/a", aborted);
        assert_eq!(status_of(&aborted), 400);
        let Relay::Answer(answer) = &aborted else {
            panic!("a client abort relayed: {aborted:?}");
        };
        assert!(
            answer
                .record
                .access
                .contains(r#""reason":"bad-request:body_aborted""#),
            "{}",
            answer.record.access
        );
        let event: serde_json::Value =
            serde_json::from_str(&answer.record.events[0].to_json()).expect("JSON");
        assert_eq!(event["time"], "1970-01-01T00:16:40.000000Z");
        assert_eq!(event["level"], "info");
        assert_eq!(event["event"], "client_aborted");
        assert_eq!(event["request_id"], "r1");
        assert_eq!(event["policy"].as_str().map(str::len), Some(12));
        assert_eq!(
            event["message"],
            "client request body broke off: connection reset"
        );
        let (unrouted, sent) = relay("/nowhere", OriginResult::TimedOut);
        assert!(sent.is_empty());
        assert_eq!(status_of(&unrouted), 404);
    }

    #[test]
    fn a_send_the_timer_outruns_is_a_timeout_and_the_rest_is_what_it_got() {
        use futures_executor::block_on;
        let never = std::future::pending::<()>;
        let got = block_on(within(never(), async {
            Ok((201, HeaderMap::new(), "body"))
        }));
        assert!(matches!(
            got,
            OriginResult::Responded {
                status: 201,
                body: "body",
                ..
            }
        ));
        let refused = async { Err::<(u16, HeaderMap, ()), _>(OriginError::Failed("no".into())) };
        let got = block_on(within(never(), refused));
        assert!(matches!(got, OriginResult::Failed { cause } if cause == "no"));
        let slow = std::future::pending::<Result<(u16, HeaderMap, ()), OriginError>>();
        let got = block_on(within(std::future::ready(()), slow));
        assert!(matches!(got, OriginResult::TimedOut));
    }

    #[test]
    fn a_timeout_stays_a_timeout_and_a_failure_keeps_its_cause() {
        let cause = || OriginError::Failed("refused".into());
        assert!(matches!(
            OriginResult::<()>::from(OriginError::Timeout),
            OriginResult::TimedOut
        ));
        assert!(matches!(
            OriginResult::<()>::from(cause()),
            OriginResult::Failed { cause } if cause == "refused"
        ));
        assert_eq!(FetchError::from(OriginError::Timeout), FetchError::Timeout);
        let connect = FetchError::Connect {
            cause: "refused".into(),
        };
        assert_eq!(FetchError::from(cause()), connect);
    }
}
