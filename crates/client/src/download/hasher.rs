//! The thread that hashes the download in order while the file fills.

use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::hash::{self, HashCursor};
use crate::net::lock;

/// Messages queued to the hashing thread (each up to
/// [`WRITE_BATCH`](super::write::WRITE_BATCH)).
const HASH_QUEUE: usize = 8;
/// Bytes read back from the file at a time by the hashing thread.
const READ_BACK: usize = 4 << 20;

/// What the hashing thread is told.
pub(super) enum HashMsg {
    /// Bytes of generation `generation` being written at `pos`: hashed from
    /// memory if they extend the hashed prefix, else ignored.
    Data {
        generation: u64,
        pos: u64,
        blocks: Vec<Bytes>,
    },
    /// The first `upto` bytes of generation `generation` are written: what
    /// of them is not hashed yet is read back from the file (page cache).
    Prefix { generation: u64, upto: u64 },
}

/// A dedicated thread hashing the file in order, from the received bytes
/// when they extend the hashed prefix, else reading back what is written.
/// Best effort: a full queue drops messages, and
/// [`Job::finish`](super::Job::finish) hashes
/// whatever is left.
pub(super) struct Hasher {
    queue: Mutex<Option<std::sync::mpsc::SyncSender<HashMsg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Hasher {
    pub(super) fn start(
        file: Arc<std::fs::File>,
        gate: Arc<RwLock<u64>>,
        cursor: Arc<Mutex<HashCursor>>,
    ) -> Self {
        let (queue, inbox) = std::sync::mpsc::sync_channel::<HashMsg>(HASH_QUEUE);
        let thread = std::thread::Builder::new()
            .name("tenax-hash".to_owned())
            .spawn(move || {
                let mut buffer = Vec::new();
                while let Ok(msg) = inbox.recv() {
                    match msg {
                        HashMsg::Data {
                            generation,
                            pos,
                            blocks,
                        } => {
                            let current = gate
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            if *current != generation {
                                continue;
                            }
                            let mut cursor = hash::lock(&cursor);
                            let mut at = pos;
                            for block in &blocks {
                                cursor.feed(at, block);
                                at += block.len() as u64;
                            }
                        }
                        HashMsg::Prefix { generation, upto } => loop {
                            let current = gate
                                .read()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let at = hash::lock(&cursor).upto();
                            if *current != generation || at >= upto {
                                break;
                            }
                            let n =
                                usize::try_from(upto - at).map_or(READ_BACK, |n| n.min(READ_BACK));
                            buffer.resize(n, 0);
                            if file.read_exact_at(&mut buffer, at).is_err() {
                                break;
                            }
                            hash::lock(&cursor).feed(at, &buffer);
                        },
                    }
                }
            })
            .ok();
        Hasher {
            queue: Mutex::new(thread.as_ref().map(|_| queue)),
            thread: Mutex::new(thread),
        }
    }

    /// Queues `msg` unless the queue is full (the hashing falls behind: the
    /// bytes are read back later instead).
    pub(super) fn offer(&self, msg: HashMsg) {
        if let Some(queue) = lock(&self.queue).as_ref() {
            let _ = queue.try_send(msg);
        }
    }

    /// Lets the thread drain its queue and waits for it to end.
    pub(super) async fn stop(&self) {
        drop(lock(&self.queue).take());
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
