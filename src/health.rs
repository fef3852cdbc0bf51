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

/// What a service cannot answer without; a set of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deps(u8);

impl Deps {
    pub const NONE: Self = Self(0);
    /// The database: writable (embedded) or reachable (PostgreSQL).
    pub const DATABASE: Self = Self(1);
    /// Redis: the live feed of a stream bridge on the distributed shape.
    pub const REDIS: Self = Self(2);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    const fn meets(self, down: Self) -> bool {
        self.0 & down.0 == 0
    }
}

/// The name that answers liveness: SERVING for as long as the process answers at all, draining
/// or not, whatever its dependencies do (a probe that restarts a pod whose database is down only
/// adds a restart to the outage).
pub const LIVENESS: &str = "liveness";

/// What the statuses are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    draining: bool,
    /// The dependencies that are down.
    down: Deps,
}

/// A service health answers for, and what it needs.
#[derive(Clone, Debug)]
struct Entry {
    name: &'static str,
    needs: Deps,
}

/// The server's health; cheap to clone. Every clone sees and changes the same state.
#[derive(Clone)]
pub struct HealthState {
    state: Arc<watch::Sender<State>>,
    services: Arc<[Entry]>,
}

impl HealthState {
    /// Health for the overall server (`""`, which needs what any service needs), liveness
    /// ([`LIVENESS`]) and the named services, each with what it needs.
    pub fn new(services: &[(&'static str, Deps)]) -> Self {
        let all = services.iter().fold(Deps::NONE, |all, (_, needs)| all.union(*needs));
        let services = [Entry { name: "", needs: all }, Entry { name: LIVENESS, needs: Deps::NONE }]
            .into_iter()
            .chain(services.iter().map(|&(name, needs)| Entry { name, needs }))
            .collect();
        let (state, _) = watch::channel(State { draining: false, down: Deps::NONE });
        Self { state: Arc::new(state), services }
    }

    /// Whether `dep` is up; the services that need it follow.
    pub fn set_up(&self, dep: Deps, up: bool) {
        self.state.send_if_modified(|s| {
            let down = if up { Deps(s.down.0 & !dep.0) } else { s.down.union(dep) };
            std::mem::replace(&mut s.down, down) != down
        });
    }

    /// Whether writes can be committed (the embedded database); the services that write follow it.
    pub fn set_writable(&self, writable: bool) {
        self.set_up(Deps::DATABASE, writable);
    }

    /// Shutdown has begun: every status but liveness is NOT_SERVING from now on, and every watch
    /// of them is told so and closed.
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
    if entry.name == LIVENESS {
        return ServingStatus::Serving;
    }
    if state.draining || !entry.needs.meets(state.down) { ServingStatus::NotServing } else { ServingStatus::Serving }
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
                    let live = entry.as_ref().is_some_and(|e| e.name == LIVENESS);
                    if (state.draining && !live) || rx.changed().await.is_err() {
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
        let health = HealthState::new(&[("sales", Deps::DATABASE), ("stream", Deps::NONE)]);
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
        assert_eq!(health.status(LIVENESS), Some(ServingStatus::Serving), "draining is still alive");
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::NotServing as i32);
        let end = watch.next().await.unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(watch.next().await.is_none(), "the watch is closed");
    }
}

#[cfg(test)]
mod dependency_tests {
    use super::*;

    #[test]
    fn each_service_follows_what_it_needs_and_liveness_follows_nothing() {
        let health = HealthState::new(&[("sales", Deps::DATABASE), ("bridge", Deps::DATABASE.union(Deps::REDIS))]);
        health.set_up(Deps::REDIS, false);
        assert_eq!(health.status("sales"), Some(ServingStatus::Serving), "sales does not need Redis");
        assert_eq!(health.status("bridge"), Some(ServingStatus::NotServing));
        assert_eq!(health.status(""), Some(ServingStatus::NotServing), "overall needs what any service needs");
        health.set_up(Deps::DATABASE, false);
        assert_eq!(health.status("sales"), Some(ServingStatus::NotServing));
        assert_eq!(health.status(LIVENESS), Some(ServingStatus::Serving));
        health.set_up(Deps::REDIS, true);
        assert_eq!(health.status("bridge"), Some(ServingStatus::NotServing), "the database is still down");
        health.set_up(Deps::DATABASE, true);
        assert_eq!(health.status("bridge"), Some(ServingStatus::Serving));
        assert_eq!(health.status(""), Some(ServingStatus::Serving));
    }
}
