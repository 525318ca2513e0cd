//! One lane of an upload: an upload resource (the whole file, a part, or
//! the final concatenation) with its own request and retry loop.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, future, stream};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::dialect::{Answer, Creation, Dialect};
use crate::error::Error;
use crate::hash;
use crate::http::{self, Response};
use crate::net::{Failure, Retrier, record};

use super::session::{Shared, pieces};
use super::*;

/// How often a streaming request body reports its progress.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// What a lane uploads.
#[derive(Debug)]
pub(super) enum Kind {
    /// The whole file.
    Whole,
    /// One part of a parallel upload (a tus partial upload).
    Part,
    /// The concatenation of these part uploads (created complete).
    Final(Vec<Url>),
}

/// The next request of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Send from this offset (or, at the end, complete the upload).
    Send(u64),
    /// Ask the server how much it holds.
    Query,
    /// Ask for the final JSON with the server's digest (seed status query).
    Fetch,
}

/// One upload resource and its own retry loop: the whole file, or one part
/// of it, or the final concatenation.
pub(super) struct Lane<'s, 'a> {
    pub(super) sh: &'s Shared<'a>,
    /// The lane's slot in the journal and progress (none for the final).
    pub(super) index: Option<usize>,
    pub(super) kind: Kind,
    /// Where the lane's bytes start in the file.
    pub(super) start: u64,
    /// How many bytes the lane uploads.
    pub(super) len: u64,
    /// The upload URL (the endpoint until one is open).
    pub(super) session: Url,
    /// The most the server has acknowledged of the current upload.
    pub(super) high_water: u64,
    pub(super) retry: Retrier,
    /// The body size of the last chunk request sent.
    pub(super) last_request: u64,
}

impl<'s, 'a> Lane<'s, 'a> {
    pub(super) fn new(
        sh: &'s Shared<'a>,
        index: Option<usize>,
        kind: Kind,
        start: u64,
        len: u64,
    ) -> Self {
        Lane {
            sh,
            index,
            kind,
            start,
            len,
            session: sh.target.endpoint.clone(),
            high_water: 0,
            retry: Retrier::new(&sh.up.policy),
            last_request: 0,
        }
    }

    /// The upload loop: resumes `resume` (from the journal) or creates an
    /// upload, then sends, queries and retries until the server holds every
    /// byte. Returns the seed final JSON for a whole file or a final
    /// concatenation, `None` for a part.
    pub(super) async fn drive(
        &mut self,
        resume: Option<Url>,
    ) -> Result<Option<ServerObject>, Error> {
        let sh = self.sh;
        let mut from_journal = resume.is_some();
        self.session = match resume {
            Some(url) => url,
            None => self.create().await?,
        };
        let mut resuming = from_journal;
        let mut restarts_left = 1u32;
        let mut step = self.first_step(from_journal);
        loop {
            let sent_at = match step {
                Step::Send(at)
                    if at < self.len || (at == self.len && sh.dialect.completes_explicitly()) =>
                {
                    Some(at)
                }
                _ => None,
            };
            let result = match (step, sent_at) {
                (_, Some(at)) => self.send_chunk(at).await,
                (Step::Fetch, _) => self.fetch().await,
                _ => self.query().await,
            };
            sh.check_local()?;
            match result {
                Ok(Reply::Complete(Some(object))) => {
                    self.set_acked(self.len);
                    return Ok(Some(object));
                }
                Ok(Reply::Complete(None)) => {
                    self.set_acked(self.len);
                    sh.emit(Event::Acknowledged);
                    if matches!(self.kind, Kind::Part) {
                        return Ok(None);
                    }
                    step = Step::Fetch;
                }
                Ok(Reply::Incomplete(held)) => {
                    if held > self.len {
                        return Err(Error::Protocol(format!(
                            "the server claims {held} bytes of a {}-byte upload",
                            self.len
                        )));
                    }
                    self.set_acked(held);
                    if held > self.high_water {
                        self.high_water = held;
                        self.retry = Retrier::new(&sh.up.policy);
                    }
                    if resuming {
                        resuming = false;
                        sh.emit(Event::Resumed {
                            from: self.start + held,
                        });
                    } else {
                        sh.emit(Event::Acknowledged);
                    }
                    let stuck = match (step, sent_at) {
                        (_, Some(at)) if at == self.len => Some(format!(
                            "the server holds all {held} bytes but did not complete the upload"
                        )),
                        (_, Some(at)) if held <= at => Some(format!(
                            "the server acknowledged none of the chunk at offset {}",
                            self.start + at
                        )),
                        (Step::Fetch, _) => Some(format!(
                            "the upload was reported complete, but its status query reports {held} bytes"
                        )),
                        _ => None,
                    };
                    match stuck {
                        Some(reason) => {
                            sh.failed(&mut self.retry, Failure::transient(reason))
                                .await?;
                            resuming = true;
                            step = Step::Query;
                        }
                        None => step = Step::Send(held),
                    }
                }
                Err(Failure::Gone { status, detail }) => {
                    let reason = if from_journal {
                        from_journal = false;
                        "the interrupted upload no longer exists on the server".to_owned()
                    } else if restarts_left > 0 {
                        restarts_left -= 1;
                        format!("the upload is gone on the server (HTTP {status}: {detail})")
                    } else {
                        sh.forget();
                        return Err(Error::Rejected { status, detail });
                    };
                    sh.emit(Event::Restarted { reason });
                    self.session = self.create().await?;
                    self.set_acked(0);
                    self.high_water = 0;
                    resuming = false;
                    step = self.first_step(false);
                }
                Err(Failure::TooLarge {
                    detail,
                    max_append_size,
                }) => {
                    let refused = match sent_at {
                        Some(at) if at < self.len => Some(self.len - at),
                        _ => None,
                    };
                    // Only a request with a body can be too large.
                    let shrunk = match refused {
                        Some(left) => {
                            sh.shrink_requests(left.min(self.last_request), max_append_size, detail)
                        }
                        None => Err(Error::Rejected {
                            status: 413,
                            detail,
                        }),
                    };
                    if let Err(error) = shrunk {
                        sh.forget();
                        return Err(error);
                    }
                    // Nothing of it was stored, most likely; ask.
                    resuming = true;
                    step = Step::Query;
                }
                Err(Failure::Fatal(error)) => {
                    if matches!(error, Error::Rejected { .. }) {
                        sh.forget();
                    }
                    return Err(error);
                }
                Err(failure) => {
                    sh.failed(&mut self.retry, failure).await?;
                    resuming = true;
                    if step != Step::Fetch {
                        step = Step::Query;
                    }
                }
            }
        }
    }

