//! How many live streams (SSE and WatchInventory together) the process serves at once.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use redstore_platform::error::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a client refused for the cap is told to wait before it tries again.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The places for live streams; cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveStreams {
    places: Arc<Semaphore>,
    max: usize,
}

/// One stream's place, given back when it is dropped (the stream ended or its client left).
#[derive(Debug)]
pub struct Admitted {
    _place: OwnedSemaphorePermit,
}

impl Admitted {
    /// `stream`, holding this place until it is dropped.
    pub fn hold<S: Stream>(self, stream: S) -> impl Stream<Item = S::Item> {
        stream.map(move |item| {
            let _place = &self;
            item
        })
    }
}

impl LiveStreams {
    pub fn new(max: usize) -> Self {
        Self { places: Arc::new(Semaphore::new(max)), max }
    }

    /// How many streams are open.
    pub fn open(&self) -> usize {
        self.max.saturating_sub(self.places.available_permits())
    }

    /// A place for one more stream, or RESOURCE_EXHAUSTED with a retry hint when every place is
    /// taken. Asked before anything is read for the stream, so a refusal costs nothing.
    pub fn admit(&self) -> Result<Admitted> {
        self.places.clone().try_acquire_owned().map(|place| Admitted { _place: place }).map_err(|_| {
            Error::exhausted(
                format!(
                    "this server has {} live streams open, its most; retry shortly or on another replica",
                    self.max
                ),
                Some(FULL_RETRY_AFTER),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_past_the_cap_is_refused_until_one_ends() {
        let streams = LiveStreams::new(2);
        let first = streams.admit().expect("first");
        let _second = streams.admit().expect("second");
        let refused = streams.admit().expect_err("third is past the cap");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(matches!(refused, Error::ResourceExhausted { retry_after: Some(_), .. }), "{refused:?}");
        drop(first);
        streams.admit().expect("a place again once a stream ended");
    }
}
