//! How many connections to one endpoint may be in their handshake at once.
//!
//! The pool opens a connection for every request that finds no idle one. With a cold pool (a
//! new instance, a restart) under load that is one TCP + mTLS handshake per request, all at
//! once: the instance spends its CPU on handshakes, each takes longer than the per-try
//! timeout, the attempts are abandoned with their half-made connections and retried — and
//! the pool never warms (a CI run saw 884 of 1,053 requests answered 504 after a restart).
//! Bounding the handshakes in flight per endpoint lets the first connections finish; the
//! requests waiting meanwhile take them as they come back to the pool, as Envoy's pool queues
//! requests while a few connections are being made.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::uri::{Authority, Uri};
use tokio::sync::Semaphore;
use tower::Service;

/// Handshakes in flight to one endpoint at most: enough to ramp a pool in a few round trips,
/// few enough that a cold pool under load cannot bury the instance in handshakes.
pub const MAX_CONNECTING_PER_ENDPOINT: usize = 8;

/// Endpoints remembered before the ones with nothing in flight are forgotten (instances come
/// and go on new ports).
const REMEMBERED: usize = 64;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector that lets at most `limit` connections per authority be made at once; the rest
/// wait their turn (and are dropped with the request that wanted them).
#[derive(Clone, Debug)]
pub struct Limited<C> {
    inner: C,
    limit: usize,
    slots: Arc<Mutex<HashMap<Authority, Arc<Semaphore>>>>,
}

impl<C> Limited<C> {
    /// `inner` with at most `limit` (≥ 1) connections per authority in the making.
    pub fn new(inner: C, limit: usize) -> Self {
        Self {
            inner,
            limit: limit.max(1),
            slots: Arc::default(),
        }
    }

    /// The turnstile of `uri`'s authority (one shared by every URI without one).
    fn slot(&self, uri: &Uri) -> Arc<Semaphore> {
        let authority = uri
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("unknown"));
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = slots.get(&authority) {
            return slot.clone();
        }
        if slots.len() >= REMEMBERED {
            let limit = self.limit;
            slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.available_permits() < limit);
        }
        slots
            .entry(authority)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }
}

impl<C> Service<Uri> for Limited<C>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let slot = self.slot(&uri);
        // The instance polled ready goes with this call; the clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _turn = slot.acquire_owned().await.map_err(BoxError::from)?;
            inner.call(uri).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A connector that takes 20 ms and records how many calls were in flight at most.
    #[derive(Clone, Default)]
    struct Slow {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        made: Arc<AtomicUsize>,
    }

    impl Service<Uri> for Slow {
        type Response = ();
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = Result<(), std::io::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let now = this.now.fetch_add(1, Ordering::SeqCst) + 1;
                this.most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                this.now.fetch_sub(1, Ordering::SeqCst);
                this.made.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
    }

    async fn connect_all(connector: &Limited<Slow>, uri: &'static str, n: usize) {
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let mut connector = connector.clone();
                tokio::spawn(async move { connector.call(Uri::from_static(uri)).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.is_ok_and(|r| r.is_ok()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_of_connects_to_one_endpoint_is_made_a_few_at_a_time() {
        let slow = Slow::default();
        let connector = Limited::new(slow.clone(), 3);
        connect_all(&connector, "https://127.0.0.1:9000/", 30).await;
        assert_eq!(slow.made.load(Ordering::SeqCst), 30, "every connect is made, in turn");
        assert_eq!(slow.most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_endpoint_has_a_limit_of_its_own() {
        let slow = Slow::default();
        let connector = Limited::new(slow.clone(), 2);
        tokio::join!(
            connect_all(&connector, "https://127.0.0.1:9000/", 10),
            connect_all(&connector, "https://127.0.0.1:9001/", 10),
        );
        assert_eq!(slow.most.load(Ordering::SeqCst), 4, "two endpoints, two each");
    }

    #[tokio::test]
    async fn a_connect_dropped_while_waiting_is_never_made() {
        let slow = Slow::default();
        let connector = Limited::new(slow.clone(), 1);
        let uri = || Uri::from_static("https://127.0.0.1:9000/");
        let first = tokio::spawn(connector.clone().call(uri()));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn(connector.clone().call(uri()));
        tokio::task::yield_now().await;
        waiting.abort();
        assert!(first.await.is_ok_and(|r| r.is_ok()));
        assert!(connector.clone().call(uri()).await.is_ok());
        assert_eq!(slow.made.load(Ordering::SeqCst), 2, "the abandoned one was never made");
    }

    #[test]
    fn endpoints_with_nothing_in_flight_are_forgotten_once_many_were_seen() {
        let connector = Limited::new(Slow::default(), 2);
        for port in 0..(REMEMBERED as u16 * 2) {
            let uri: Uri = format!("https://127.0.0.1:{}/", 10_000 + port)
                .parse()
                .unwrap_or_default();
            drop(connector.slot(&uri));
        }
        let remembered = connector.slots.lock().map(|s| s.len()).unwrap_or_default();
        assert!(remembered <= REMEMBERED, "{remembered}");
    }
}
