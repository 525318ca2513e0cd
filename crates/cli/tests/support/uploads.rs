//! The client library's `Uploader`, set up for tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenax_client::{Event, Progress, Uploader};

/// A fast uploader for tests: short backoff and stall timeout.
pub(crate) fn quick_uploader(chunk: u64) -> Uploader {
    Uploader::new()
        .chunk_size(chunk)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .stall_timeout(Duration::from_secs(5))
        .max_retries(1000)
}

/// Collects the events an uploader reports.
pub(crate) fn recording(uploader: Uploader) -> (Uploader, Arc<Mutex<Vec<Progress>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let uploader = uploader.on_progress(move |p| sink.lock().expect("log").push(p));
    (uploader, log)
}

/// The events recorded so far.
pub(crate) fn events(log: &Mutex<Vec<Progress>>) -> Vec<Event> {
    log.lock()
        .expect("log")
        .iter()
        .map(|p| p.event.clone())
        .collect()
}

/// The upload URLs created, in order.
pub(crate) fn created(log: &Mutex<Vec<Progress>>) -> Vec<String> {
    events(log)
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionCreated { url } => Some(url),
            _ => None,
        })
        .collect()
}
