//! Upload events for completion hooks, emitted by the engine at its state
//! transitions so that every dialect has them without adapter code.
//!
//! The engine talks to a [`Hooks`] implementation in two phases around each
//! transition: [`Hooks::prepare`] durably records the event as pending
//! *before* the state changes, [`Hooks::commit`] releases it for delivery
//! once the change is durable. A crash between the two leaves a pending
//! event that [`Hooks::recover`] resolves from the upload records when the
//! engine opens again: released if the transition happened, dropped if it
//! did not. Event ids are derived from the upload id and the transition, so
//! an event prepared twice (a retried finalisation) keeps one id and
//! receivers can deduplicate.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenax_protocol::UploadId;
use thiserror::Error;

use crate::record::{Concat, FinalInfo, NewUpload, Status, UploadRecord};

/// What happened to an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The upload was created.
    Created,
    /// Bytes were made durable (throttled by the [`Hooks`] implementation).
    Progress,
    /// Every byte arrived and the file is in place.
    Completed,
    /// The client cancelled the upload.
    Cancelled,
    /// The upload was idle past its time to live and its data was removed.
    Expired,
}

impl EventKind {
    /// The kind as it appears in event JSON and ids.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Cancelled => "cancelled",
            EventKind::Expired => "expired",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The digests of a completed upload, as events carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDigests {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// MD5, base64, when the server computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// CRC32C, big-endian, base64.
    pub crc32c: String,
}

/// One event, as delivered to receivers (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and stable: the same transition of the same upload always
    /// has this id, so receivers deduplicate redeliveries by it.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When the event was made, seconds since the Unix epoch.
    pub time: u64,
    /// The upload.
    pub upload: EventUpload,
}

/// The upload an [`Event`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventUpload {
    /// The upload's id.
    pub id: String,
    /// Its namespace (empty: the default one).
    pub namespace: String,
    /// The name it is published under, if any.
    pub name: Option<String>,
    /// The total size, once known.
    pub size: Option<u64>,
    /// Bytes durably held.
    pub offset: u64,
    /// The content's media type, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Metadata: keys to base64-encoded values.
    pub metadata: BTreeMap<String, String>,
    /// The digests, on `completed` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<EventDigests>,
    /// Set on a partial upload of a concatenation (its bytes end up in the final
    /// upload, which has events of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl Event {
    /// The event of `kind` for an upload whose record and durable length
    /// are these, at `time`.
    pub fn new(kind: EventKind, record: &UploadRecord, offset: u64, time: u64) -> Self {
        let digests = match (&record.status, kind) {
            (Status::Complete(info), EventKind::Completed) => Some(digests_of(info)),
            _ => None,
        };
        Event {
            id: event_id(record.id, kind, offset),
            kind,
            time,
            upload: EventUpload {
                id: record.id.to_string(),
                namespace: record.namespace.as_str().to_owned(),
                name: record.name.as_ref().map(|name| name.as_str().to_owned()),
                size: record.total,
                offset,
                content_type: record.content_type.clone(),
                metadata: record.metadata.clone(),
                digests,
                partial: matches!(record.concat, Some(Concat::Partial)),
            },
        }
    }

    /// Whether the transition this event announces is what `record` shows:
    /// used at recovery to release or drop a pending event.
    pub fn happened(&self, record: Option<&UploadRecord>) -> Happened {
        let Some(record) = record else {
            return Happened::No;
        };
        match (self.kind, &record.status) {
            (EventKind::Created | EventKind::Progress, _) => Happened::Yes,
            (EventKind::Completed, Status::Complete(info)) if info.published => Happened::Yes,
            (EventKind::Completed, Status::Complete(_)) => Happened::NotYet,
            (EventKind::Cancelled, Status::Cancelled) => Happened::Yes,
            (EventKind::Expired, Status::Expired) => Happened::Yes,
            _ => Happened::No,
        }
    }
}

/// The id of the event of `kind` for an upload (`offset` matters for
/// progress only): `ID.created`, `ID.progress.OFFSET`, `ID.completed`…
pub fn event_id(upload: UploadId, kind: EventKind, offset: u64) -> String {
    match kind {
        // Offsets only grow (a discarded chunk aside, whose progress event
        // would say the same thing again).
        EventKind::Progress => format!("{upload}.progress.{offset}"),
        kind => format!("{upload}.{kind}"),
    }
}

/// Whether a pending event's transition happened (see [`Event::happened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    /// It did: release the event.
    Yes,
    /// It did not and will be done again if at all: drop the event.
    No,
    /// It is under way (a completed upload not yet published): keep the
    /// event pending; the engine commits it when the file is in place.
    NotYet,
}

fn digests_of(info: &FinalInfo) -> EventDigests {
    EventDigests {
        sha256: info.sha256.clone(),
        md5: info.md5.clone(),
        crc32c: info.crc32c.clone(),
    }
}

