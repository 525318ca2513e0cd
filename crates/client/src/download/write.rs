//! Writing a response body at its segment's position: batches written
//! off the runtime while the next batch is received, then booked, offered
//! to the hash and checkpointed.

use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::FutureExt as _;
use reqwest::Response;

use super::hasher::HashMsg;
use super::state::{Segment, written_prefix};
use super::{Job, Stop};
use crate::net::{Failure, Silence};

/// Bytes gathered from the network before one positional write (one
/// blocking hand-off); the next batch is received while one is written.
pub(super) const WRITE_BATCH: usize = 2 << 20;

/// A positional write in flight: the bytes written.
type Writing = tokio::task::JoinHandle<io::Result<u64>>;

impl Job<'_> {
    /// Writes the body of `response` at the segment's position, up to
    /// `stop` (exclusive). Returns at the end of the body or at `stop`.
    /// Batches of [`WRITE_BATCH`] bytes are written off the runtime while
    /// the next batch is received.
    pub(super) async fn stream(
        &self,
        plan: &[Segment],
        seg: &Segment,
        mut response: Response,
        stop: u64,
        generation: u64,
        silence: Silence,
    ) -> Result<(), Failure> {
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        let mut writing: Option<Writing> = None;
        let mut next = seg.pos();
        let outcome = loop {
            if next >= stop {
                // Notice the end of the body if it is there, so that the
                // connection goes back to the pool.
                let _ = response.chunk().now_or_never();
                break Ok(());
            }
            let mut block = match self.next_block(&mut response, silence).await {
                Ok(Some(block)) => block,
                Ok(None) => break Ok(()),
                // Keep what arrived before the trouble.
                Err(failure) => break Err(failure),
            };
            let room = usize::try_from(stop - next).unwrap_or(usize::MAX);
            block.truncate(room);
            next += block.len() as u64;
            batch_len += block.len();
            batch.push(block);
            if batch_len >= WRITE_BATCH {
                self.settle(plan, seg, writing.take()).await?;
                writing = Some(self.launch(seg, std::mem::take(&mut batch), generation));
                batch_len = 0;
            }
        };
        self.settle(plan, seg, writing.take()).await?;
        if !batch.is_empty() {
            let last = self.launch(seg, batch, generation);
            self.settle(plan, seg, Some(last)).await?;
        }
        outcome
    }

    /// Starts writing `blocks` at the segment's position (nothing of it
    /// may be in flight), off the runtime, and offers them to the hash.
    pub(super) fn launch(&self, seg: &Segment, blocks: Vec<Bytes>, generation: u64) -> Writing {
        let pos = seg.pos();
        self.hasher.offer(HashMsg::Data {
            generation,
            pos,
            blocks: blocks.clone(),
        });
        let (file, gate) = (self.file.clone(), self.gate.clone());
        tokio::task::spawn_blocking(move || {
            let current = gate
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *current != generation {
                return Err(io::Error::other("the download started over"));
            }
            let mut at = pos;
            for block in &blocks {
                file.write_all_at(block, at)?;
                at += block.len() as u64;
            }
            Ok(at - pos)
        })
    }

    /// Waits for a write in flight, then books the progress, tells the
    /// hash what is on disk and checkpoints (in the background).
    pub(super) async fn settle(
        &self,
        plan: &[Segment],
        seg: &Segment,
        writing: Option<Writing>,
    ) -> Result<(), Failure> {
        let Some(writing) = writing else {
            return Ok(());
        };
        let n = writing
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| Failure::Fatal(self.write_error(e)))?;
        seg.done.fetch_add(n, Ordering::Relaxed);
        self.received.fetch_add(n, Ordering::Relaxed);
        let generation = *self
            .gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.hasher.offer(HashMsg::Prefix {
            generation,
            upto: written_prefix(plan),
        });
        self.report(plan);
        self.checkpoint(plan, false).await.map_err(|e| match e {
            Stop::Error(error) => Failure::Fatal(error),
            Stop::Restart { reason, .. } => Failure::transient(reason),
        })
    }
}
