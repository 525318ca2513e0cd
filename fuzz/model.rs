//! Differential check of the upload engine against a plain in-memory model,
//! shared by the fuzz target `engine_model` (`fuzz/fuzz_targets/`) and the
//! replay and property test `crates/core/tests/model.rs`.
//!
//! Both include this file with `#[path = ...] mod model;`. An input is
//! decoded with `arbitrary` into a bounded sequence of [`Op`]s (create,
//! append at a right or wrong offset, checksummed appends that pass or
//! fail, bodies that fail half-way or carry too much, set_total, finalize,
//! cancel, concatenate, and a restart of the engine over the same
//! directory). Each op runs against `tenax_core::Engine` on `LocalDisk` in
//! a temporary directory and against [`Model`]; after every op every
//! upload's status, offset, total, digests and bytes (read back through
//! `Storage::read`) must agree, and so must the published names. Any
//! disagreement panics.
//!
//! The harness plays the part of a dialect adapter where the engine leaves
//! a rule to it: an append claims an offset; beyond what is held it is
//! refused, below it the held prefix is skipped (the seed dialect's
//! resend) once it matches the bytes held there, and a known total bounds
//! it. Final uploads of a concatenation
//! take no appends (as in tus).

// The fuzz target and the test each use part of this file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use sha2::{Digest as _, Sha256};
use tenax_core::storage::LocalDisk;
use tenax_core::{
    AppendOptions, AppendOutcome, ChunkCheck, Concat, Engine, EngineConfig, Error, FileKey,
    FileName, Interruption, Namespace, NewUpload, Status, UploadId,
};

/// At most this many ops per input, and this many uploads per run.
const MAX_OPS: usize = 48;
const MAX_UPLOADS: usize = 12;
/// Names that completed uploads are published under (few, so they collide).
const NAMES: [&str; 2] = ["a.bin", "b.bin"];

/// One step of a run.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum Op {
    /// Creates an upload, with or without a total, a name, as a tus part.
    Create {
        total: Option<u16>,
        name: Option<bool>,
        partial: bool,
    },
    /// Appends `len` bytes claiming the offset `held + delta`.
    Append { upload: u8, delta: i8, body: Body },
    /// A checksummed append whose checksum matches or not.
    AppendChecked { upload: u8, body: Body, valid: bool },
    /// An append whose request is dropped half-way (the client vanished
    /// and the server dropped the request's future): its body delivers its
    /// frames, then nothing, and the append is abandoned after a moment.
    /// What it leaves must be a prefix of what it was sent.
    AppendDropped { upload: u8, body: Body },
    /// Records the total (`held + delta`, at least 0) if none is known.
    SetTotal { upload: u8, delta: i16 },
    /// Finalises the upload.
    Finalize { upload: u8 },
    /// Cancels the upload.
    Cancel { upload: u8 },
    /// Concatenates uploads (by index) into a new final upload.
    Concatenate {
        parts: Vec<u8>,
        allow_unfinished: bool,
    },
    /// Drops the engine and opens a new one over the same directory.
    Restart,
}