/// A pre-create hook's refusal, or its failure.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HookError {
    /// The hook refused the upload; its status (a 4xx) and message go to
    /// the client.
    #[error("{message}")]
    Rejected {
        /// The HTTP status for the client.
        status: u16,
        /// The hook's message.
        message: String,
    },
    /// The hook could not be asked, timed out, or answered nonsense.
    #[error("the pre-create hook failed: {0}")]
    Unavailable(String),
}

/// Where the engine sends its events, and who may veto a new upload.
///
/// Every method is called on the request's path: `prepare` and `commit`
/// must be durable when they return (the request's answer follows).
#[async_trait]
pub trait Hooks: Send + Sync + fmt::Debug {
    /// Called before an upload is created: may rewrite the request (name,
    /// metadata) or refuse it.
    async fn pre_create(&self, new: &mut NewUpload) -> Result<(), HookError>;

    /// Durably records `event` as pending, before its transition.
    async fn prepare(&self, event: &Event) -> std::io::Result<()>;

    /// Releases the pending event `event_id` for delivery (a no-op when it
    /// is not pending). Durable on return.
    async fn commit(&self, event_id: &str) -> std::io::Result<()>;

    /// Whether an upload that now holds `offset` bytes is due a progress
    /// event (the throttle).
    fn progress_due(&self, upload: UploadId, offset: u64) -> bool;

    /// Called when the engine opens, with every upload record: resolves
    /// the events a crash left pending (see [`Event::happened`]).
    async fn recover(&self, records: &[UploadRecord]) -> std::io::Result<()>;

    /// Forgets what the throttle knows about an upload that ended.
    fn forget(&self, upload: UploadId);
}

/// Hooks that do nothing: no events, every upload accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    async fn pre_create(&self, _new: &mut NewUpload) -> Result<(), HookError> {
        Ok(())
    }
    async fn prepare(&self, _event: &Event) -> std::io::Result<()> {
        Ok(())
    }
    async fn commit(&self, _event_id: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn progress_due(&self, _upload: UploadId, _offset: u64) -> bool {
        false
    }
    async fn recover(&self, _records: &[UploadRecord]) -> std::io::Result<()> {
        Ok(())
    }
    fn forget(&self, _upload: UploadId) {}
}

/// Delivers an upload's `completed` event right away and returns the
/// receiver's answer, for the final response (opt-in).
#[async_trait]
pub trait CompletionAnswer: Send + Sync + fmt::Debug {
    /// The receiver's JSON answer to the `completed` event of `upload`,
    /// delivered now (bounded by a timeout); `None` when it could not be
    /// delivered in time (it stays in the outbox for later delivery).
    async fn answer(&self, upload: UploadId) -> Option<serde_json::Value>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status, concat: Option<Concat>) -> UploadRecord {
        UploadRecord {
            id: UploadId::from_bytes([0xab; 16]),
            namespace: tenax_protocol::Namespace::default(),
            name: None,
            total: Some(5),
            content_type: None,
            metadata: BTreeMap::from([("k".to_owned(), "dg==".to_owned())]),
            concat,
            staged_from: None,
            digests: crate::DigestSet::NONE,
            created_at: 1,
            created_ns: None,
            updated_at: 1,
            status,
            object: None,
        }
    }

    #[test]
    fn ids_json_and_what_happened() {
        let info = FinalInfo {
            size: 5,
            sha256: "aa".into(),
            md5: None,
            crc32c: "AAAAAA==".into(),
            completed_at: 9,
            superseded: false,
            generation: None,
            published: true,
        };
        let done = record(Status::Complete(info.clone()), None);
        let event = Event::new(EventKind::Completed, &done, 5, 9);
        assert_eq!(event.id, format!("{}.completed", done.id));
        let json = serde_json::to_value(&event).expect("JSON");
        assert_eq!(json["type"], "completed");
        assert_eq!(json["upload"]["digests"]["sha256"], "aa");
        assert_eq!(json["upload"]["metadata"]["k"], "dg==");
        assert!(json["upload"].get("partial").is_none());
        let back: Event = serde_json::from_value(json).expect("parse");
        assert_eq!(back, event);
        assert_eq!(event.happened(Some(&done)), Happened::Yes);
        assert_eq!(event.happened(None), Happened::No);
        let unpublished = record(
            Status::Complete(FinalInfo {
                published: false,
                ..info
            }),
            None,
        );
        assert_eq!(event.happened(Some(&unpublished)), Happened::NotYet);
        let active = record(Status::Active, Some(Concat::Partial));
        assert_eq!(event.happened(Some(&active)), Happened::No);
        let progress = Event::new(EventKind::Progress, &active, 3, 2);
        assert_eq!(progress.id, format!("{}.progress.3", active.id));
        assert!(progress.upload.partial && progress.upload.digests.is_none());
        let cancelled = Event::new(EventKind::Cancelled, &active, 3, 2);
        assert_eq!(cancelled.happened(Some(&active)), Happened::No);
        let gone = record(Status::Cancelled, None);
        assert_eq!(cancelled.happened(Some(&gone)), Happened::Yes);
    }
}
