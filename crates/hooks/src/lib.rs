//! Completion hooks: the engine's upload events, kept in a durable outbox
//! and delivered by webhook and/or command, and the blocking pre-create hook.
//!
//! The outbox is a directory of one file per event. The engine prepares an
//! event (`ID.pending`, fsync'd) before the transition it announces and
//! commits it (renamed to `SEQ-ID.json`, directory fsync'd) once the
//! transition is durable; only committed events are delivered, in commit
//! order, and removed once every configured target accepted them. A crash
//! leaves at most pending events, which [`Outbox`]'s recovery releases or
//! drops by looking at the upload records. Delivery is at-least-once: a
//! receiver deduplicates by the event id, which is stable.
//!
//! Just over 800 lines with its in-file tests; the code itself is about 670
//! lines.

mod call;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use serde_json::{Value, json};
use tenax_core::events::{CompletionAnswer, Event, EventKind, HookError, Hooks, event_id};
use tenax_core::{FileName, NewUpload, UploadId, UploadRecord};
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use call::{CommandLine, Secret, signature};

use crate::call::{Answer, Caller};

/// The names of the hook metrics (through the `metrics` facade).
pub mod metric {
    /// Counter: events accepted by a target; labels `target` (`webhook`,
    /// `command`) and `event` (the event type).
    pub const DELIVERIES: &str = "tenax_hook_deliveries_total";
    /// Counter: failed delivery attempts (each retry counts); same labels.
    pub const FAILURES: &str = "tenax_hook_failures_total";
    /// Counter: events given up after the maximum age; label `event`.
    pub const DROPPED: &str = "tenax_hook_dropped_total";
    /// Gauge: events in the outbox waiting for delivery.
    pub const OUTBOX_DEPTH: &str = "tenax_hook_outbox_depth";
    /// Counter: pre-create hook calls; label `result` (`accepted`,
    /// `rejected`, `failed`).
    pub const PRE_CREATE: &str = "tenax_hook_pre_create_total";
}

/// When the delivery task looks at the outbox without being woken (it is
/// woken at every commit; this only bounds a missed wake-up).
const POLL: Duration = Duration::from_secs(30);

/// Hook settings.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// Where events are POSTed.
    pub url: Option<String>,
    /// The command that gets each event on stdin.
    pub command: Option<CommandLine>,
    /// Signs webhook bodies (`Tenax-Signature: sha256=HEX`).
    pub secret: Option<Secret>,
    /// The longest one hook call may take.
    pub timeout: Duration,
    /// The first retry delay after a failed delivery (doubling, jittered).
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// Events older than this are given up (`None`: retried forever).
    pub max_age: Option<Duration>,
    /// At most one progress event per upload this often.
    pub progress_interval: Duration,
    /// The blocking pre-create webhook.
    pub pre_create_url: Option<String>,
    /// The blocking pre-create command.
    pub pre_create_command: Option<CommandLine>,
    /// Accept uploads when the pre-create hook fails (rather than 503).
    pub pre_create_fail_open: bool,
    /// Deliver `completed` before the final answer and include the
    /// receiver's answer in it.
    pub completion_answer: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            url: None,
            command: None,
            secret: None,
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: None,
            progress_interval: Duration::from_secs(10),
            pre_create_url: None,
            pre_create_command: None,
            pre_create_fail_open: false,
            completion_answer: false,
        }
    }
}

impl HookConfig {
    /// Whether events are recorded at all (some target is configured).
    pub fn delivers(&self) -> bool {
        self.url.is_some() || self.command.is_some()
    }
}