    /// Where a lane starts: a fresh upload sends from 0, a journaled one asks
    /// first, a final concatenation is complete at once.
    pub(super) fn first_step(&self, from_journal: bool) -> Step {
        if from_journal || matches!(self.kind, Kind::Final(_)) {
            Step::Query
        } else {
            Step::Send(0)
        }
    }

    pub(super) fn set_acked(&self, held: u64) {
        if let Some(slot) = self.index.and_then(|i| self.sh.acked.get(i)) {
            slot.store(held, Ordering::Relaxed);
        }
    }

    /// `POST`s until an upload exists, then journals it.
    pub(super) async fn create(&mut self) -> Result<Url, Error> {
        let sh = self.sh;
        loop {
            let creation = match &self.kind {
                Kind::Whole => Creation::Whole,
                Kind::Part => Creation::Part,
                Kind::Final(parts) => Creation::Final(parts),
            };
            let request = sh
                .dialect
                .create(sh.current_client(), &sh.target, self.len, creation)?;
            let unmoved = AtomicU64::new(0);
            let silence = self.retry.silence(0);
            let sent = sh.send(sh.current_client(), request, &unmoved, silence);
            let failure = match sent.await {
                Ok(response) => match sh.session_from(response).await {
                    Ok(url) => {
                        if let Some(index) = self.index {
                            sh.journal_session(index, &url);
                        }
                        sh.emit(Event::SessionCreated {
                            url: url.to_string(),
                        });
                        return Ok(url);
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::BadRequest(detail) => {
                    return Err(Error::Rejected {
                        status: 400,
                        detail,
                    });
                }
                Failure::Gone { status, detail } => {
                    return Err(Error::Rejected { status, detail });
                }
                failure => sh.failed(&mut self.retry, failure).await?,
            }
        }
    }

    /// Sends the chunk starting at lane offset `at`, streamed from the file
    /// (an empty completing request when `at` is the lane's end).
    pub(super) async fn send_chunk(&mut self, at: u64) -> Result<Reply, Failure> {
        let sh = self.sh;
        let from = self.start + at;
        if self.start == 0 && hash::lock(&sh.hash).upto() < from {
            let mut file = sh.hash_file.lock().await;
            let caught_up = hash::catch_up(&sh.hash, &mut file, from).await;
            caught_up.map_err(|e| Failure::Fatal(sh.local_io(e)))?;
        }
        let local = |e| Failure::Fatal(sh.local_io(e));
        let len = sh.request_size.load(Ordering::Relaxed).min(self.len - at);
        self.last_request = len;
        let moved = Arc::new(AtomicU64::new(0));
        let (client, piece) = if sh.dropped.load(Ordering::Relaxed) {
            (&sh.flapping_client, FLAPPING_PIECE)
        } else {
            (&sh.client, STEADY_PIECE)
        };
        let body = if len == 0 {
            http::empty()
        } else {
            let mut file = tokio::fs::File::open(&sh.path).await.map_err(local)?;
            file.seek(io::SeekFrom::Start(from)).await.map_err(local)?;
            let (counter, hash, sent, slot) = (
                moved.clone(),
                sh.hash.clone(),
                sh.bytes_sent.clone(),
                sh.local_error.clone(),
            );
            let mut pos = from;
            let reads = ReaderStream::with_capacity(file.take(len), READ_SIZE)
                .flat_map(move |item| stream::iter(pieces(item, piece)))
                .map(move |item: io::Result<Bytes>| {
                    match &item {
                        Ok(block) => {
                            hash::lock(&hash).feed(pos, block);
                            let n = block.len() as u64;
                            pos += n;
                            counter.fetch_add(n, Ordering::Relaxed);
                            sent.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => record(&slot, io::Error::new(e.kind(), e.to_string())),
                    }
                    item
                });
            let (moved, slot) = (moved.clone(), sh.local_error.clone());
            let short = stream::once(async move {
                if moved.load(Ordering::Relaxed) < len {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when the upload started",
                    );
                    record(&slot, io::Error::new(e.kind(), e.to_string()));
                    Err(e)
                } else {
                    Ok(Bytes::new())
                }
            })
            .filter(|item| future::ready(item.is_err()));
            http::streamed(reads.chain(short))
        };
        let request = sh
            .dialect
            .chunk(client, &self.session, (at, len, self.len), body);
        let response = self
            .reporting(
                sh.send(client, request, &moved, self.retry.silence(len)),
                &moved,
            )
            .await
            .inspect_err(|_| sh.dropped.store(true, Ordering::Relaxed))?;
        self.reply_of(response, sh.dialect).await
    }

    /// Awaits `sending`, reporting the bytes its body has put on the wire
    /// (`moved`) every [`REPORT_EVERY`]: a request may carry the whole file,
    /// and progress must not wait for its answer.
    async fn reporting<T>(&self, sending: impl Future<Output = T>, moved: &AtomicU64) -> T {
        let slot = self.index.and_then(|i| self.sh.sending.get(i));
        tokio::pin!(sending);
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
        loop {
            tokio::select! {
                out = &mut sending => {
                    if let Some(slot) = slot {
                        slot.store(0, Ordering::Relaxed);
                    }
                    return out;
                }
                _ = ticks.tick() => {
                    if let Some(slot) = slot {
                        slot.store(moved.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    self.sh.emit(Event::Sending);
                }
            }
        }
    }

    /// Asks the server how much it holds (seed: `bytes */SIZE`, which
    /// finalises when it holds everything; tus, ietf: `HEAD`).
    pub(super) async fn query(&self) -> Result<Reply, Failure> {
        let sh = self.sh;
        let client = sh.current_client();
        let request = sh.dialect.query(client, &self.session, self.len);
        let silence = self.retry.silence(0);
        let response = sh
            .send(client, request, &AtomicU64::new(0), silence)
            .await?;
        self.reply_of(response, sh.dialect).await
    }

    /// Asks for the final JSON (and the server's SHA-256) with a seed status
    /// query, which tenax answers for an upload of any dialect. Another tus
    /// or RUFH server, which has already said the upload is complete,
    /// refuses it (with a `4xx` other than `408` and `429`): the upload is
    /// then complete without a server digest to check.
    pub(super) async fn fetch(&self) -> Result<Reply, Failure> {
        let sh = self.sh;
        let client = sh.current_client();
        let request = Dialect::status_query(client, &self.session);
        let silence = self.retry.silence(0);
        let response = sh
            .send(client, request, &AtomicU64::new(0), silence)
            .await?;
        let status = response.status().as_u16();
        let refused = (400..500).contains(&status) && !matches!(status, 408 | 429);
        if refused && sh.dialect != Dialect::Seed {
            return Ok(Reply::Complete(Some(ServerObject::unverified(self.len))));
        }
        self.reply_of(response, Dialect::Seed).await
    }

    /// Turns an answer (read as `dialect` speaks) into a [`Reply`] or
    /// [`Failure`].
    pub(super) async fn reply_of(
        &self,
        response: Response,
        dialect: Dialect,
    ) -> Result<Reply, Failure> {
        let status = response.status().as_u16();
        match dialect.answer(status, response.headers(), self.len) {
            Err(reason) => Err(Failure::Fatal(Error::Protocol(reason))),
            Ok(Answer::Held(held)) => Ok(Reply::Incomplete(held)),
            Ok(Answer::Complete) => Ok(Reply::Complete(None)),
            Ok(Answer::FinalJson) => {
                let body = self.sh.read_body(response).await?;
                serde_json::from_slice(&body)
                    .map(|object| Reply::Complete(Some(object)))
                    .map_err(|e| {
                        Failure::Fatal(Error::Protocol(format!(
                            "the final response is not the expected JSON: {e}"
                        )))
                    })
            }
            Ok(Answer::Error) => Err(self.sh.failure_of(response).await),
        }
    }
}