/// A request body: `len` bytes (×40 when `big`, to cross the engine's
/// 1 MiB batches) in frames of `frame` bytes, optionally failing after
/// `cut` bytes.
#[derive(Arbitrary, Debug, Clone)]
pub(crate) struct Body {
    len: u16,
    big: bool,
    frame: u16,
    cut: Option<u16>,
    seed: u32,
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        let len = usize::from(self.len) * if self.big { 40 } else { 1 };
        let mut state = u64::from(self.seed) | 1 << 40;
        (0..len)
            .map(|_| {
                // xorshift64: cheap bytes that differ between bodies.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// The frames the body delivers: `Ok` pieces, then an error when cut.
    fn frames(&self) -> Vec<Result<Bytes, String>> {
        let data = self.bytes();
        let data = match self.cut {
            Some(cut) => {
                &data[..data
                    .len()
                    .min(usize::from(cut) * if self.big { 40 } else { 1 })]
            }
            None => &data[..],
        };
        let frame = usize::from(self.frame).max(1) * if self.big { 64 } else { 1 };
        let mut frames: Vec<Result<Bytes, String>> = data
            .chunks(frame)
            .map(|piece| Ok(Bytes::copy_from_slice(piece)))
            .collect();
        if self.cut.is_some() {
            frames.push(Err("connection reset".to_owned()));
        }
        frames
    }
}

/// Decodes the ops of an input.
pub(crate) fn ops(data: &[u8]) -> Vec<Op> {
    let mut input = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !input.is_empty() {
        match Op::arbitrary(&mut input) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Runs the ops of an input on a fresh current-thread runtime, in a
/// temporary directory (on `/dev/shm` when there is one: fsyncs are free).
pub(crate) fn run_bytes(data: &[u8]) {
    let ops = ops(data);
    if ops.is_empty() {
        return;
    }
    run(&ops);
}

/// Runs `ops`; panics on the first disagreement.
pub(crate) fn run(ops: &[Op]) {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("tenax-model")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("tenax-model").tempdir()
    }
    .expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut harness = Harness {
            dir: dir.path().to_owned(),
            engine: open(dir.path()).await,
            model: Model::default(),
        };
        for (step, op) in ops.iter().enumerate() {
            if std::env::var_os("TENAX_MODEL_TRACE").is_some() {
                eprintln!("step {step}: {op:?}");
            }
            harness.apply(op).await;
            harness.compare(step, op).await;
        }
    });
}

async fn open(dir: &Path) -> Engine {
    Engine::open(
        Arc::new(LocalDisk::open(dir).expect("data directory")),
        EngineConfig::default(),
    )
    .await
    .expect("engine opens")
}

/// What the model knows of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MStatus {
    Active,
    Complete { size: u64, sha256: String },
    Cancelled,
}

#[derive(Debug, Clone)]
struct MUpload {
    id: UploadId,
    name: Option<&'static str>,
    total: Option<u64>,
    data: Vec<u8>,
    status: MStatus,
    concat: Option<MConcat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MConcat {
    Partial,
    Final(Vec<usize>),
}

/// The plain model: every upload's bytes in a vector, and which upload
/// each name shows.
#[derive(Debug, Default)]
struct Model {
    uploads: Vec<MUpload>,
    published: BTreeMap<&'static str, usize>,
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The engine's outcome of feeding `frames` with `skip` and `limit`, by the
/// contract of `Lease::append`: `None` when the skipped bytes differ from
/// `overlap`, the bytes held where they would go (nothing is written then).
fn expected_append(
    frames: &[Result<Bytes, String>],
    skip: u64,
    limit: u64,
    overlap: &[u8],
) -> Option<(Vec<u8>, AppendOutcome)> {
    let (mut to_skip, mut room) = (skip, limit);
    let mut compared = 0usize;
    let mut kept = Vec::new();
    let mut received = 0u64;
    let mut interruption = None;
    for frame in frames {
        match frame {
            Err(error) => {
                interruption = Some(Interruption::Body(error.clone()));
                break;
            }
            Ok(bytes) => {
                received += bytes.len() as u64;
                let skipped = to_skip.min(bytes.len() as u64);
                to_skip -= skipped;
                let held = &overlap[compared..compared + skipped as usize];
                if bytes[..skipped as usize] != *held {
                    return None;
                }
                compared += skipped as usize;
                let mut rest = &bytes[skipped as usize..];
                let over = rest.len() as u64 > room;
                if over {
                    rest = &rest[..room as usize];
                }
                room -= rest.len() as u64;
                kept.extend_from_slice(rest);
                if over {
                    interruption = Some(Interruption::Overrun);
                    break;
                }
            }
        }
    }
    let outcome = AppendOutcome {
        written: kept.len() as u64,
        received,
        interruption,
    };
    Some((kept, outcome))
}

/// A chunk check with a fixed verdict that keeps what it was fed.
struct Check {
    fed: Arc<Mutex<Vec<u8>>>,
    valid: bool,
}

impl ChunkCheck for Check {
    fn update(&mut self, bytes: &[u8]) {
        self.fed
            .lock()
            .expect("check lock")
            .extend_from_slice(bytes);
    }
    fn verify(self: Box<Self>) -> Result<(), Error> {
        if self.valid {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch)
        }
    }
}

struct Harness {
    dir: std::path::PathBuf,
    engine: Engine,
    model: Model,
}

/// How an engine call may end, compared by kind.
fn kind(error: &Error) -> String {
    match error {
        Error::Incomplete { held, total } => format!("incomplete {held}/{total}"),
        Error::NotConcatenable(id) => format!("not concatenable {id}"),
        Error::Storage(error) => panic!("storage failed: {error}"),
        other => format!("{other}"),
    }
}

impl Harness {
    fn pick(&self, upload: u8) -> Option<usize> {
        let count = self.model.uploads.len();
        (count > 0).then(|| usize::from(upload) % count)
    }

