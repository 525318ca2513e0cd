//! One segment of a download: its range requests and its retry loop,
//! until its bytes are on disk (or, following an upload, until the upload
//! is complete).

use std::sync::atomic::Ordering;

use reqwest::Response;
use reqwest::header::{IF_RANGE, RANGE};

use super::answer::{Answer, answer_of};
use super::state::{Meta, Segment};
use super::{Job, Stop};
use crate::error::Error;
use crate::net::{self, Failure, Retrier, lock};
use crate::retry;
use crate::uploader::Event;

impl Job<'_> {
    /// `GET` the missing part of `seg` (with `Range` and `If-Range`),
    /// retried until the server answers something usable.
    pub(super) async fn fetch(&self, seg: &Segment, retry: &mut Retrier) -> Result<Response, Stop> {
        loop {
            let pos = seg.pos();
            let range = match seg.end() {
                Some(end) if end > pos => format!("bytes={pos}-{}", end - 1),
                _ => format!("bytes={pos}-"),
            };
            let mut request = self.client.get(self.url.clone()).header(RANGE, range);
            if let Some(validator) = lock(&self.meta).if_range() {
                request = request.header(IF_RANGE, validator);
            }
            let failure = match self.send(request, retry.silence(0)).await {
                Ok(response) if matches!(response.status().as_u16(), 200 | 206 | 409 | 416) => {
                    return Ok(response);
                }
                Ok(response) => match net::failure_of(&self.dl.policy, response).await {
                    Failure::Gone { status, detail } => {
                        return Err(Stop::Error(Error::Rejected { status, detail }));
                    }
                    failure => failure,
                },
                Err(failure) => failure,
            };
            self.failed(retry, failure).await?;
        }
    }

    /// Books a failed attempt, reports it and sleeps.
    pub(super) async fn failed(&self, retry: &mut Retrier, failure: Failure) -> Result<(), Stop> {
        let (reason, delay) = self.tally.book(&self.dl.policy, retry, failure)?;
        self.emit(
            &[],
            Event::Retrying {
                after: delay,
                reason,
            },
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// The retry loop of segment `i`.
    pub(super) async fn segment(
        &self,
        plan: &[Segment],
        i: usize,
        mut first: Option<Response>,
        generation: u64,
    ) -> Result<(), Stop> {
        let Some(seg) = plan.get(i) else {
            return Ok(());
        };
        let policy = &self.dl.policy;
        let mut retry = Retrier::new(policy);
        let mut polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
        let mut started = plan.len() > 1;
        loop {
            let pos = seg.pos();
            if seg.end().is_some_and(|end| pos >= end) {
                return Ok(());
            }
            let response = match first.take() {
                Some(response) => response,
                None => self.fetch(seg, &mut retry).await?,
            };
            let status = response.status().as_u16();
            let answer = answer_of(status, response.headers())
                .map_err(|reason| Stop::Error(Error::Protocol(reason)))?;
            if let Some(reason) = self.change(response.headers()) {
                let full = matches!(answer, Answer::Full { .. });
                return Err(Stop::Restart {
                    reason,
                    response: full.then(|| Box::new(response)),
                });
            }
            let mut wait = false;
            match answer {
                Answer::Partial { first, last, total } => {
                    if first != pos {
                        return Err(Stop::Error(Error::Protocol(format!(
                            "asked for bytes from {pos}, the server sent bytes {first}-{last}"
                        ))));
                    }
                    self.check_total(seg, total, plan.len())?;
                    self.learn(response.headers(), total);
                    if !started {
                        started = true;
                        self.emit(
                            plan,
                            Event::Started {
                                total,
                                connections: 1,
                            },
                        );
                    }
                    let stop = seg.end().map_or(last + 1, |end| end.min(last + 1));
                    let before = seg.pos();
                    let silence = retry.receiving();
                    match self
                        .stream(plan, seg, response, stop, generation, silence)
                        .await
                    {
                        Ok(()) => {}
                        Err(Failure::Fatal(error)) => return Err(Stop::Error(error)),
                        Err(failure) => {
                            if seg.pos() > before {
                                retry = Retrier::new(policy);
                            }
                            self.failed(&mut retry, failure).await?;
                            continue;
                        }
                    }
                    if seg.pos() > before {
                        retry = Retrier::new(policy);
                        polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
                    }
                    if seg.pos() < stop {
                        let failure = Failure::network(format!(
                            "the answer ended at byte {} of {first}-{last}",
                            seg.pos()
                        ));
                        self.failed(&mut retry, failure).await?;
                    }
                }
                Answer::Full { length } => {
                    if pos > 0 || plan.len() > 1 {
                        return Err(Stop::Restart {
                            reason: format!(
                                "the server answered the request for bytes from {pos} with the whole file"
                            ),
                            response: Some(Box::new(response)),
                        });
                    }
                    // A whole answer from byte 0 is a fresh start: its
                    // validators and length replace any known ones.
                    *lock(&self.meta) = Meta::default();
                    self.learn(response.headers(), length);
                    if let Some(length) = length {
                        seg.end.store(length, Ordering::Relaxed);
                    }
                    if !started {
                        started = true;
                        self.emit(
                            plan,
                            Event::Started {
                                total: length,
                                connections: 1,
                            },
                        );
                    }
                    let stop = length.unwrap_or(u64::MAX);
                    let silence = retry.receiving();
                    match self
                        .stream(plan, seg, response, stop, generation, silence)
                        .await
                    {
                        Ok(()) if length.is_none() => {
                            // Without a length, the end of the body ends it.
                            let got = seg.pos();
                            lock(&self.meta).length = Some(got);
                            seg.end.store(got, Ordering::Relaxed);
                            return Ok(());
                        }
                        Ok(()) => {
                            if seg.pos() < stop {
                                let failure = Failure::network(format!(
                                    "the answer ended at byte {} of {stop}",
                                    seg.pos()
                                ));
                                self.failed(&mut retry, failure).await?;
                            }
                        }
                        Err(Failure::Fatal(error)) => return Err(Stop::Error(error)),
                        Err(failure) => {
                            if seg.pos() > 0 {
                                retry = Retrier::new(policy);
                            }
                            self.failed(&mut retry, failure).await?;
                        }
                    }
                }
                Answer::Unsatisfiable { total: Some(total) } => {
                    let known = lock(&self.meta).length;
                    if known.is_some_and(|known| known != total) || pos > total {
                        return Err(Stop::Restart {
                            reason: format!(
                                "the file on the server has {total} bytes; {pos} were expected to be there"
                            ),
                            response: None,
                        });
                    }
                    if pos == total && (plan.len() == 1 || seg.end() == Some(total)) {
                        self.learn(response.headers(), Some(total));
                        seg.end.store(total, Ordering::Relaxed);
                        return Ok(());
                    }
                    if !self.dl.follow {
                        return Err(Stop::Error(Error::Protocol(format!(
                            "the server refused bytes from {pos} of a {total}-byte file"
                        ))));
                    }
                    wait = true;
                }
                Answer::Unsatisfiable { total: None } | Answer::InProgress => {
                    if !self.dl.follow {
                        let detail = net::read_capped(response).await;
                        return Err(Stop::Error(Error::Rejected {
                            status,
                            detail: format!(
                                "{} (an upload still in progress? use follow)",
                                net::problem_detail(status, &detail)
                            ),
                        }));
                    }
                    wait = true;
                }
            }
            if wait {
                let after = polls.next().unwrap_or(self.dl.poll_max);
                if self.tally.past_deadline(after) {
                    return Err(Stop::Error(self.tally.time_limit()));
                }
                self.emit(
                    plan,
                    Event::Waiting {
                        available: seg.pos(),
                        after,
                    },
                );
                tokio::time::sleep(after).await;
            }
        }
    }

    /// Checks a `206`'s total against the known length and the follow mode.
    pub(super) fn check_total(
        &self,
        seg: &Segment,
        total: Option<u64>,
        segments: usize,
    ) -> Result<(), Stop> {
        match total {
            Some(total) => {
                let known = lock(&self.meta).length;
                if let Some(known) = known
                    && known != total
                {
                    return Err(Stop::Restart {
                        reason: format!(
                            "the file's length changed on the server from {known} to {total}"
                        ),
                        response: None,
                    });
                }
                if segments == 1 && seg.end().is_none() {
                    seg.end.store(total, Ordering::Relaxed);
                }
                Ok(())
            }
            None if self.dl.follow => Ok(()),
            None => Err(Stop::Error(Error::Rejected {
                status: 206,
                detail: "the upload is still in progress (its length is unknown); use follow"
                    .to_owned(),
            })),
        }
    }
}
