//! One upload's shared state and its session: negotiating the dialect,
//! opening or resuming the upload, running its lanes, and the final check.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future;
use reqwest::header::LOCATION;
use reqwest::{Method, Url};
use tenax_protocol::parse_u64;
use tenax_protocol::rufh::UploadLimit;

use crate::dialect::{Capabilities, Dialect, Protocol};
use crate::error::Error;
use crate::hash::{self, HashCursor};
use crate::http::{self, Response};
use crate::journal::{Entry, FileIdentity, Journal};
use crate::net::{self, Failure, Retrier, Silence, Tally, lock};
use crate::target::Target;

use super::lane::{Kind, Lane};
use super::*;

/// A read block cut into pieces of at most `piece` bytes (sharing its
/// buffer).
pub(super) fn pieces(item: io::Result<Bytes>, piece: usize) -> Vec<io::Result<Bytes>> {
    let piece = piece.max(1);
    match item {
        Ok(mut block) => {
            let mut pieces = Vec::with_capacity(block.len().div_ceil(piece));
            while block.len() > piece {
                pieces.push(Ok(block.split_to(piece)));
            }
            pieces.push(Ok(block));
            pieces
        }
        Err(e) => vec![Err(e)],
    }
}

/// What every lane (part) of one upload shares.
pub(super) struct Shared<'a> {
    pub(super) up: &'a Uploader,
    pub(super) client: http::Client,
    /// The client of chunk requests once the link has dropped.
    pub(super) flapping_client: http::Client,
    pub(super) path: PathBuf,
    pub(super) target: Target,
    /// The dialect spoken (resolved from [`Protocol::Auto`] first).
    pub(super) dialect: Dialect,
    pub(super) size: u64,
    pub(super) identity: FileIdentity,
    pub(super) hash: Arc<Mutex<HashCursor>>,
    /// A handle for reading gaps into the hash.
    pub(super) hash_file: tokio::sync::Mutex<tokio::fs::File>,
    pub(super) journal: Option<Journal>,
    /// The upload URL of each lane, as journaled.
    pub(super) sessions: Mutex<Vec<Option<String>>>,
    /// Bytes the server acknowledged, per lane.
    pub(super) acked: Vec<AtomicU64>,
    /// Bytes of each lane's request under way put on the wire, as last
    /// reported.
    pub(super) sending: Vec<AtomicU64>,
    pub(super) bytes_sent: Arc<AtomicU64>,
    /// A chunk request of the upload got no answer (the link dropped or
    /// stalled): from then on bodies go in [`FLAPPING_PIECE`]s through
    /// `flapping_client`.
    pub(super) dropped: AtomicBool,
    /// A read error met by a body stream.
    pub(super) local_error: Arc<Mutex<Option<io::Error>>>,
    /// Failed attempts, the last error and the time limit, all lanes
    /// together.
    pub(super) tally: Tally,
    /// The most body bytes one request carries: the chunk size, until a
    /// `413` (a proxy's body limit) makes it smaller.
    pub(super) request_size: AtomicU64,
}

