//! Following an upload still in progress to its end: once all its bytes
//! are in, poll until it shows the validators of a completed upload.

use reqwest::header::{ETAG, RANGE};

use super::answer::{Answer, answer_of, header};
use super::{Job, Stop};
use crate::error::Error;
use crate::net::{self, Failure, Retrier, lock};
use crate::retry;
use crate::uploader::Event;

/// Polls for the validators of a followed upload once all its bytes are in.
const CONFIRM_POLLS: u32 = 20;

impl Job<'_> {
    /// After following an upload to its end: asks for its last byte until
    /// the answer carries the validators of a completed upload (an ETag),
    /// to learn its `Repr-Digest`. Bounded: after a while without them, the
    /// file is accepted unverified, with a warning.
    pub(super) async fn confirm(&self) -> Result<(), Error> {
        let length = {
            let meta = lock(&self.meta);
            if meta.sha256.is_some() || meta.etag.is_some() {
                return Ok(());
            }
            match meta.length {
                Some(length) if length > 0 => length,
                _ => return Ok(()),
            }
        };
        let mut polls = retry::delays(self.dl.poll_min, self.dl.poll_max);
        let mut retry = Retrier::new(&self.dl.policy);
        for _ in 0..CONFIRM_POLLS {
            let last = length - 1;
            let request = self
                .client
                .get(self.url.clone())
                .header(RANGE, format!("bytes={last}-{last}"));
            let outcome = self.send(request, retry.silence(0)).await;
            let failure = match outcome {
                Ok(response) if matches!(response.status().as_u16(), 200 | 206) => {
                    let total = match answer_of(response.status().as_u16(), response.headers()) {
                        Ok(Answer::Partial { total, .. }) => total,
                        Ok(Answer::Full { length }) => length,
                        _ => None,
                    };
                    if total.is_some_and(|total| total != length) {
                        return Err(Error::Protocol(format!(
                            "the followed upload ended with {} bytes, not {length}",
                            total.unwrap_or_default()
                        )));
                    }
                    if header(response.headers(), ETAG).is_some() {
                        self.learn(response.headers(), Some(length));
                        return Ok(());
                    }
                    None
                }
                Ok(response) if matches!(response.status().as_u16(), 409 | 416) => None,
                Ok(response) => match net::failure_of(&self.dl.policy, response).await {
                    Failure::Gone { status, detail } => {
                        return Err(Error::Rejected { status, detail });
                    }
                    failure => Some(failure),
                },
                Err(Failure::Fatal(error)) => return Err(error),
                Err(failure) => Some(failure),
            };
            if let Some(failure) = failure {
                self.failed(&mut retry, failure)
                    .await
                    .map_err(|stop| match stop {
                        Stop::Error(error) => error,
                        Stop::Restart { reason, .. } => Error::Protocol(reason),
                    })?;
            }
            let after = polls.next().unwrap_or(self.dl.poll_max);
            if self.tally.past_deadline(after) {
                return Err(self.tally.time_limit());
            }
            self.emit(
                &[],
                Event::Waiting {
                    available: length,
                    after,
                },
            );
            tokio::time::sleep(after).await;
        }
        self.emit(
            &[],
            Event::Warning {
                message:
                    "the followed upload never showed its validators; the file is not verified"
                        .to_owned(),
            },
        );
        Ok(())
    }
}
