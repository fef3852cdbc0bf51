//! Requests in flight, counted so that shutdown keeps the port open until they are answered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::watch;

/// How many requests are being answered; cheap to clone.
#[derive(Clone)]
pub struct InFlight(Arc<watch::Sender<usize>>);

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

/// Counts one request until it is answered (for a stream, until its headers are sent: streams end
/// by themselves at shutdown).
struct Counted(InFlight);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl InFlight {
    /// Middleware: counts the request while it runs.
    pub async fn track(State(this): State<InFlight>, req: Request, next: Next) -> Response {
        this.0.send_modify(|n| *n += 1);
        let _counted = Counted(this);
        next.run(req).await
    }

    pub fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