    /// The error the engine must give when leasing upload `index`, if any.
    fn lease_error(&self, index: usize) -> Option<String> {
        match self.model.uploads[index].status {
            MStatus::Cancelled => Some(kind(&Error::Gone)),
            _ => None,
        }
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Create {
                total,
                name,
                partial,
            } => {
                if self.model.uploads.len() >= MAX_UPLOADS {
                    return;
                }
                let name = name.map(|second| NAMES[usize::from(second)]);
                let new = NewUpload {
                    name: name.map(|name| FileName::new(name).expect("valid name")),
                    total: total.map(u64::from),
                    concat: partial.then_some(Concat::Partial),
                    ..NewUpload::default()
                };
                let id = self.engine.create(new).await.expect("create");
                self.model.uploads.push(MUpload {
                    id,
                    name,
                    total: total.map(u64::from),
                    data: Vec::new(),
                    status: MStatus::Active,
                    concat: partial.then_some(MConcat::Partial),
                });
            }
            Op::Append {
                upload,
                delta,
                body,
            } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                if matches!(self.model.uploads[index].concat, Some(MConcat::Final(_))) {
                    return;
                }
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                let upload = &mut self.model.uploads[index];
                let held = upload.data.len() as u64;
                assert_eq!(lease.held(), held, "held at lease");
                let offset = held.saturating_add_signed(i64::from(*delta));
                if offset > held {
                    // The adapter refuses a gap without calling the engine.
                    return;
                }
                let skip = held - offset;
                let limit = upload
                    .total
                    .map_or(u64::MAX, |total| total.saturating_sub(held));
                let frames = body.frames();
                let result = lease
                    .append(
                        stream::iter(frames.clone()),
                        AppendOptions::up_to(limit).skip(skip),
                    )
                    .await;
                let overlap = &upload.data[offset as usize..];
                let expected = expected_append(&frames, skip, limit, overlap);
                match (&upload.status, result) {
                    (MStatus::Active, Ok(outcome)) => {
                        let (kept, expected) = expected.expect("a mismatched resend was taken");
                        assert_eq!(outcome, expected, "append outcome");
                        upload.data.extend_from_slice(&kept);
                    }
                    (MStatus::Active, Err(Error::OverlapMismatch { .. })) => {
                        assert!(expected.is_none(), "a matching resend was refused");
                    }
                    (MStatus::Complete { .. }, Err(Error::Complete)) => {}
                    (status, result) => panic!("append on {status:?}: {result:?}"),
                }
                assert_eq!(lease.held(), upload.data.len() as u64, "held after append");
            }
            Op::AppendChecked {
                upload,
                body,
                valid,
            } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                if matches!(self.model.uploads[index].concat, Some(MConcat::Final(_))) {
                    return;
                }
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                let upload = &mut self.model.uploads[index];
                let held = upload.data.len() as u64;
                let limit = upload
                    .total
                    .map_or(u64::MAX, |total| total.saturating_sub(held));
                let frames = body.frames();
                let fed = Arc::new(Mutex::new(Vec::new()));
                let check = Box::new(Check {
                    fed: Arc::clone(&fed),
                    valid: *valid,
                });
                let result = lease
                    .append(
                        stream::iter(frames.clone()),
                        AppendOptions::up_to(limit).check(check),
                    )
                    .await;
                match (&upload.status, result) {
                    (MStatus::Active, result) => {
                        let (kept, expected) =
                            expected_append(&frames, 0, limit, &[]).expect("nothing to compare");
                        assert_eq!(
                            *fed.lock().expect("check lock"),
                            kept,
                            "the check saw other bytes than the append"
                        );
                        let whole = expected.interruption.is_none();
                        match result {
                            Ok(outcome) if whole && *valid => {
                                assert_eq!(outcome, expected, "checked append outcome");
                                upload.data.extend_from_slice(&kept);
                            }
                            Ok(outcome) if !whole => assert_eq!(
                                outcome,
                                AppendOutcome {
                                    written: 0,
                                    ..expected
                                },
                                "cut checked append"
                            ),
                            Err(Error::ChecksumMismatch) if whole && !*valid => {}
                            other => {
                                panic!("checked append: {other:?} (whole {whole}, valid {valid})")
                            }
                        }
                    }
                    (MStatus::Complete { .. }, Err(Error::Complete)) => {}
                    (status, result) => panic!("checked append on {status:?}: {result:?}"),
                }
                assert_eq!(
                    lease.held(),
                    upload.data.len() as u64,
                    "held after checked append"
                );
            }
            Op::AppendDropped { upload, body } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                if matches!(self.model.uploads[index].concat, Some(MConcat::Final(_))) {
                    return;
                }
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                let upload = &mut self.model.uploads[index];
                let held = upload.data.len() as u64;
                let limit = upload
                    .total
                    .map_or(u64::MAX, |total| total.saturating_sub(held));
                let frames: Vec<Result<Bytes, String>> =
                    body.frames().into_iter().filter(Result::is_ok).collect();
                let (kept, expected) =
                    expected_append(&frames, 0, limit, &[]).expect("nothing to compare");
                let stream = stream::iter(frames).chain(stream::pending());
                let result = tokio::time::timeout(
                    Duration::from_millis(5),
                    lease.append(stream, AppendOptions::up_to(limit)),
                )
                .await;
                drop(lease);
                match (&upload.status, result) {
                    // Abandoned: some prefix of what arrived may be kept.
                    (MStatus::Active, Err(_elapsed)) => {
                        let Some(lease) = self.lease(index).await else {
                            unreachable!("an active upload is leased");
                        };
                        let upload = &mut self.model.uploads[index];
                        let now = lease.held();
                        assert!(
                            now >= held && now - held <= kept.len() as u64,
                            "after a dropped append: held {now}, was {held}, sent {}",
                            kept.len()
                        );
                        upload
                            .data
                            .extend_from_slice(&kept[..(now - held) as usize]);
                    }
                    // The body carried more than the total allows: it ended.
                    (MStatus::Active, Ok(Ok(outcome))) => {
                        assert_eq!(
                            (outcome.written, outcome.interruption.clone()),
                            (expected.written, Some(Interruption::Overrun)),
                            "dropped append ended by itself"
                        );
                        upload.data.extend_from_slice(&kept);
                    }
                    (MStatus::Complete { .. }, Ok(Err(Error::Complete))) => {}
                    (status, result) => panic!("dropped append on {status:?}: {result:?}"),
                }
            }
            Op::SetTotal { upload, delta } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                if matches!(self.model.uploads[index].concat, Some(MConcat::Final(_))) {
                    return;
                }
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                let upload = &mut self.model.uploads[index];
                let total = (upload.data.len() as u64).saturating_add_signed(i64::from(*delta));
                lease.set_total(total).await.expect("set_total");
                if upload.total.is_none() {
                    upload.total = Some(total);
                }
            }
            Op::Finalize { upload } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                if matches!(self.model.uploads[index].concat, Some(MConcat::Final(_))) {
                    return;
                }
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                let result = lease.finalize().await;
                drop(lease);
                let upload = &mut self.model.uploads[index];
                let held = upload.data.len() as u64;
                match (&upload.status, result) {
                    (MStatus::Complete { size, sha256 }, Ok(info)) => {
                        assert_eq!((info.size, &info.sha256), (*size, sha256), "finalize again");
                    }
                    (MStatus::Active, Err(Error::Incomplete { held: h, total: t })) => {
                        assert_eq!((Some(t), h), (upload.total, held), "incomplete");
                        assert_ne!(upload.total, Some(held), "incomplete at its total");
                    }
                    (MStatus::Active, Ok(info)) => {
                        assert!(
                            upload.total.is_none_or(|total| total == held),
                            "finalized short"
                        );
                        let sha256 = sha256_hex(&upload.data);
                        assert_eq!((info.size, &info.sha256), (held, &sha256), "final digests");
                        upload.status = MStatus::Complete { size: held, sha256 };
                        upload.total = Some(held);
                        if let Some(name) = upload.name {
                            self.model.published.insert(name, index);
                        }
                        self.part_completed().await;
                    }
                    (status, result) => panic!("finalize on {status:?}: {result:?}"),
                }
            }
            Op::Cancel { upload } => {
                let Some(index) = self.pick(*upload) else {
                    return;
                };
                let Some(mut lease) = self.lease(index).await else {
                    return;
                };
                lease.cancel().await.expect("cancel");
                let upload = &mut self.model.uploads[index];
                upload.status = MStatus::Cancelled;
                upload.data.clear();
                if let Some(name) = upload.name
                    && self.model.published.get(name) == Some(&index)
                {
                    self.model.published.remove(name);
                }
            }
            Op::Concatenate {
                parts,
                allow_unfinished,
            } => {
                if self.model.uploads.is_empty() || self.model.uploads.len() >= MAX_UPLOADS {
                    return;
                }
                let parts: Vec<usize> = parts
                    .iter()
                    .take(4)
                    .map(|part| usize::from(*part) % self.model.uploads.len())
                    .collect();
                let ids = parts
                    .iter()
                    .map(|&part| self.model.uploads[part].id)
                    .collect();
                let result = self
                    .engine
                    .concatenate(ids, NewUpload::default(), *allow_unfinished)
                    .await;
                // The model's verdict: a part named twice, else the first
                // part that does not fit decides.
                let mut expected = Ok(());
                let mut total = Some(0u64);
                let repeated = parts
                    .iter()
                    .enumerate()
                    .find(|(at, part)| parts[..*at].contains(part));
                if let Some((_, &part)) = repeated {
                    expected = Err(kind(&Error::RepeatedPart(self.model.uploads[part].id)));
                }
                for &part in parts.iter().filter(|_| expected.is_ok()) {
                    let upload = &self.model.uploads[part];
                    match (&upload.status, &upload.concat) {
                        (MStatus::Complete { size, .. }, Some(MConcat::Partial)) => {
                            total = total.map(|total| total + size);
                        }
                        (MStatus::Active, Some(MConcat::Partial)) if *allow_unfinished => {
                            total = total.zip(upload.total).map(|(total, size)| total + size);
                        }
                        (MStatus::Cancelled, _) => {
                            expected = Err(kind(&Error::Gone));
                            break;
                        }
                        _ => {
                            expected = Err(kind(&Error::NotConcatenable(upload.id)));
                            break;
                        }
                    }
                }
                match (expected, result) {
                    (Ok(()), Ok(id)) => {
                        self.model.uploads.push(MUpload {
                            id,
                            name: None,
                            total,
                            data: Vec::new(),
                            status: MStatus::Active,
                            concat: Some(MConcat::Final(parts)),
                        });
                        self.part_completed().await;
                    }
                    (Err(expected), Err(error)) => {
                        assert_eq!(kind(&error), expected, "concatenate")
                    }
                    (expected, result) => panic!("concatenate: {result:?}, model {expected:?}"),
                }
            }
            Op::Restart => {
                self.engine.shutdown();
                self.engine = open(&self.dir).await;
                // Finals whose parts completed are assembled by the new engine.
                self.part_completed().await;
            }
        }
    }

    /// Leases upload `index`; checks a refusal against the model.
    async fn lease(&self, index: usize) -> Option<tenax_core::Lease> {
        let id = self.model.uploads[index].id;
        let result = self.engine.lease(id).await;
        match (self.lease_error(index), result) {
            (None, Ok(lease)) => Some(lease),
            (Some(expected), Err(error)) => {
                assert_eq!(kind(&error), expected, "lease refused");
                None
            }
            (expected, Ok(_)) => panic!("lease granted, model says {expected:?}"),
            (_, Err(error)) => panic!("lease refused: {error}"),
        }
    }

    /// Completes in the model every final upload whose parts are all
    /// complete, and waits (bounded) for the engine's assembly to finish.
    async fn part_completed(&mut self) {
        let ready: Vec<usize> = (0..self.model.uploads.len())
            .filter(|&index| {
                let upload = &self.model.uploads[index];
                match (&upload.status, &upload.concat) {
                    (MStatus::Active, Some(MConcat::Final(parts))) => parts.iter().all(|&part| {
                        matches!(self.model.uploads[part].status, MStatus::Complete { .. })
                    }),
                    _ => false,
                }
            })
            .collect();
        for index in ready {
            let MConcat::Final(parts) = self.model.uploads[index].concat.clone().expect("final")
            else {
                unreachable!("a final upload");
            };
            let data: Vec<u8> = parts
                .iter()
                .flat_map(|&part| self.model.uploads[part].data.clone())
                .collect();
            let sha256 = sha256_hex(&data);
            let upload = &mut self.model.uploads[index];
            upload.status = MStatus::Complete {
                size: data.len() as u64,
                sha256,
            };
            upload.total = Some(data.len() as u64);
            upload.data = data;
            let id = upload.id;
            // Assembly runs in a task of its own: give it time, bounded.
            let mut waited = 0;
            loop {
                let snapshot = self.engine.peek(id).await.expect("peek final");
                if matches!(snapshot.record.status, Status::Complete(_)) {
                    break;
                }
                assert!(waited < 2000, "final upload {id} never assembled");
                waited += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Every upload and every name must agree with the model.
    async fn compare(&self, step: usize, op: &Op) {
        let storage = self.engine.storage();
        for (index, upload) in self.model.uploads.iter().enumerate() {
            let at = format!("step {step} ({op:?}), upload {index}");
            let snapshot = self.engine.peek(upload.id).await.expect("peek");
            if std::env::var_os("TENAX_MODEL_TRACE").is_some() {
                eprintln!(
                    "  upload {index}: model {} {:?} / engine {} {:?} (total {:?})",
                    upload.data.len(),
                    upload.status,
                    snapshot.held,
                    snapshot.record.status,
                    snapshot.record.total
                );
            }
            let record = &snapshot.record;
            assert_eq!(record.total, upload.total, "{at}: total");
            match (&upload.status, &record.status) {
                (MStatus::Active, Status::Active) | (MStatus::Cancelled, Status::Cancelled) => {}
                (MStatus::Complete { size, sha256 }, Status::Complete(info)) => {
                    assert_eq!((info.size, &info.sha256), (*size, sha256), "{at}: digests");
                }
                (model, engine) => panic!("{at}: status {engine:?}, model {model:?}"),
            }
            if upload.status == MStatus::Cancelled {
                continue;
            }
            assert_eq!(snapshot.held, upload.data.len() as u64, "{at}: held");
            let mut read = Vec::with_capacity(upload.data.len());
            let mut body = storage.read(record, 0..snapshot.held).await.expect("read");
            while let Some(piece) = body.next().await {
                read.extend_from_slice(&piece.expect("read piece"));
            }
            assert!(read == upload.data, "{at}: bytes differ");
        }
        for name in NAMES {
            let shown = self
                .engine
                .published(&FileKey {
                    namespace: Namespace::default(),
                    name: FileName::new(name).expect("valid name"),
                })
                .await
                .ok()
                .map(|snapshot| snapshot.record.id);
            let model = self
                .model
                .published
                .get(name)
                .map(|&index| self.model.uploads[index].id);
            assert_eq!(shown, model, "step {step} ({op:?}): {name} shows");
        }
    }
}
