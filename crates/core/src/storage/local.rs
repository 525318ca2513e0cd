//! The embedded default backend: a directory on local disk.
//!
//! ```text
//! DATA/uploads/ID.json   the record (JSON, see `layout`), replaced atomically (temp, fsync, rename, fsync dir)
//! DATA/uploads/ID.bin    the upload's bytes, in progress or complete
//! DATA/uploads/ID.len    the synced length of ID.bin while in progress (see below)
//! DATA/files/NAME        published files: a second link to a complete upload's bytes
//! DATA/spaces/NS/NAME    the same, for the files of namespace NS
//! ```
//!
//! The number of bytes held is the length recorded in `ID.len` after the
//! `fdatasync` of `ID.bin`, not the length of `ID.bin`: after a power cut a
//! file system may keep a file's new length without its data (ext4
//! `data=writeback`, delayed allocation: the tail reads as zeros), so the
//! file's length is only an upper bound. `ID.len` (16 bytes, overwritten in
//! place, so it needs no directory sync) is written and synced after the
//! data it counts; an append that finds `ID.bin` longer cuts it back to it.
//! docs/storage.md ("Power cuts") has the argument; a data directory written
//! before `ID.len` existed falls back to the file's length.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tenax_protocol::UploadId;
use tokio::sync::Semaphore;
use tokio::task::spawn_blocking;

use super::{Append, ByteStream, Storage, StorageError, Stored};
use crate::layout;
use crate::record::{FileKey, Status, UploadRecord};

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    root: PathBuf,
    uploads: PathBuf,
    spaces: PathBuf,
    writers: Writers,
    /// Uploads this process appended to: bytes of theirs past the synced
    /// length are bytes this process wrote (an append dropped before its
    /// sync), which a load may adopt once synced; after a restart they may
    /// be a power cut's zeros, and only the recorded length counts.
    appended: Arc<std::sync::Mutex<std::collections::HashSet<UploadId>>>,
}

/// Blocking jobs that write or sync, at most, at once. The disk goes no
/// faster with more, each runnable one takes CPU from the async threads
/// that answer requests, and the blocking pool must keep threads for reads:
/// 1,000 uploads at once filled all of its 512 (`bench/load`).
const WRITERS: usize = 64;

/// The permits for [`WRITERS`], shared by a [`LocalDisk`] and its appends.
#[derive(Debug, Clone)]
struct Writers(Arc<Semaphore>);

impl Writers {
    /// Runs blocking work that writes or syncs, once a permit is free; the
    /// permit goes with the work, so a dropped caller does not free it
    /// before the work ends.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        let permit = Arc::clone(&self.0)
            .acquire_owned()
            .await
            .map_err(|closed| StorageError::Io(io::Error::other(closed)))?;
        spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|join| StorageError::Io(io::Error::other(join)))
    }

    /// [`run`](Writers::run) for work that returns an `io::Result`.
    async fn io<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        self.run(work).await?.map_err(StorageError::from)
    }
}

/// Bytes read from a file at a time for a download.
const READ_CHUNK: usize = 256 * 1024;

