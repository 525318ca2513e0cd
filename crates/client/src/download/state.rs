//! What a download knows and keeps: the segments and their progress, the
//! representation's metadata, and the state file beside the partial file
//! (checkpointed as the bytes arrive) from which a later run resumes.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Job, Stop};
use crate::error::Error;
use crate::net::lock;
use crate::uploader::Event;

/// State-file checkpoints (in the background): at most every this many
/// bytes…
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// …or this much time, whichever comes first.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The state file: what a later run needs to resume without splicing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    version: u32,
    url: String,
    #[serde(flatten)]
    meta: Meta,
    /// The segments and how much of each is on disk.
    segments: Vec<SegState>,
}

/// One segment in the state file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SegState {
    pub(super) start: u64,
    /// Exclusive end; `None` while the length is unknown.
    pub(super) end: Option<u64>,
    /// Bytes on disk from `start`.
    pub(super) done: u64,
}

/// What the server told about the representation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) length: Option<u64>,
    /// The `Repr-Digest` SHA-256, lowercase hex.
    pub(super) sha256: Option<String>,
    /// Whether anything was learnt from an answer yet.
    #[serde(skip)]
    pub(super) known: bool,
}

impl Meta {
    /// The `If-Range` value: a strong ETag, else the Last-Modified date.
    pub(super) fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(tag) if !tag.starts_with("W/") => Some(tag),
            _ => self.last_modified.as_deref(),
        }
    }
}

/// One segment being fetched.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) start: u64,
    /// Exclusive end, `u64::MAX` while unknown.
    pub(super) end: AtomicU64,
    pub(super) done: AtomicU64,
}

impl Segment {
    pub(super) fn new(state: SegState) -> Self {
        Segment {
            start: state.start,
            end: AtomicU64::new(state.end.unwrap_or(u64::MAX)),
            done: AtomicU64::new(state.done),
        }
    }

    pub(super) fn end(&self) -> Option<u64> {
        Some(self.end.load(Ordering::Relaxed)).filter(|e| *e != u64::MAX)
    }

    pub(super) fn pos(&self) -> u64 {
        self.start.saturating_add(self.done.load(Ordering::Relaxed))
    }

    pub(super) fn state(&self) -> SegState {
        SegState {
            start: self.start,
            end: self.end(),
            done: self.done.load(Ordering::Relaxed),
        }
    }
}

/// The checkpoint bookkeeping.
#[derive(Debug)]
pub(super) struct Checkpoints {
    /// When the last checkpoint started, and `received` then.
    last: Instant,
    received: u64,
    /// The checkpoint running in the background, if any.
    running: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Checkpoints {
    /// No checkpoint yet: the first is due after [`CHECKPOINT_BYTES`] or
    /// [`CHECKPOINT_INTERVAL`].
    pub(super) fn new() -> Self {
        Checkpoints {
            last: Instant::now(),
            received: 0,
            running: None,
        }
    }
}

impl Job<'_> {
    /// The segments to fetch from the state file, the partial file, or
    /// from scratch.
    pub(super) fn initial_segments(&self) -> Result<Vec<SegState>, Error> {
        let local_len = self.file.metadata().map_err(|e| self.write_error(e))?.len();
        let state = match std::fs::read(&self.state_path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(state) => Some(state),
                Err(e) => {
                    tracing::warn!(state = %self.state_path.display(), error = %e, "ignoring an unreadable download state file");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.write_error(e)),
        };
        if let Some(state) = state {
            let problem = if state.url != self.url.as_str() {
                Some(format!(
                    "the partial file was downloaded from {}",
                    state.url
                ))
            } else if state.segments.is_empty() || !consistent(&state, local_len) {
                Some("the partial file does not match its state file".to_owned())
            } else {
                None
            };
            match problem {
                None => {
                    let done: u64 = state.segments.iter().map(|s| s.done).sum();
                    *lock(&self.meta) = Meta {
                        known: true,
                        ..state.meta
                    };
                    self.emit(&[], Event::Resumed { from: done });
                    return Ok(state.segments);
                }
                Some(reason) => {
                    self.emit(&[], Event::Restarted { reason });
                    self.file.set_len(0).map_err(|e| self.write_error(e))?;
                    return Ok(vec![SegState::default()]);
                }
            }
        }
        if local_len > 0 {
            self.emit(
                &[],
                Event::Warning {
                    message: format!(
                        "resuming the existing {local_len} bytes of {} without a state file: they are trusted as a prefix and checked by the final digest",
                        self.path.display()
                    ),
                },
            );
            self.emit(&[], Event::Resumed { from: local_len });
        }
        Ok(vec![SegState {
            start: 0,
            end: None,
            done: local_len,
        }])
    }