impl Shared<'_> {
    /// Resolves the dialect (asking the server for [`Protocol::Auto`]) and
    /// the number of parts to upload at once.
    pub(super) async fn negotiate(&mut self) -> Result<usize, Error> {
        let wanted = self.up.parallel;
        let capabilities = match self.up.protocol {
            Protocol::Auto => Some(self.probe().await?),
            Protocol::Tus if wanted > 1 => Some(self.probe().await?),
            _ => None,
        };
        self.dialect = match self.up.protocol {
            Protocol::Seed => Dialect::Seed,
            Protocol::Tus => Dialect::Tus,
            Protocol::Ietf => Dialect::Ietf,
            Protocol::Auto => capabilities.unwrap_or_default().dialect(),
        };
        if self.up.protocol == Protocol::Auto {
            self.emit(Event::ProtocolChosen {
                protocol: self.dialect.protocol(),
            });
        }
        if wanted < 2 {
            return Ok(1);
        }
        let refusal = if self.dialect != Dialect::Tus {
            Some(format!(
                "parallel uploads need tus concatenation; the {} upload uses one connection",
                self.dialect.protocol()
            ))
        } else if !capabilities.is_some_and(|c| c.concatenation) {
            Some(
                "the server does not offer tus concatenation; the upload uses one connection"
                    .to_owned(),
            )
        } else {
            None
        };
        if let Some(message) = refusal {
            self.emit(Event::Warning { message });
            return Ok(1);
        }
        // At least one byte per part.
        Ok(usize::try_from(self.size)
            .map_or(wanted, |size| wanted.min(size))
            .max(1))
    }

    /// `OPTIONS {base}/uploads`, retried on transient trouble. A server
    /// that answers it with an error offers nothing (seed only).
    pub(super) async fn probe(&self) -> Result<Capabilities, Error> {
        let mut retrier = Retrier::new(&self.up.policy);
        loop {
            let request = self
                .client
                .request(Method::OPTIONS, self.target.collection.clone());
            let unmoved = AtomicU64::new(0);
            let sent = self.send(&self.client, request, &unmoved, retrier.silence(0));
            let failure = match sent.await {
                Ok(response) if response.status().is_success() => {
                    return Ok(Capabilities::of(response.headers()));
                }
                Ok(response) => match self.failure_of(response).await {
                    failure @ (Failure::Transient { .. } | Failure::Network(_)) => failure,
                    _ => return Ok(Capabilities::default()),
                },
                Err(failure) => failure,
            };
            self.failed(&mut retrier, failure).await?;
        }
    }

    /// Uploads the file in `parts` lanes (then concatenates them) and checks
    /// the result.
    pub(super) async fn drive(&self, parts: usize) -> Result<UploadReport, Error> {
        let resume = self.resume_points(parts).await;
        let (session, object) = if parts <= 1 {
            let mut lane = Lane::new(self, Some(0), Kind::Whole, 0, self.size);
            let object = lane.drive(resume.into_iter().next().flatten()).await?;
            (lane.session, object)
        } else {
            let mut lanes: Vec<Lane<'_, '_>> = (0..parts)
                .map(|i| {
                    let start = crate::parts::split(self.size, parts, i);
                    let end = crate::parts::split(self.size, parts, i + 1);
                    Lane::new(self, Some(i), Kind::Part, start, end - start)
                })
                .collect();
            future::try_join_all(
                lanes
                    .iter_mut()
                    .zip(resume)
                    .map(|(lane, url)| lane.drive(url)),
            )
            .await?;
            let urls = lanes.into_iter().map(|lane| lane.session).collect();
            let mut last = Lane::new(self, None, Kind::Final(urls), 0, self.size);
            let object = last.drive(None).await?;
            (last.session, object)
        };
        let object = object.ok_or_else(|| {
            Error::Protocol("the upload completed without a final answer".to_owned())
        })?;
        self.finish(object, &session, parts).await
    }

    /// The journaled upload URLs to resume, one per lane (`None`: create).
    /// A journal of a changed file, another dialect or another number of
    /// parts is dropped (and its uploads deleted, best effort).
    pub(super) async fn resume_points(&self, parts: usize) -> Vec<Option<Url>> {
        let fresh = vec![None; parts];
        let Some(journal) = &self.journal else {
            return fresh;
        };
        let entry = match journal.load() {
            Ok(Some(entry)) => entry,
            Ok(None) => return fresh,
            Err(e) => {
                tracing::warn!(journal = %journal.path().display(), error = %e, "ignoring an unreadable journal entry");
                return fresh;
            }
        };
        let urls: Vec<Option<Url>> = if entry.parts.is_empty() {
            vec![Url::parse(&entry.session).ok()]
        } else {
            entry
                .parts
                .iter()
                .map(|part| part.as_deref().and_then(|u| Url::parse(u).ok()))
                .collect()
        };
        let reason = if entry.identity != self.identity {
            Some("file changed since the interrupted upload".to_owned())
        } else if Dialect::named(&entry.protocol) != Some(self.dialect) || urls.len() != parts {
            Some(format!(
                "the interrupted upload used {} in {} part(s), this one uses {} in {parts}",
                entry.protocol,
                urls.len(),
                self.dialect.protocol()
            ))
        } else {
            None
        };
        let Some(reason) = reason else {
            *lock(&self.sessions) = urls
                .iter()
                .map(|url| url.as_ref().map(Url::to_string))
                .collect();
            return urls;
        };
        let _ = journal.remove();
        for url in urls.into_iter().flatten() {
            // Best effort: free the server's space.
            let _ = self
                .client
                .delete(url)
                .timeout(self.up.policy.stall_timeout)
                .send()
                .await;
        }
        self.emit(Event::Restarted { reason });
        fresh
    }

    /// Sends a request built on `client` under the stall watchdog and the
    /// time limit, `moved` counting its body's bytes. Once it has been
    /// silent as long as `silence` allows, `OPTIONS {base}/uploads` checks
    /// the link on fresh connections (any answer: the link is up, this
    /// connection is dead). The probes go through `client`, the request's:
    /// the probe that finds the link up leaves its fresh connection in that
    /// client's pool, where the retry finds it.
    pub(super) async fn send(
        &self,
        client: &http::Client,
        request: http::RequestBuilder,
        moved: &AtomicU64,
        silence: Silence,
    ) -> Result<Response, Failure> {
        let probe = || {
            let request = client.request(Method::OPTIONS, self.target.collection.clone());
            async move { request.send().await.is_ok() }
        };
        self.tally
            .send_probed(&self.up.policy, request.send(), moved, probe, silence)
            .await
    }

    /// The client of the next request: once the link has dropped, the
    /// chunks' client, whose pool holds the connection the last chunk or
    /// probe used; the other's idle connections date from before the drop
    /// and may be dead without a word (a silent link), each costing a
    /// silent wait to find out.
    pub(super) fn current_client(&self) -> &http::Client {
        if self.dropped.load(Ordering::Relaxed) {
            &self.flapping_client
        } else {
            &self.client
        }
    }

    /// Reads the upload URL off the answer to a creating `POST`.
    pub(super) async fn session_from(&self, response: Response) -> Result<Url, Failure> {
        let status = response.status().as_u16();
        if !matches!(status, 200 | 201) {
            return Err(match self.failure_of(response).await {
                Failure::Gap(detail) | Failure::TooLarge { detail, .. } => {
                    Failure::Fatal(Error::Rejected { status, detail })
                }
                failure => failure,
            });
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::Fatal(Error::Protocol(
                    "the server created an upload without a Location".to_owned(),
                ))
            })?;
        response.url().join(location).map_err(|e| {
            Failure::Fatal(Error::Protocol(format!(
                "the upload Location {location:?} is invalid: {e}"
            )))
        })
    }

    /// After a `413` to a request of `refused` body bytes: makes every
    /// later request smaller (the draft's guidance on 413; docs/protocol.md
    /// §0, "Behind reverse proxies"): `max_append_size` when the answer
    /// gave one below `refused`, else half, in whole [`MIN_REQUEST`]s.
    /// Gives up when a request of [`MIN_REQUEST`] or less was refused.
    pub(super) fn shrink_requests(
        &self,
        refused: u64,
        max_append_size: Option<u64>,
        detail: String,
    ) -> Result<(), Error> {
        if refused <= MIN_REQUEST {
            return Err(Error::Rejected {
                status: 413,
                detail: format!("a request of {refused} bytes was refused as too large: {detail}"),
            });
        }
        // A proxy's 413 is an HTML page: say so rather than quote it.
        let detail = if detail.starts_with('<') || detail.contains('\n') {
            "Payload Too Large".to_owned()
        } else {
            detail
        };
        let smaller = match max_append_size {
            Some(limit) if limit < refused => limit.max(1),
            _ => (refused / 2 / MIN_REQUEST * MIN_REQUEST).max(MIN_REQUEST),
        };
        let before = self.request_size.fetch_min(smaller, Ordering::Relaxed);
        if smaller < before {
            self.emit(Event::Warning {
                message: format!(
                    "a request of {refused} bytes was refused as too large (HTTP 413: {detail}); \
                     sending at most {smaller} bytes a request from now on"
                ),
            });
        }
        Ok(())
    }

    /// Classifies an error answer, reading its problem details.
    pub(super) async fn failure_of(&self, response: Response) -> Failure {
        let status = response.status().as_u16();
        let retry_after = net::retry_after(response.headers());
        let max_append_size = response
            .headers()
            .get("upload-limit")
            .and_then(|value| value.to_str().ok())
            .and_then(UploadLimit::parse)
            .and_then(|limit| limit.max_append_size);
        let body = response.read_capped().await;
        if status == 413 {
            return Failure::TooLarge {
                detail: net::problem_detail(status, &body),
                max_append_size,
            };
        }
        match net::classify(status, retry_after, &body) {
            Failure::Fatal(Error::Rejected { detail, .. })
                if status == 409 && self.dialect.conflict_is_gap() =>
            {
                Failure::Gap(detail)
            }
            failure => failure,
        }
    }

    /// Reads a (small) response body under the stall timeout.
    pub(super) async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, Failure> {
        let read = async {
            let mut body = Vec::new();
            while let Some(block) = response.chunk().await? {
                if body.len() + block.len() > MAX_RESPONSE_BODY {
                    return Ok(None);
                }
                body.extend_from_slice(&block);
            }
            Ok::<_, hyper::Error>(Some(body))
        };
        match tokio::time::timeout(self.up.policy.stall_timeout, read).await {
            Err(_) => Err(Failure::network("stalled while reading the response")),
            Ok(Err(e)) => Err(Failure::of_transport(&e)),
            Ok(Ok(None)) => Err(Failure::Fatal(Error::Protocol(
                "the response body is too large".to_owned(),
            ))),
            Ok(Ok(Some(body))) => Ok(body),
        }
    }

    /// Books a failed attempt of a lane: gives up when the policy says so,
    /// otherwise reports it and sleeps (transient failures only).
    pub(super) async fn failed(&self, retry: &mut Retrier, failure: Failure) -> Result<(), Error> {
        self.check_identity()?;
        let (reason, delay) = self.tally.book(&self.up.policy, retry, failure)?;
        self.emit(Event::Retrying {
            after: delay,
            reason,
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Checks the final answer against the local file and builds the report.
    pub(super) async fn finish(
        &self,
        object: ServerObject,
        session: &Url,
        parts: usize,
    ) -> Result<UploadReport, Error> {
        // The upload is finished whatever the verdict.
        self.forget();
        let remote_size = match &object.size {
            serde_json::Value::String(s) => parse_u64(s).ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::Protocol(format!("the final size {} is not a number", object.size))
        })?;
        if remote_size != self.size {
            return Err(Error::SizeMismatch {
                local: self.size,
                remote: remote_size,
            });
        }
        {
            let mut file = self.hash_file.lock().await;
            hash::catch_up(&self.hash, &mut file, self.size)
                .await
                .map_err(|e| self.local_io(e))?;
        }
        self.check_identity()?;
        let local = hash::lock(&self.hash).finish();
        if !object.unverified {
            let remote = object
                .sha256
                .ok_or_else(|| Error::Protocol("the final response has no sha256".to_owned()))?;
            if !remote.eq_ignore_ascii_case(&local) {
                return Err(Error::DigestMismatch { local, remote });
            }
        }
        self.emit(Event::Completed);
        Ok(UploadReport {
            url: session.to_string(),
            protocol: self.dialect.protocol(),
            parts,
            name: self.target.name.clone(),
            size: self.size,
            sha256: local,
            verified: !object.unverified,
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            retries: self.tally.retries(),
            elapsed: self.tally.started().elapsed(),
        })
    }

    /// Journals the upload URL of lane `index` (best effort: a journal that
    /// cannot be written only costs resumability across runs).
    pub(super) fn journal_session(&self, index: usize, url: &Url) {
        let mut sessions = lock(&self.sessions);
        if let Some(slot) = sessions.get_mut(index) {
            *slot = Some(url.to_string());
        }
        let Some(journal) = &self.journal else {
            return;
        };
        let parallel = sessions.len() > 1;
        let entry = Entry {
            version: 1,
            session: if parallel {
                String::new()
            } else {
                url.to_string()
            },
            protocol: self.dialect.protocol().as_str().to_owned(),
            parts: if parallel {
                sessions.clone()
            } else {
                Vec::new()
            },
            file: self.path.display().to_string(),
            endpoint: self.target.endpoint.to_string(),
            identity: self.identity.clone(),
        };
        if let Err(e) = journal.store(&entry) {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot write the resume journal");
        }
    }

    /// Drops the journal entry (the upload is finished or dead).
    pub(super) fn forget(&self) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.remove()
        {
            tracing::warn!(journal = %journal.path().display(), error = %e, "cannot remove the resume journal entry");
        }
    }

    /// Fails if a body stream met a read error.
    pub(super) fn check_local(&self) -> Result<(), Error> {
        match lock(&self.local_error).take() {
            Some(e) => Err(self.local_io(e)),
            None => Ok(()),
        }
    }

    /// Fails if the file is no longer the one the upload started with.
    pub(super) fn check_identity(&self) -> Result<(), Error> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.local_io(e))?;
        if FileIdentity::of(&meta) != self.identity {
            return Err(Error::FileChanged {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    pub(super) fn local_io(&self, source: io::Error) -> Error {
        Error::LocalIo {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn emit(&self, event: Event) {
        if let Some(callback) = &self.up.on_progress {
            callback(Progress {
                acknowledged: self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum(),
                total: self.size,
                bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
                sending: self.sending.iter().map(|a| a.load(Ordering::Relaxed)).sum(),
                retries: self.tally.retries(),
                event,
            });
        }
    }
}