impl LocalDisk {
    /// Opens (and creates, if needed) a data directory.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref();
        let uploads = root.join(layout::UPLOADS);
        let files = root.join(layout::FILES);
        fs::create_dir_all(&uploads)?;
        fs::create_dir_all(&files)?;
        // The directories' names must survive a power cut like what they
        // hold: their parents are synced (the root's parent too, in case
        // `create_dir_all` made the root).
        sync_dir(root)?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(LocalDisk {
            root: root.to_owned(),
            uploads,
            spaces: root.join(layout::SPACES),
            writers: Writers(Arc::new(Semaphore::new(WRITERS))),
            appended: Arc::default(),
        })
    }

    fn record_path(&self, id: UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.json"))
    }

    fn data_path(&self, id: UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.bin"))
    }

    fn length_path(&self, id: UploadId) -> PathBuf {
        self.uploads.join(format!("{id}.len"))
    }

    /// The directory of a namespace's published files.
    fn files_dir(&self, file: &FileKey) -> PathBuf {
        let mut dir = self.root.clone();
        dir.extend(layout::published_dir(&file.namespace));
        dir
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    spawn_blocking(work)
        .await
        .map_err(|join| StorageError::Io(io::Error::other(join)))?
        .map_err(StorageError::from)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path` (already gone is fine) and makes the removal durable.
fn remove_durably(path: &Path, dir: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(dir),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix, and the new content survives a crash once this returns.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("record path has no parent"))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("record path has no name"))?;
    let temp = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    let mut file = File::create(&temp)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    sync_dir(dir)
}

/// The length record's check word: a record whose check does not match
/// (torn, or zeros) is not trusted.
const LENGTH_CHECK: u64 = 0x7465_6e61_785f_6c65;

/// Writes the synced-length record in place (16 bytes: the length and its
/// check) and syncs it. Called only once the data it counts is synced.
fn write_length(file: &File, len: u64) -> io::Result<()> {
    let mut record = [0u8; 16];
    record[..8].copy_from_slice(&len.to_le_bytes());
    record[8..].copy_from_slice(&(len ^ LENGTH_CHECK).to_le_bytes());
    file.write_all_at(&record, 0)?;
    file.sync_data()
}

/// The synced length recorded at `path`: `None` if there is no record
/// (an upload from before records existed); an error if it is unreadable.
fn read_length(path: &Path) -> io::Result<Option<u64>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    match (word(0), word(8)) {
        (Some(len), Some(check)) if len ^ LENGTH_CHECK == check => Ok(Some(len)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a length record", path.display()),
        )),
    }
}

/// The bytes of an upload in progress that are durably held: the recorded
/// synced length (never more than the file holds), or the file's length
/// for an upload without a record. With `adopt` (this process wrote the
/// bytes past the record), they are synced and recorded, then counted.
fn held_length(data: &Path, length: &Path, adopt: bool) -> io::Result<u64> {
    let file_len = fs::metadata(data)?.len();
    Ok(match read_length(length)? {
        Some(len) if len < file_len && adopt => {
            let synced = sync_data(
                &OpenOptions::new().write(true).open(data)?,
                Some(&OpenOptions::new().write(true).open(length)?),
            )?;
            synced.min(file_len)
        }
        Some(len) => len.min(file_len),
        None => file_len,
    })
}

fn read_record(path: &Path) -> io::Result<UploadRecord> {
    let bytes = fs::read(path)?;
    layout::parse_record(&path.display().to_string(), &bytes)
}

/// A read of the next [`READ_CHUNK`] bytes in the blocking pool, which
/// hands the file back with them.
type NextRead = tokio::task::JoinHandle<io::Result<(Bytes, io::Take<File>)>>;

/// Starts reading the next chunk of `file`.
fn read_next(mut file: io::Take<File>) -> NextRead {
    spawn_blocking(move || {
        // `read_to_end` fills the spare capacity without zeroing it first.
        let mut buffer = Vec::with_capacity(READ_CHUNK);
        (&mut file)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut buffer)?;
        Ok((Bytes::from(buffer), file))
    })
}

/// Streams `range` of the file at `path`, reading in the blocking pool one
/// chunk ahead: the next read runs while the connection sends this one.
async fn stream_range(path: PathBuf, range: Range<u64>) -> Result<ByteStream, StorageError> {
    let file = blocking(move || {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(range.start))?;
        Ok(file.take(range.end.saturating_sub(range.start)))
    })
    .await?;
    let stream = futures_util::stream::unfold(Some(read_next(file)), |next| async move {
        let read = next?
            .await
            .map_err(io::Error::other)
            .and_then(|result| result);
        match read {
            Ok((bytes, _)) if bytes.is_empty() => None,
            Ok((bytes, file)) => Some((Ok(bytes), Some(read_next(file)))),
            Err(error) => Some((Err(error), None)),
        }
    });
    Ok(stream.boxed())
}

#[async_trait]
impl Storage for LocalDisk {
    async fn create(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let (data, length, path, json) = (
            self.data_path(record.id),
            self.length_path(record.id),
            self.record_path(record.id),
            to_json(record)?,
        );
        self.writers
            .io(move || {
                File::create(&data)?.sync_all()?;
                write_length(&File::create(&length)?, 0)?;
                // Its directory sync makes the three names durable.
                write_atomically(&path, &json)
            })
            .await
    }

    async fn put_record(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let (path, json) = (self.record_path(record.id), to_json(record)?);
        self.writers
            .io(move || write_atomically(&path, &json))
            .await
    }

    async fn load(&self, id: UploadId) -> Result<Stored, StorageError> {
        let this = self.clone();
        blocking(move || {
            let record = read_record(&this.record_path(id))?;
            let held = match &record.status {
                Status::Active => {
                    let adopt = this
                        .appended
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains(&id);
                    held_length(&this.data_path(id), &this.length_path(id), adopt)?
                }
                Status::Complete(info) => info.size,
                Status::Cancelled | Status::Expired => 0,
            };
            Ok(Stored { record, held })
        })
        .await
    }

    async fn probe(&self) -> Result<(), StorageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = self.uploads.join(format!(
            ".probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        self.writers
            .io(move || {
                let written = fs::write(&path, b"ok");
                let removed = fs::remove_file(&path);
                written.and(removed)
            })
            .await
    }

    async fn list(&self) -> Result<Vec<UploadRecord>, StorageError> {
        let uploads = self.uploads.clone();
        blocking(move || {
            let mut records = Vec::new();
            for entry in fs::read_dir(&uploads)? {
                let path = entry?.path();
                let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if UploadId::parse(stem).is_err() {
                    continue;
                }
                match read_record(&path) {
                    Ok(record) => records.push(record),
                    Err(error) => tracing::warn!(%error, path = %path.display(), "skipping unreadable upload record"),
                }
            }
            Ok(records)
        })
        .await
    }

    async fn append(&self, id: UploadId, offset: u64) -> Result<Box<dyn Append>, StorageError> {
        let (path, length_path) = (self.data_path(id), self.length_path(id));
        self.appended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        let (file, length) = blocking(move || {
            let file = OpenOptions::new().write(true).open(path)?;
            let length = match OpenOptions::new().write(true).open(&length_path) {
                Ok(length) => Some(length),
                Err(error) if error.kind() == io::ErrorKind::NotFound => None,
                Err(error) => return Err(error),
            };
            let len = file.metadata()?.len();
            if len > offset && length.is_some() {
                // Bytes past the synced length were never acknowledged
                // (written before a crash, or a zero-filled tail a power
                // cut left): cut them off before appending after `offset`.
                file.set_len(offset)?;
                file.sync_data()?;
            } else if len != offset {
                return Err(io::Error::other(format!(
                    "data holds {len} bytes, expected {offset}"
                )));
            }
            Ok((file, length))
        })
        .await?;
        Ok(Box::new(LocalAppend {
            file: Arc::new(file),
            length: length.map(Arc::new),
            position: offset,
            reserved: Some(offset),
            writers: self.writers.clone(),
        }))
    }

    async fn read(
        &self,
        record: &UploadRecord,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        stream_range(self.data_path(record.id), range).await
    }

    async fn publish(&self, record: &UploadRecord) -> Result<(), StorageError> {
        let Some(file) = record.file_key() else {
            return Ok(());
        };
        let dir = self.files_dir(&file);
        let (data, to) = (self.data_path(record.id), dir.join(file.name.as_str()));
        let temp = dir.join(format!(".{}.publish", record.id));
        let namespaced = !file.namespace.is_default();
        let spaces = self.spaces.clone();
        self.writers
            .io(move || {
                if namespaced && !dir.exists() {
                    fs::create_dir_all(&dir)?;
                    sync_dir(&spaces)?;
                    if let Some(root) = spaces.parent() {
                        sync_dir(root)?;
                    }
                }
                // A second link to the upload's data, renamed over the name:
                // `rename` replaces an older file of the same name atomically,
                // so readers see the old file or the new one, whole; and the
                // upload keeps its own bytes under its id whatever later
                // uploads publish under the same name.
                match fs::remove_file(&temp) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                fs::hard_link(data, &temp)?;
                fs::rename(&temp, to)?;
                sync_dir(&dir)
            })
            .await
    }

    async fn seal(&self, id: UploadId, _len: u64) -> Result<(), StorageError> {
        // Truncating to its own length releases what the appends reserved
        // past the end (ext4 frees preallocated blocks beyond EOF then).
        let data = self.data_path(id);
        self.writers
            .io(move || {
                let file = OpenOptions::new().write(true).open(data)?;
                file.set_len(file.metadata()?.len())
            })
            .await
    }

    async fn truncate(&self, id: UploadId, len: u64) -> Result<(), StorageError> {
        let (path, length) = (self.data_path(id), self.length_path(id));
        self.writers
            .io(move || {
                // The record first: it never counts more than the file holds.
                match OpenOptions::new().write(true).open(&length) {
                    Ok(length) => write_length(&length, len)?,
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
                let file = OpenOptions::new().write(true).open(path)?;
                file.set_len(len)?;
                file.sync_all()
            })
            .await
    }

    async fn discard(&self, id: UploadId) -> Result<(), StorageError> {
        let (data, length) = (self.data_path(id), self.length_path(id));
        self.appended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        let removed = move || {
            match fs::remove_file(length) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            fs::remove_file(data)
        };
        match self.writers.io(removed).await {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn remove_record(&self, id: UploadId) -> Result<(), StorageError> {
        let (path, length, dir) = (
            self.record_path(id),
            self.length_path(id),
            self.uploads.clone(),
        );
        self.writers
            .io(move || {
                let _ = fs::remove_file(length);
                remove_durably(&path, &dir)
            })
            .await
    }

    async fn unpublish(&self, file: &FileKey) -> Result<(), StorageError> {
        let dir = self.files_dir(file);
        let path = dir.join(file.name.as_str());
        self.writers.io(move || remove_durably(&path, &dir)).await
    }
}

fn to_json(record: &UploadRecord) -> Result<Vec<u8>, StorageError> {
    Ok(layout::record_json(record)?.into_bytes())
}

/// An open data file; writes are positional, so there is no shared cursor.
#[derive(Debug)]
struct LocalAppend {
    file: Arc<File>,
    /// The synced-length record (`None` for an upload from before records).
    length: Option<Arc<File>>,
    position: u64,
    /// Bytes reserved with `fallocate` (beyond the file's length, which
    /// stays the bytes written); `None` where the file system cannot.
    reserved: Option<u64>,
    writers: Writers,
}

/// `fdatasync`, timed, then the synced length recorded (and synced);
/// returns the durable length.
fn sync_data(file: &File, length: Option<&File>) -> io::Result<u64> {
    let started = std::time::Instant::now();
    file.sync_data()?;
    let len = file.metadata()?.len();
    if let Some(length) = length {
        write_length(length, len)?;
    }
    metrics::histogram!(crate::metric::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(len)
}

/// Starts writing `len` bytes at `offset` back to the disk now, without
/// waiting: the `fdatasync` that acknowledges them then finds most of them
/// already written, instead of starting the whole request's writeback when
/// the body ends (the client waits for that answer before it sends on).
/// `POSIX_FADV_DONTNEED` does that on Linux (it starts writeback of the
/// dirty range, then drops what is clean) and keeps upload bytes from
/// crowding the page cache; `sync_file_range` would need `unsafe`. Advice,
/// so a failure changes nothing.
fn write_back(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

/// Preallocation grows with the upload, between these bounds. A reserved
/// extent makes each `fdatasync` cheaper (no block allocation to journal:
/// about a quarter faster per 8 MiB on ext4 here); publication releases
/// what the upload did not use.
const RESERVE_MIN: u64 = 1 << 20;
const RESERVE_MAX: u64 = 64 << 20;

/// Reserves disk up to past `end` (keeping the file's length); `None` once
/// the file system says it cannot. A full disk is not an error here: the
/// write that needs the room reports it.
fn reserve(file: &File, reserved: u64, end: u64) -> Option<u64> {
    if end <= reserved {
        return Some(reserved);
    }
    let want = end.saturating_add(end.clamp(RESERVE_MIN, RESERVE_MAX));
    match rustix::fs::fallocate(
        file,
        rustix::fs::FallocateFlags::KEEP_SIZE,
        reserved,
        want - reserved,
    ) {
        Ok(()) => Some(want),
        Err(rustix::io::Errno::NOSPC) => Some(reserved),
        Err(_) => None,
    }
}

impl LocalAppend {
    /// Writes `chunks` at `position` (reserving room first); returns the
    /// new position and reservation. Blocking.
    fn write_at(
        file: &File,
        mut position: u64,
        reserved: Option<u64>,
        chunks: &[Bytes],
    ) -> io::Result<(u64, Option<u64>)> {
        let end = position + chunks.iter().map(|chunk| chunk.len() as u64).sum::<u64>();
        let reserved = reserved.and_then(|reserved| reserve(file, reserved, end));
        let start = position;
        for chunk in chunks {
            file.write_all_at(chunk, position)?;
            position += chunk.len() as u64;
        }
        write_back(file, start, position - start);
        Ok((position, reserved))
    }
}

#[async_trait]
impl Append for LocalAppend {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<(), StorageError> {
        let (file, position, reserved) = (Arc::clone(&self.file), self.position, self.reserved);
        let (position, reserved) = self
            .writers
            .io(move || LocalAppend::write_at(&file, position, reserved, &chunks))
            .await?;
        self.position = position;
        self.reserved = reserved;
        Ok(())
    }

    async fn sync(&mut self) -> Result<u64, StorageError> {
        let (file, length) = (Arc::clone(&self.file), self.length.clone());
        self.writers
            .io(move || sync_data(&file, length.as_deref()))
            .await
    }

    async fn write_then_sync(
        &mut self,
        chunks: Vec<Bytes>,
    ) -> (Result<(), StorageError>, Result<u64, StorageError>) {
        let (file, position, reserved) = (Arc::clone(&self.file), self.position, self.reserved);
        let length = self.length.clone();
        let outcome = self
            .writers
            .run(move || {
                let written = LocalAppend::write_at(&file, position, reserved, &chunks);
                (written, sync_data(&file, length.as_deref()))
            })
            .await;
        let (written, synced) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                let again = StorageError::Io(io::Error::other(error.to_string()));
                return (Err(error), Err(again));
            }
        };
        let written = written.map(|(position, reserved)| {
            self.position = position;
            self.reserved = reserved;
        });
        (
            written.map_err(StorageError::from),
            synced.map_err(StorageError::from),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A power cut in the zero-tail mode leaves `ID.bin` longer than what
    /// was synced, the rest zeros: a new process (no `appended` memory)
    /// trusts `ID.len`, and the next append cuts the zeros off.
    #[tokio::test]
    async fn a_zero_tail_past_the_synced_length_is_not_held_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = UploadRecord {
            id: UploadId::from_bytes([7; 16]),
            namespace: Default::default(),
            name: None,
            total: Some(100),
            content_type: None,
            metadata: Default::default(),
            concat: None,
            staged_from: None,
            digests: crate::DigestSet::NONE,
            object: None,
            created_at: 1,
            created_ns: None,
            updated_at: 1,
            status: Status::Active,
        };
        let disk = LocalDisk::open(dir.path()).expect("open");
        disk.create(&record).await.expect("create");
        let mut append = disk.append(record.id, 0).await.expect("append");
        let (written, synced) = append
            .write_then_sync(vec![Bytes::from_static(b"synced")])
            .await;
        written.expect("write");
        assert_eq!(synced.expect("sync"), 6);
        drop(append);
        // What the power cut left: the new size, zeros for the data.
        let data = dir.path().join(format!("uploads/{}.bin", record.id));
        OpenOptions::new()
            .write(true)
            .open(&data)
            .expect("data")
            .set_len(10)
            .expect("grow");
        let restarted = LocalDisk::open(dir.path()).expect("open again");
        assert_eq!(restarted.load(record.id).await.expect("load").held, 6);
        let mut append = restarted.append(record.id, 6).await.expect("append");
        let (written, synced) = append
            .write_then_sync(vec![Bytes::from_static(b"+more")])
            .await;
        written.expect("write");
        assert_eq!(synced.expect("sync"), 11);
        assert_eq!(fs::read(&data).expect("read"), b"synced+more");
    }

    #[tokio::test]
    async fn a_writer_permit_is_held_until_its_work_ends_even_if_the_caller_is_dropped() {
        let writers = Writers(Arc::new(Semaphore::new(1)));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let caller = tokio::spawn({
            let writers = writers.clone();
            async move { writers.run(move || released.recv().is_ok()).await }
        });
        // The work holds the only permit, so a second job waits for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller.abort();
        let _ = caller.await;
        let second = tokio::spawn({
            let writers = writers.clone();
            async move { writers.run(|| ()).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "the dropped caller's permit was freed early"
        );
        release.send(()).expect("the work waits");
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the permit comes back when the work ends")
            .expect("task")
            .expect("runs");
    }
}