/// Failures to set the hooks up.
#[derive(Debug, Error)]
pub enum SetupError {
    /// The outbox directory cannot be used.
    #[error("cannot use the event outbox {}: {source}", path.display())]
    Outbox {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP client cannot be built.
    #[error("cannot set up the hook client: {0}")]
    Client(String),
}

/// The durable outbox and its delivery: the engine's [`Hooks`].
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    config: HookConfig,
    caller: Caller,
    /// Committed events by file name (commit order): their ids.
    ready: Mutex<BTreeMap<String, String>>,
    /// Event files being delivered by a request (completion answers),
    /// until the instant after which the delivery task may take them.
    claimed: Mutex<HashMap<String, Instant>>,
    /// The last commit sequence number used.
    last_seq: Mutex<u64>,
    /// When each active upload last had a progress event.
    throttle: Mutex<HashMap<UploadId, Instant>>,
    wake: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`. Pending events are resolved
    /// later by [`Hooks::recover`], when the engine opens.
    pub fn open(dir: &Path, config: HookConfig) -> Result<Arc<Self>, SetupError> {
        let setup = |source| SetupError::Outbox {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(setup)?;
        // The outbox's own name must survive a power cut like its events.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(setup)?;
        }
        let caller =
            Caller::new(config.secret.clone(), config.timeout).map_err(SetupError::Client)?;
        let outbox = Outbox {
            dir: dir.to_owned(),
            config,
            caller,
            ready: Mutex::default(),
            claimed: Mutex::default(),
            last_seq: Mutex::new(0),
            throttle: Mutex::default(),
            wake: Notify::new(),
        };
        for entry in fs::read_dir(dir).map_err(setup)? {
            let name = entry.map_err(setup)?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((seq, id)) = ready_name(name) {
                outbox.note_seq(seq);
                lock(&outbox.ready).insert(name.to_owned(), id.to_owned());
            }
        }
        outbox.gauge();
        Ok(Arc::new(outbox))
    }

    /// Starts delivering; abort the task to stop (an event whose delivery
    /// is cut short is delivered again later).
    pub fn spawn_delivery(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let outbox = Arc::clone(self);
        tokio::spawn(async move { outbox.deliver_forever(CancellationToken::new()).await })
    }

    fn note_seq(&self, seq: u64) {
        let mut last = lock(&self.last_seq);
        *last = (*last).max(seq);
    }

    /// A fresh sequence number: time-ordered across restarts.
    fn next_seq(&self) -> u64 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last = lock(&self.last_seq);
        *last = nanos.max(*last + 1);
        *last
    }

    fn gauge(&self) {
        metrics::gauge!(metric::OUTBOX_DEPTH).set(lock(&self.ready).len() as f64);
    }

    /// Renames a pending event to a ready one; `None` if it is not pending.
    async fn release(&self, id: &str) -> std::io::Result<Option<String>> {
        let seq = self.next_seq();
        let dir = self.dir.clone();
        let pending = dir.join(format!("{id}.pending"));
        let name = format!("{seq:020}-{id}.json");
        let target = dir.join(&name);
        let released = blocking(move || {
            match fs::rename(&pending, &target) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(error) => return Err(error),
            }
            sync_dir(&dir)?;
            Ok(true)
        })
        .await?;
        if !released {
            return Ok(None);
        }
        lock(&self.ready).insert(name.clone(), id.to_owned());
        self.gauge();
        Ok(Some(name))
    }

    async fn remove(&self, name: &str) {
        lock(&self.ready).remove(name);
        self.gauge();
        let path = self.dir.join(name);
        // Not synced: a removal lost to a crash means one more delivery,
        // which receivers deduplicate.
        if let Err(error) = blocking(move || fs::remove_file(path)).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, name, "cannot remove a delivered event");
        }
    }

    async fn deliver_forever(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delays: Option<Box<dyn Iterator<Item = Duration> + Send>> = None;
        loop {
            let wait = if self.deliver_pass(&shutdown).await {
                delays = None;
                POLL
            } else {
                let (min, max) = (
                    self.config.retry_min,
                    self.config.retry_max.max(self.config.retry_min),
                );
                let delays = delays.get_or_insert_with(|| {
                    Box::new(
                        ExponentialBuilder::new()
                            .with_min_delay(min)
                            .with_factor(2.0)
                            .with_max_delay(max)
                            .with_jitter()
                            .without_max_times()
                            .build(),
                    )
                });
                delays.next().unwrap_or(max).min(max)
            };
            let backing_off = delays.is_some();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified(), if !backing_off => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delivers the ready events in order; stops at the first failure
    /// (the receiver is likely down, and order is kept). Returns whether
    /// everything due went out.
    async fn deliver_pass(&self, shutdown: &CancellationToken) -> bool {
        let ready: Vec<(String, String)> = lock(&self.ready)
            .iter()
            .map(|(name, id)| (name.clone(), id.clone()))
            .collect();
        for (name, _) in ready {
            if shutdown.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            {
                let mut claimed = lock(&self.claimed);
                if claimed.get(&name).is_some_and(|until| *until > now) {
                    continue;
                }
                claimed.insert(
                    name.clone(),
                    now + 2 * self.config.timeout + Duration::from_secs(1),
                );
            }
            let delivered = self.deliver_file(&name).await;
            lock(&self.claimed).remove(&name);
            if delivered.is_err() {
                return false;
            }
        }
        true
    }

    /// Delivers one event file (removing it once delivered, or when it is
    /// unreadable or too old); the receivers' answer.
    async fn deliver_file(&self, name: &str) -> Result<Option<Value>, ()> {
        let path = self.dir.join(name);
        let body = match blocking(move || fs::read(path)).await {
            Ok(body) => body,
            Err(error) => {
                if error.kind() == std::io::ErrorKind::NotFound {
                    lock(&self.ready).remove(name);
                    self.gauge();
                    return Ok(None);
                }
                tracing::warn!(%error, name, "cannot read an event");
                return Err(());
            }
        };
        let event: Event = match serde_json::from_slice(&body) {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(%error, name, "an unreadable event was removed");
                self.remove(name).await;
                return Ok(None);
            }
        };
        if let Some(max_age) = self.config.max_age
            && event.time.saturating_add(max_age.as_secs()) < now_secs()
        {
            tracing::error!(id = %event.id, "an event older than the maximum age was given up");
            metrics::counter!(metric::DROPPED, "event" => event.kind.as_str()).increment(1);
            self.remove(name).await;
            return Ok(None);
        }
        let answer = self.deliver(&event, &body).await?;
        self.remove(name).await;
        Ok(answer)
    }

    /// Sends one event to every target; `Err` if one of them refused.
    async fn deliver(&self, event: &Event, body: &[u8]) -> Result<Option<Value>, ()> {
        let kind = event.kind.as_str();
        let headers = [("tenax-event-id", event.id.as_str()), ("tenax-event", kind)];
        let mut answer = None;
        if let Some(url) = &self.config.url {
            match self.caller.post(url, body, &headers).await {
                Ok(Answer { status, body }) if (200..300).contains(&status) => {
                    metrics::counter!(metric::DELIVERIES, "target" => "webhook", "event" => kind)
                        .increment(1);
                    answer = parse_answer(&body);
                }
                outcome => {
                    let reason = match outcome {
                        Ok(answer) => format!("status {}", answer.status),
                        Err(error) => error,
                    };
                    tracing::warn!(id = %event.id, %reason, "webhook delivery failed; will retry");
                    metrics::counter!(metric::FAILURES, "target" => "webhook", "event" => kind)
                        .increment(1);
                    return Err(());
                }
            }
        }
        if let Some(command) = &self.config.command {
            let env = [("TENAX_EVENT_ID", event.id.as_str()), ("TENAX_EVENT", kind)];
            match self.caller.run(command, body, &env).await {
                Ok(Answer { status: 200, body }) => {
                    metrics::counter!(metric::DELIVERIES, "target" => "command", "event" => kind)
                        .increment(1);
                    answer = answer.or_else(|| parse_answer(&body));
                }
                outcome => {
                    let reason = match outcome {
                        Ok(answer) => String::from_utf8_lossy(&answer.body).trim().to_owned(),
                        Err(error) => error,
                    };
                    tracing::warn!(id = %event.id, %reason, "hook command failed; will retry");
                    metrics::counter!(metric::FAILURES, "target" => "command", "event" => kind)
                        .increment(1);
                    return Err(());
                }
            }
        }
        Ok(answer)
    }

    async fn ask_pre_create(&self, body: &[u8]) -> Result<Answer, String> {
        if let Some(url) = &self.config.pre_create_url {
            return self
                .caller
                .post(url, body, &[("tenax-event", "pre-create")])
                .await;
        }
        if let Some(command) = &self.config.pre_create_command {
            return self
                .caller
                .run(command, body, &[("TENAX_EVENT", "pre-create")])
                .await;
        }
        Ok(Answer {
            status: 200,
            body: Vec::new(),
        })
    }
}

/// `SEQ-ID.json` → (SEQ, ID).
fn ready_name(name: &str) -> Option<(u64, &str)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, id) = stem.split_once('-')?;
    Some((seq.parse().ok()?, id))
}

/// A receiver's answer: JSON if it is, else its text; nothing if empty.
fn parse_answer(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    )
}

/// The message a refusing hook gave: its JSON `message` (or `detail`), else
/// its text, bounded.
fn refusal_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| {
            ["message", "detail"]
                .iter()
                .find_map(|key| value.get(key).and_then(Value::as_str).map(str::to_owned))
        });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let text: String = text.chars().take(500).collect();
    if text.is_empty() {
        "the upload was rejected".to_owned()
    } else {
        text
    }
}

/// Applies a pre-create hook's `{"name": …, "metadata": {…}}`.
fn apply_changes(new: &mut NewUpload, body: &[u8]) -> Result<(), String> {
    let Some(Value::Object(changes)) = parse_answer(body) else {
        return Ok(());
    };
    if let Some(name) = changes.get("name").and_then(Value::as_str) {
        new.name = Some(
            FileName::new(name.to_owned())
                .map_err(|error| format!("the hook answered an invalid name {name:?}: {error}"))?,
        );
    }
    if let Some(Value::Object(metadata)) = changes.get("metadata") {
        new.metadata = metadata
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                _ => Err(format!("metadata value of {key:?} is not a string")),
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

#[async_trait]
impl Hooks for Outbox {
    async fn pre_create(&self, new: &mut NewUpload) -> Result<(), HookError> {
        if self.config.pre_create_url.is_none() && self.config.pre_create_command.is_none() {
            return Ok(());
        }
        let body = json!({
            "type": "pre-create",
            "time": now_secs(),
            "upload": {
                "namespace": new.namespace.as_str(),
                "name": new.name.as_ref().map(FileName::as_str),
                "size": new.total,
                "content_type": new.content_type,
                "metadata": new.metadata,
            },
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let failure = match self.ask_pre_create(&body).await {
            Ok(answer) if (200..300).contains(&answer.status) => {
                match apply_changes(new, &answer.body) {
                    Ok(()) => {
                        metrics::counter!(metric::PRE_CREATE, "result" => "accepted").increment(1);
                        return Ok(());
                    }
                    Err(reason) => reason,
                }
            }
            Ok(answer) if (400..500).contains(&answer.status) => {
                metrics::counter!(metric::PRE_CREATE, "result" => "rejected").increment(1);
                return Err(HookError::Rejected {
                    status: answer.status,
                    message: refusal_message(&answer.body),
                });
            }
            Ok(answer) => format!("status {}", answer.status),
            Err(reason) => reason,
        };
        metrics::counter!(metric::PRE_CREATE, "result" => "failed").increment(1);
        if self.config.pre_create_fail_open {
            tracing::warn!(%failure, "pre-create hook failed; accepting the upload (fail-open)");
            Ok(())
        } else {
            Err(HookError::Unavailable(failure))
        }
    }

    async fn prepare(&self, event: &Event) -> std::io::Result<()> {
        if !self.config.delivers() {
            return Ok(());
        }
        let body = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        let dir = self.dir.clone();
        let path = dir.join(format!("{}.pending", event.id));
        blocking(move || {
            let mut file = File::create(&path)?;
            file.write_all(&body)?;
            file.sync_all()?;
            sync_dir(&dir)
        })
        .await
    }

    async fn commit(&self, event_id: &str) -> std::io::Result<()> {
        if !self.config.delivers() {
            return Ok(());
        }
        let Some(name) = self.release(event_id).await? else {
            return Ok(());
        };
        if self.config.completion_answer && event_id.ends_with(".completed") {
            // Held back for the request that completed the upload, which
            // delivers it itself (see [`CompletionAnswer`]); taken by the
            // delivery task if that request does not come for it.
            let until = Instant::now() + 2 * self.config.timeout + Duration::from_secs(1);
            lock(&self.claimed).insert(name, until);
        }
        self.wake.notify_one();
        Ok(())
    }

    fn progress_due(&self, upload: UploadId, _offset: u64) -> bool {
        if !self.config.delivers() {
            return false;
        }
        let now = Instant::now();
        let mut throttle = lock(&self.throttle);
        match throttle.get(&upload) {
            Some(last) if now.duration_since(*last) < self.config.progress_interval => false,
            _ => {
                throttle.insert(upload, now);
                true
            }
        }
    }

    async fn recover(&self, records: &[UploadRecord]) -> std::io::Result<()> {
        let by_id: HashMap<String, &UploadRecord> = records
            .iter()
            .map(|record| (record.id.to_string(), record))
            .collect();
        let dir = self.dir.clone();
        let pending: Vec<(String, Vec<u8>)> = blocking(move || {
            let mut pending = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                if let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".pending")) {
                    pending.push((id.to_owned(), fs::read(entry.path())?));
                }
            }
            Ok(pending)
        })
        .await?;
        let mut pending: Vec<(String, Option<Event>)> = pending
            .into_iter()
            .map(|(id, body)| (id, serde_json::from_slice::<Event>(&body).ok()))
            .collect();
        // Released in the order they happened (a directory lists in any order).
        pending.sort_by_key(|(id, event)| {
            let rank = event.as_ref().map(|event| {
                let step = match event.kind {
                    EventKind::Created => 0,
                    EventKind::Progress => 1,
                    _ => 2,
                };
                (event.time, step, event.upload.offset)
            });
            (rank, id.clone())
        });
        for (id, event) in pending {
            let happened = event.map(|event| event.happened(by_id.get(&event.upload.id).copied()));
            match happened {
                Some(tenax_core::events::Happened::Yes) => {
                    tracing::info!(%id, "releasing an event a restart interrupted");
                    self.release(&id).await?;
                }
                Some(tenax_core::events::Happened::NotYet) => {}
                Some(tenax_core::events::Happened::No) | None => {
                    let path = self.dir.join(format!("{id}.pending"));
                    blocking(move || fs::remove_file(path)).await?;
                }
            }
        }
        Ok(())
    }

    fn forget(&self, upload: UploadId) {
        lock(&self.throttle).remove(&upload);
    }
}

#[async_trait]
impl CompletionAnswer for Outbox {
    async fn answer(&self, upload: UploadId) -> Option<Value> {
        let id = event_id(upload, EventKind::Completed, 0);
        let name = lock(&self.ready)
            .iter()
            .find(|(_, event)| **event == id)
            .map(|(name, _)| name.clone())?;
        lock(&self.claimed).insert(
            name.clone(),
            Instant::now() + 2 * self.config.timeout + Duration::from_secs(1),
        );
        let answer = self.deliver_file(&name).await;
        lock(&self.claimed).remove(&name);
        match answer {
            Ok(answer) => answer,
            Err(()) => {
                self.wake.notify_one();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tenax_core::events::Hooks as _;
    use tenax_core::{FinalInfo, Status};

    use super::*;

    fn record(id: u8, status: Status) -> UploadRecord {
        UploadRecord {
            id: UploadId::from_bytes([id; 16]),
            namespace: tenax_core::Namespace::default(),
            name: None,
            total: Some(3),
            content_type: None,
            metadata: BTreeMap::new(),
            concat: None,
            staged_from: None,
            digests: tenax_core::DigestSet::NONE,
            created_at: 1,
            created_ns: None,
            updated_at: 1,
            status,
            object: None,
        }
    }

    fn complete(published: bool) -> Status {
        Status::Complete(FinalInfo {
            size: 3,
            sha256: "00".into(),
            md5: None,
            crc32c: "AAAAAA==".into(),
            completed_at: 2,
            published,
            superseded: false,
            generation: None,
        })
    }

    fn config() -> HookConfig {
        HookConfig {
            url: Some("http://127.0.0.1:9/".into()),
            ..HookConfig::default()
        }
    }

    #[tokio::test]
    async fn recovery_releases_what_happened_and_drops_what_did_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::open(dir.path(), config()).expect("outbox");
        let done = record(1, complete(true));
        let half = record(2, complete(false));
        let active = record(3, Status::Active);
        let cancelled = record(4, Status::Cancelled);
        let mut events = Vec::new();
        for (kind, record) in [
            (EventKind::Completed, &done),
            (EventKind::Completed, &half),
            (EventKind::Completed, &active),
            (EventKind::Cancelled, &cancelled),
            (EventKind::Cancelled, &active),
            (EventKind::Created, &active),
        ] {
            let event = Event::new(kind, record, 3, 10);
            outbox.prepare(&event).await.expect("prepare");
            events.push(event.id);
        }
        // As if the server died here: a new outbox over the same directory.
        drop(outbox);
        let outbox = Outbox::open(dir.path(), config()).expect("outbox");
        let records = [done, half, active, cancelled];
        outbox.recover(&records).await.expect("recover");
        let ready: Vec<String> = lock(&outbox.ready).values().cloned().collect();
        assert_eq!(
            ready,
            [events[5].clone(), events[0].clone(), events[3].clone()]
        );
        // The half-published completion stays pending, for the engine to
        // release once the file is in place; the others are gone.
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".pending"))
            .collect();
        left.sort();
        assert_eq!(left, [format!("{}.pending", events[1])]);
        outbox.commit(&events[1]).await.expect("commit");
        assert_eq!(lock(&outbox.ready).len(), 4);
        // A commit of what is not pending is a no-op.
        outbox.commit(&events[1]).await.expect("commit again");
        assert_eq!(lock(&outbox.ready).len(), 4);
        // A restart keeps the ready ones, in order.
        let order: Vec<String> = lock(&outbox.ready).values().cloned().collect();
        drop(outbox);
        let outbox = Outbox::open(dir.path(), config()).expect("outbox");
        let again: Vec<String> = lock(&outbox.ready).values().cloned().collect();
        assert_eq!(again, order);
    }

    #[tokio::test]
    async fn without_a_target_nothing_is_recorded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::open(dir.path(), HookConfig::default()).expect("outbox");
        let event = Event::new(EventKind::Created, &record(1, Status::Active), 0, 1);
        outbox.prepare(&event).await.expect("prepare");
        outbox.commit(&event.id).await.expect("commit");
        assert!(!outbox.progress_due(UploadId::from_bytes([1; 16]), 5));
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn throttled_progress() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::open(dir.path(), config()).expect("outbox");
        let id = UploadId::from_bytes([7; 16]);
        assert!(outbox.progress_due(id, 1));
        assert!(!outbox.progress_due(id, 2));
        outbox.forget(id);
        assert!(outbox.progress_due(id, 3));
    }

    #[test]
    fn pre_create_answers() {
        assert_eq!(refusal_message(br#"{"message":"no"}"#), "no");
        assert_eq!(refusal_message(b"  plain text \n"), "plain text");
        assert_eq!(refusal_message(b""), "the upload was rejected");
        let mut new = NewUpload::default();
        apply_changes(&mut new, br#"{"name":"x.bin","metadata":{"k":"dg=="}}"#).expect("apply");
        assert_eq!(new.name.as_ref().map(FileName::as_str), Some("x.bin"));
        assert_eq!(new.metadata.get("k").map(String::as_str), Some("dg=="));
        assert!(apply_changes(&mut new, br#"{"name":"../etc"}"#).is_err());
        assert!(apply_changes(&mut new, br#"{"metadata":{"k":1}}"#).is_err());
        apply_changes(&mut new, b"").expect("nothing to apply");
    }
}
