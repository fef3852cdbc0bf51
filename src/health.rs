//! `grpc.health.v1.Health`, answered from what the server knows of itself: overall (`""`) and per
//! service, NOT_SERVING while the embedded database cannot be written (for the services that
//! write) and from the moment shutdown begins.
//!
//! Written here rather than taken from tonic-health's reporter because shutdown must end the
//! watches: a `Watch` is told NOT_SERVING and then closed with UNAVAILABLE, so an open watch never
//! holds the process for its grace period, and `Check` answers NOT_SERVING for as long as the
//! listener is open.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What the statuses are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    draining: bool,
    writable: bool,
}

/// A service health answers for, and whether it needs the database to be writable.
#[derive(Clone, Debug)]
struct Entry {
    name: &'static str,
    writes: bool,
}

/// The server's health; cheap to clone. Every clone sees and changes the same state.
#[derive(Clone)]
pub struct HealthState {
    state: Arc<watch::Sender<State>>,
    services: Arc<[Entry]>,
}

impl HealthState {
    /// Health for the overall server (`""`, which needs writes when any service does) and the
    /// named services, each with whether it needs the database to be writable.
    pub fn new(services: &[(&'static str, bool)]) -> Self {
        let any_writes = services.iter().any(|(_, writes)| *writes);
        let services = std::iter::once(Entry { name: "", writes: any_writes })
            .chain(services.iter().map(|&(name, writes)| Entry { name, writes }))
            .collect();
        let (state, _) = watch::channel(State { draining: false, writable: true });
        Self { state: Arc::new(state), services }
    }

    /// Whether writes can be committed; the services that write follow it.
    pub fn set_writable(&self, writable: bool) {
        self.state.send_if_modified(|s| std::mem::replace(&mut s.writable, writable) != writable);
    }

    /// Shutdown has begun: every status is NOT_SERVING from now on, and every watch is told so and
    /// closed.
    pub fn drain(&self) {
        self.state.send_if_modified(|s| !std::mem::replace(&mut s.draining, true));
    }

    /// The status of `service`; `None` when health does not know it.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let entry = self.services.iter().find(|e| e.name == service)?;
        Some(status_of(*self.state.borrow(), entry))
    }

    pub fn into_server(self) -> HealthServer<Self> {
        HealthServer::new(self)
    }
}

fn status_of(state: State, entry: &Entry) -> ServingStatus {
    if state.draining || (entry.writes && !state.writable) { ServingStatus::NotServing } else { ServingStatus::Serving }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; watch another replica")
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthState {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(answer(status))),
            None => Err(Status::not_found(format!("no service {} here", redstore_platform::text::quote(&service)))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        let service = req.into_inner().service;
        let entry = self.services.iter().find(|e| e.name == service).cloned();
        let rx = self.state.subscribe();
        // Sends each status once, as it changes; once shutdown begins, NOT_SERVING (unless just
        // sent) and then the end. An unknown service is SERVICE_UNKNOWN, as the protocol asks.
        let stream = futures::stream::unfold(Some((rx, None)), move |watching| {
            let entry = entry.clone();
            async move {
                let (mut rx, last): (watch::Receiver<State>, Option<ServingStatus>) = watching?;
                loop {
                    let state = *rx.borrow_and_update();
                    let status = entry.as_ref().map_or(ServingStatus::ServiceUnknown, |e| status_of(state, e));
                    if last != Some(status) {
                        return Some((Ok(answer(status)), Some((rx, Some(status)))));
                    }
                    if state.draining || rx.changed().await.is_err() {
                        return Some((Err(shutting_down()), None));
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn writers_follow_the_database_and_shutdown_ends_every_watch() {
        let health = HealthState::new(&[("sales", true), ("stream", false)]);
        assert_eq!(health.status(""), Some(ServingStatus::Serving));
        assert_eq!(health.status("nope"), None);
        let mut watch =
            health.watch(Request::new(HealthCheckRequest { service: "sales".into() })).await.unwrap().into_inner();
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

        health.set_writable(false);
        assert_eq!(health.status("sales"), Some(ServingStatus::NotServing));
        assert_eq!(health.status("stream"), Some(ServingStatus::Serving), "a reader does not need writes");
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
        health.set_writable(true);
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);

        health.drain();
        assert_eq!(health.status("stream"), Some(ServingStatus::NotServing));
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
        let end = watch.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(watch.next().await.is_none(), "the watch is closed");
    }
}