    /// Persists the progress: syncs the data, then writes the state file
    /// (atomically). Unless `force`, only every [`CHECKPOINT_BYTES`] or
    /// [`CHECKPOINT_INTERVAL`], in the background, and never while one is
    /// still running; `force` waits for it.
    pub(super) async fn checkpoint(&self, plan: &[Segment], force: bool) -> Result<(), Stop> {
        let mut last = if force {
            self.checkpoint.lock().await
        } else {
            match self.checkpoint.try_lock() {
                Ok(last) => last,
                Err(_) => return Ok(()),
            }
        };
        if let Some(running) = last.running.take() {
            if !force && !running.is_finished() {
                last.running = Some(running);
                return Ok(());
            }
            running
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e))?;
        }
        let received = self.received.load(Ordering::Relaxed);
        if !force
            && received < last.received + CHECKPOINT_BYTES
            && last.last.elapsed() < CHECKPOINT_INTERVAL
        {
            return Ok(());
        }
        if plan.is_empty() {
            return Ok(());
        }
        // What is counted as done now was written before this sync.
        let state = State {
            version: 1,
            url: self.url.to_string(),
            meta: lock(&self.meta).clone(),
            segments: plan.iter().map(Segment::state).collect(),
        };
        let (file, path) = (self.file.clone(), self.state_path.clone());
        let json = serde_json::to_vec_pretty(&state)
            .map_err(|e| Stop::Error(Error::Protocol(format!("cannot encode the state: {e}"))))?;
        let task = tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            let mut temp = path.as_os_str().to_owned();
            temp.push(".tmp");
            let temp = PathBuf::from(temp);
            std::fs::write(&temp, &json)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, &path)
        });
        last.last = Instant::now();
        last.received = received;
        if force {
            task.await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e))?;
        } else {
            last.running = Some(task);
        }
        Ok(())
    }

    /// Waits for a background checkpoint to end.
    pub(super) async fn settle_checkpoint(&self) -> Result<(), Stop> {
        let running = self.checkpoint.lock().await.running.take();
        match running {
            Some(running) => running
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
                .map_err(|e| self.state_error(e)),
            None => Ok(()),
        }
    }

    pub(super) fn state_error(&self, source: io::Error) -> Stop {
        Stop::Error(Error::LocalWrite {
            path: self.state_path.clone(),
            source,
        })
    }
}

/// How many leading bytes of the file are on disk: the segments complete
/// from the front, plus the progress of the first incomplete one.
pub(super) fn written_prefix(plan: &[Segment]) -> u64 {
    let mut upto = 0;
    for seg in plan {
        if seg.start != upto {
            break;
        }
        upto = seg.pos();
        if seg.end().is_none_or(|end| upto < end) {
            break;
        }
    }
    upto
}

/// Whether a state file fits the partial file beside it.
fn consistent(state: &State, local_len: u64) -> bool {
    match state.segments.as_slice() {
        [single] => single.start == 0 && single.done <= local_len,
        segments => {
            state.meta.length == Some(local_len)
                && segments.iter().all(|s| {
                    s.end.is_some_and(|end| {
                        s.start <= end && end <= local_len && s.done <= end - s.start
                    })
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_must_fit_the_partial_file() {
        let mut state = State {
            version: 1,
            url: "http://h/f".into(),
            meta: Meta {
                length: Some(100),
                ..Meta::default()
            },
            segments: vec![
                SegState {
                    start: 0,
                    end: Some(50),
                    done: 10,
                },
                SegState {
                    start: 50,
                    end: Some(100),
                    done: 50,
                },
            ],
        };
        assert!(consistent(&state, 100));
        assert!(!consistent(&state, 60));
        state.segments[1].done = 51;
        assert!(!consistent(&state, 100));
        let single = State {
            segments: vec![SegState {
                start: 0,
                end: None,
                done: 30,
            }],
            ..state
        };
        assert!(consistent(&single, 30));
        assert!(!consistent(&single, 29));
        let json = serde_json::to_string(&single).expect("json");
        let back: State = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, single);
    }
}
