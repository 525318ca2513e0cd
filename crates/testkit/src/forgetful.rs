//! A FUSE file system that forgets what a power cut would lose.
//!
//! [`ForgetfulFs`] mounts a file system (through `/dev/fuse`, with the
//! `fuser` crate; needs root) whose files' bytes live in plain files of a
//! backing directory, one per inode, and whose names live in memory. Every
//! operation is passed through and behaves as on any local file system,
//! but the file system also keeps the *durable image*: what a disk would
//! still hold after a power cut. A power cut ([`ForgetfulFs::cut`], then
//! [`ForgetfulFs::restore`]) throws away everything that is not in it.
//!
//! # The model
//!
//! It is the strict POSIX model a program may rely on, no more:
//!
//! * **File data and size** are durable once the file is `fsync`ed or
//!   `fdatasync`ed (through any descriptor). Until then a write or a
//!   truncation is only in the live image. The durable image of each file
//!   is a shadow copy (`durable/INO` in the backing directory) to which an
//!   `fsync` copies the ranges written since the last one (tracked as a set
//!   of dirty ranges) and the length.
//! * **Names** (`create`, `mknod`, `mkdir`, `link`, `rename`, `unlink`,
//!   `rmdir`) are durable once their directory is `fsync`ed: each directory
//!   has a live list of entries and a durable one, and `fsync` of the
//!   directory copies the live list into the durable one. A rename between
//!   two directories needs both synced (with only the target synced, the
//!   file is found under both names after a cut, as on a real disk that
//!   wrote one directory block). A new file's name is *not* made durable
//!   by an `fsync` of the file, nor a directory's own name by an `fsync` of
//!   that directory: the parent must be synced.
//! * At a cut, in [`Loss::Unsynced`] mode every file becomes its durable
//!   image and every directory its durable list. In the harsher
//!   [`Loss::ZeroTail`] mode (ext4 `data=writeback`, delayed allocation: the
//!   journal committed the new size, the data blocks never reached the
//!   disk) a file whose live size was larger than its durable one keeps the
//!   live size, the bytes past the durable length reading as zeros;
//!   overwritten bytes within the durable length keep their synced content.
//! * Inodes that no durable name reaches after a cut are dropped. Inodes
//!   unlinked while live keep their backing file until then.
//!
//! What it does not model: `sync`/`syncfs` (not FUSE operations), `O_SYNC`
//! and `O_DSYNC` (tenax does not use them), torn writes within a sector,
//! reordering of metadata between directories beyond the above, symbolic
//! links, extended attributes and locks (the kernel keeps `flock` locks
//! locally).
//!
//! # A cut
//!
//! [`ForgetfulFs::cut`] makes every later operation fail with `EIO`: the
//! programs using it see a dead disk and can make nothing more durable.
//! The test then kills them (SIGKILL), and [`ForgetfulFs::restore`]
//! unmounts, rolls every file and directory back to the durable image
//! (which becomes the new live image), and mounts again (a fresh mount, so
//! the kernel's caches of the lost state go with the old one).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// The environment variable that makes FUSE-based tests fail, rather than
/// skip, when a forgetful file system cannot be mounted (`scripts/test`
/// sets it as root).
pub const REQUIRED_VAR: &str = "TENAX_TEST_FUSE";

/// What a power cut loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Every file's data and size and every directory's names go back to
    /// what was last synced.
    Unsynced,
    /// Like [`Loss::Unsynced`], but a file that had grown since its last
    /// sync keeps its new size, the unsynced bytes reading as zeros.
    ZeroTail,
}

/// What a [`ForgetfulFs::restore`] threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Files whose content or size changed at the cut.
    pub files: u64,
    /// Bytes written but not synced that were dropped or zeroed (an upper
    /// bound: a dirty range counts whole).
    pub bytes: u64,
    /// Directory entries added, removed or replaced that the cut undid.
    pub names: u64,
}

/// Counters of the operations that make things durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// `fsync`/`fdatasync` of files.
    pub files: u64,
    /// `fsync` of directories.
    pub dirs: u64,
}

/// The answer a test gives when FUSE is unavailable: `Ok(None)` to skip
/// (with the reason printed), or a panic when [`REQUIRED_VAR`] is set.
pub fn mount_or_skip(test: &str) -> Option<ForgetfulFs> {
    match ForgetfulFs::mount() {
        Ok(fs) => Some(fs),
        Err(error) => {
            if std::env::var_os(REQUIRED_VAR).is_some() {
                panic!("{test}: {REQUIRED_VAR} is set but no forgetful file system: {error}");
            }
            eprintln!("{test}: skipped, no forgetful file system (FUSE, as root): {error}");
            None
        }
    }
}

/// A mounted forgetful file system (see the module documentation).
/// Dropping it unmounts it and removes its directories.
#[derive(Debug)]
pub struct ForgetfulFs {
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    /// The FUSE connection's number (the mount's device number), for
    /// `/sys/fs/fuse/connections/N/abort`.
    connection: Option<u64>,
    _dir: tempfile::TempDir,
}

/// Where the kernel's `fusectl` file system is (mounted if it is not).
const FUSECTL: &str = "/sys/fs/fuse/connections";

impl ForgetfulFs {
    /// Mounts an empty forgetful file system on a new temporary directory.
    pub fn mount() -> io::Result<Self> {
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no /dev/fuse"));
        }
        let dir = tempfile::Builder::new()
            .prefix("tenax-forgetful-")
            .tempdir()?;
        let backing = dir.path().join("backing");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&backing)?;
        fs::create_dir(backing.join("live"))?;
        fs::create_dir(backing.join("durable"))?;
        fs::create_dir(&mountpoint)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(backing)),
            cut: AtomicBool::new(false),
            armed: AtomicBool::new(false),
        });
        let mut this = ForgetfulFs {
            shared,
            mountpoint,
            session: None,
            connection: None,
            _dir: dir,
        };
        if fs::read_dir(FUSECTL).is_ok_and(|mut entries| entries.next().is_none()) {
            let _ = rustix::mount::mount(
                "fusectl",
                FUSECTL,
                "fusectl",
                rustix::mount::MountFlags::empty(),
                None,
            );
        }
        this.start()?;
        Ok(this)
    }

    fn start(&mut self) -> io::Result<()> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("tenax-forgetful".into()),
            MountOption::Subtype("forgetful".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount(
            Mount {
                shared: Arc::clone(&self.shared),
            },
            &self.mountpoint,
            &config,
        )?;
        self.session = Some(session);
        self.connection = Some(std::os::unix::fs::MetadataExt::dev(&fs::metadata(
            &self.mountpoint,
        )?));
        Ok(())
    }

    /// The mount point: where the programs under test read and write.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power goes: from now on every operation fails with `EIO`, so
    /// nothing more becomes durable. Kill the programs using the file
    /// system, then [`restore`](ForgetfulFs::restore).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    /// Unmounts, rolls everything back to the durable image as `loss`
    /// says, and mounts again. Cuts first if [`cut`](ForgetfulFs::cut)
    /// was not called. Every process that had files open on the file
    /// system must be gone (killed) first, or the unmount fails.
    pub fn restore(&mut self, loss: Loss) -> io::Result<Forgotten> {
        self.cut();
        self.unmount()?;
        let forgotten = lock(&self.shared.state).roll_back(loss)?;
        self.shared.armed.store(false, Ordering::SeqCst);
        self.shared.cut.store(false, Ordering::SeqCst);
        self.start()?;
        Ok(forgotten)
    }

    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // The kernel may still hold the last references of a killed
        // process for a moment: retry a busy unmount, boundedly (2 s).
        let mut result = Err(io::Error::other(
            "the mount stayed busy for 2 s: a process still has files open on it",
        ));
        for _ in 0..40 {
            match rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::empty()) {
                Ok(()) => {
                    result = Ok(());
                    break;
                }
                Err(rustix::io::Errno::BUSY) => std::thread::sleep(Duration::from_millis(50)),
                Err(error) => {
                    result = Err(error.into());
                    break;
                }
            }
        }
        if result.is_err() {
            // Whoever still has files open there gets errors from now on,
            // and the session's thread ends.
            self.abort();
        }
        session.join()?;
        result
    }

    /// Detaches the mount and aborts its FUSE connection (through the
    /// `fusectl` file system), so that nothing waits on it any more.
    fn abort(&self) {
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        if let Some(connection) = self.connection {
            let _ = fs::write(
                Path::new(FUSECTL)
                    .join(connection.to_string())
                    .join("abort"),
                b"1",
            );
        }
    }

    /// Arms a cut at the worst moment for file data: the next `fsync` or
    /// `fdatasync` of a file with unsynced writes fails with `EIO` and cuts
    /// the power, so those writes are lost (or, in [`Loss::ZeroTail`] mode,
    /// become zeros). See [`is_cut`](ForgetfulFs::is_cut).
    pub fn cut_at_next_sync(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// Whether the power is cut (by [`cut`](ForgetfulFs::cut) or an armed
    /// sync) and not yet restored.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// How many file and directory syncs the file system has seen.
    pub fn syncs(&self) -> SyncCounts {
        lock(&self.shared.state).syncs
    }
}

impl Drop for ForgetfulFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Detached and aborted, so that files a panicking test left
            // open (they are closed when the process exits, after the
            // session's thread is gone) do not wait for an answer forever.
            self.abort();
            let _ = session.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    cut: AtomicBool,
    /// The next sync of a file with unsynced writes cuts the power.
    armed: AtomicBool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(1);
const BLOCK: u32 = 4096;

#[derive(Debug)]
struct Node {
    dir: bool,
    perm: u16,
    mtime: SystemTime,
    /// Live entries (directories).
    entries: BTreeMap<OsString, u64>,
    /// Entries as of the directory's last `fsync`.
    durable_entries: BTreeMap<OsString, u64>,
    /// Live size (files).
    size: u64,
    /// Size as of the file's last `fsync`.
    durable_size: u64,
    /// Ranges written (or truncated away) since the last `fsync`, sorted
    /// and disjoint.
    dirty: Vec<(u64, u64)>,
    nlink: u32,
    file: Option<Arc<File>>,
}

impl Node {
    fn new(dir: bool, perm: u16) -> Self {
        Node {
            dir,
            perm,
            mtime: SystemTime::now(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            size: 0,
            durable_size: 0,
            dirty: Vec::new(),
            nlink: if dir { 2 } else { 1 },
            file: None,
        }
    }

    fn mark_dirty(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        let mut kept = Vec::with_capacity(self.dirty.len() + 1);
        for &(from, to) in &self.dirty {
            if to < start || from > end {
                kept.push((from, to));
            } else {
                start = start.min(from);
                end = end.max(to);
            }
        }
        kept.push((start, end));
        kept.sort_unstable();
        self.dirty = kept;
    }
}

#[derive(Debug)]
struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    next: u64,
    syncs: SyncCounts,
}

impl State {
    fn new(backing: PathBuf) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(true, 0o755));
        State {
            backing,
            nodes,
            next: ROOT + 1,
            syncs: SyncCounts::default(),
        }
    }

    fn live_path(&self, ino: u64) -> PathBuf {
        self.backing.join("live").join(ino.to_string())
    }

    fn durable_path(&self, ino: u64) -> PathBuf {
        self.backing.join("durable").join(ino.to_string())
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        let node = self.node_mut(ino)?;
        if node.dir {
            Ok(node)
        } else {
            Err(Errno::ENOTDIR)
        }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind: if node.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: node.perm,
            nlink: node.nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        })
    }

    /// The open backing file of a regular file's live image.
    fn file(&mut self, ino: u64) -> Result<Arc<File>, Errno> {
        let path = self.live_path(ino);
        let node = self.node_mut(ino)?;
        if node.dir {
            return Err(Errno::EISDIR);
        }
        if let Some(file) = &node.file {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(Errno::from)?,
        );
        node.file = Some(Arc::clone(&file));
        Ok(file)
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let dir = self.node(parent)?;
        if !dir.dir {
            return Err(Errno::ENOTDIR);
        }
        dir.entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn make(&mut self, parent: u64, name: &OsStr, dir: bool, mode: u32) -> Result<u64, Errno> {
        if self.dir_mut(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let perm = u16::try_from(mode & 0o7777).unwrap_or(0o644);
        self.nodes.insert(ino, Node::new(dir, perm));
        if !dir {
            // The backing files exist from the start (empty).
            File::create(self.live_path(ino)).map_err(Errno::from)?;
            File::create(self.durable_path(ino)).map_err(Errno::from)?;
        }
        let parent_node = self.dir_mut(parent)?;
        parent_node.entries.insert(name.to_owned(), ino);
        parent_node.mtime = SystemTime::now();
        if dir {
            parent_node.nlink += 1;
        }
        Ok(ino)
    }

    /// Drops one live name of `ino` (its inode stays until a cut).
    fn unlinked(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlink = node.nlink.saturating_sub(1);
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let node = self.node(ino)?;
        match (node.dir, want_dir) {
            (true, false) => return Err(Errno::EISDIR),
            (false, true) => return Err(Errno::ENOTDIR),
            (true, true) if !node.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let dir = self.dir_mut(parent)?;
        dir.entries.remove(name);
        dir.mtime = SystemTime::now();
        if want_dir {
            dir.nlink = dir.nlink.saturating_sub(1);
        }
        self.unlinked(ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        self.dir_mut(new_parent)?;
        let target = self.lookup(new_parent, new_name).ok();
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let Some(target) = target else {
                return Err(Errno::ENOENT);
            };
            self.dir_mut(parent)?
                .entries
                .insert(name.to_owned(), target);
            self.dir_mut(new_parent)?
                .entries
                .insert(new_name.to_owned(), ino);
            return Ok(());
        }
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        if target == Some(ino) {
            return Ok(());
        }
        if let Some(target) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let (moving_dir, target_node) = (self.node(ino)?.dir, self.node(target)?);
            match (moving_dir, target_node.dir) {
                (false, true) => return Err(Errno::EISDIR),
                (true, false) => return Err(Errno::ENOTDIR),
                (true, true) if !target_node.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY);
                }
                _ => {}
            }
            self.unlinked(target);
        }
        let now = SystemTime::now();
        let from = self.dir_mut(parent)?;
        from.entries.remove(name);
        from.mtime = now;
        let to = self.dir_mut(new_parent)?;
        to.entries.insert(new_name.to_owned(), ino);
        to.mtime = now;
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let file = self.file(ino)?;
        file.write_all_at(data, offset).map_err(Errno::from)?;
        let end = offset + data.len() as u64;
        let node = self.node_mut(ino)?;
        node.size = node.size.max(end);
        node.mtime = SystemTime::now();
        node.mark_dirty(offset, end);
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    fn set_size(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let file = self.file(ino)?;
        file.set_len(size).map_err(Errno::from)?;
        let node = self.node_mut(ino)?;
        let old = node.size;
        node.size = size;
        node.mtime = SystemTime::now();
        node.mark_dirty(old.min(size), old.max(size));
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its dirty ranges and its size go to
    /// the durable image.
    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        let live = self.file(ino)?;
        let durable_path = self.durable_path(ino);
        let node = self.node_mut(ino)?;
        let durable = OpenOptions::new()
            .write(true)
            .open(durable_path)
            .map_err(Errno::from)?;
        let size = node.size;
        let mut buffer = vec![0u8; 256 * 1024];
        for &(start, end) in &node.dirty {
            let end = end.min(size);
            let mut at = start;
            while at < end {
                let n = usize::try_from((end - at).min(buffer.len() as u64)).unwrap_or(0);
                live.read_exact_at(&mut buffer[..n], at)
                    .map_err(Errno::from)?;
                durable
                    .write_all_at(&buffer[..n], at)
                    .map_err(Errno::from)?;
                at += n as u64;
            }
        }
        durable.set_len(size).map_err(Errno::from)?;
        node.durable_size = size;
        node.dirty.clear();
        self.syncs.files += 1;
        Ok(())
    }

    /// `fsync` of a directory: its live entries become its durable ones.
    fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.dir_mut(ino)?;
        node.durable_entries = node.entries.clone();
        self.syncs.dirs += 1;
        Ok(())
    }

    /// The power cut: everything goes back to the durable image, which
    /// becomes the live one.
    fn roll_back(&mut self, loss: Loss) -> io::Result<Forgotten> {
        let mut forgotten = Forgotten::default();
        // Names.
        for node in self.nodes.values_mut().filter(|node| node.dir) {
            let changed = node
                .entries
                .iter()
                .filter(|(name, ino)| node.durable_entries.get(*name) != Some(ino))
                .count()
                + node
                    .durable_entries
                    .keys()
                    .filter(|name| !node.entries.contains_key(*name))
                    .count();
            forgotten.names += changed as u64;
            node.entries = node.durable_entries.clone();
        }
        // What the durable names still reach; the rest is gone.
        let mut reached = HashMap::<u64, u32>::new();
        let mut stack = vec![ROOT];
        reached.insert(ROOT, 1);
        while let Some(dir) = stack.pop() {
            let children: Vec<u64> = self.nodes[&dir].entries.values().copied().collect();
            for child in children {
                let count = reached.entry(child).or_insert(0);
                *count += 1;
                if *count == 1 && self.nodes.get(&child).is_some_and(|node| node.dir) {
                    stack.push(child);
                }
            }
        }
        let gone: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|ino| !reached.contains_key(ino))
            .collect();
        for ino in gone {
            if let Some(node) = self.nodes.remove(&ino)
                && !node.dir
            {
                let _ = fs::remove_file(self.live_path(ino));
                let _ = fs::remove_file(self.durable_path(ino));
            }
        }
        // Data.
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            let (live, durable) = (self.live_path(ino), self.durable_path(ino));
            let subdirs = self.nodes[&ino]
                .entries
                .values()
                .filter(|child| self.nodes.get(*child).is_some_and(|node| node.dir))
                .count();
            let node = self.nodes.get_mut(&ino).expect("listed");
            node.file = None;
            if node.dir {
                node.nlink = 2 + u32::try_from(subdirs).unwrap_or(0);
                continue;
            }
            node.nlink = reached.get(&ino).copied().unwrap_or(1);
            let dirty: u64 = node
                .dirty
                .iter()
                .map(|&(start, end)| end.min(node.size.max(node.durable_size)) - start.min(end))
                .sum();
            if node.dirty.is_empty() && node.size == node.durable_size {
                continue;
            }
            forgotten.files += 1;
            forgotten.bytes += dirty;
            let size = match loss {
                Loss::Unsynced => node.durable_size,
                Loss::ZeroTail => node.durable_size.max(node.size),
            };
            fs::copy(&durable, &live)?;
            let file = OpenOptions::new().write(true).open(&live)?;
            file.set_len(size)?;
            OpenOptions::new()
                .write(true)
                .open(&durable)?
                .set_len(size)?;
            if size > node.durable_size {
                // The zero tail is what the disk now holds: durable too.
                let zeros = OpenOptions::new().write(true).open(&durable)?;
                zeros.set_len(node.durable_size)?;
                zeros.set_len(size)?;
            }
            node.size = size;
            node.durable_size = size;
            node.dirty.clear();
        }
        Ok(forgotten)
    }
}

/// The FUSE side: every request locks the state.
#[derive(Debug)]
struct Mount {
    shared: Arc<Shared>,
}

impl Mount {
    fn state(&self) -> Result<MutexGuard<'_, State>, Errno> {
        if self.shared.cut.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        Ok(lock(&self.shared.state))
    }
}

fn name_ok(name: &OsStr) -> Result<(), Errno> {
    if name.len() > 255 {
        Err(Errno::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

impl Filesystem for Mount {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.state().and_then(|state| {
            let ino = state.lookup(parent.0, name)?;
            state.attr(ino)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().and_then(|state| state.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.state().and_then(|mut state| {
            if let Some(size) = size {
                state.set_size(ino.0, size)?;
            }
            let node = state.node_mut(ino.0)?;
            if let Some(mode) = mode {
                node.perm = u16::try_from(mode & 0o7777).unwrap_or(node.perm);
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(time)) => node.mtime = time,
                Some(TimeOrNow::Now) => node.mtime = SystemTime::now(),
                None => {}
            }
            state.attr(ino.0)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & 0o170000 != 0o100000 && mode & 0o170000 != 0 {
            reply.error(Errno::EPERM);
            return;
        }
        let result = name_ok(name)
            .and_then(|()| self.state())
            .and_then(|mut state| {
                let ino = state.make(parent.0, name, false, mode)?;
                state.attr(ino)
            });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = name_ok(name)
            .and_then(|()| self.state())
            .and_then(|mut state| {
                let ino = state.make(parent.0, name, true, mode)?;
                state.attr(ino)
            });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .state()
            .and_then(|mut state| state.remove(parent.0, name, false))
        {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .state()
            .and_then(|mut state| state.remove(parent.0, name, true))
        {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = name_ok(newname)
            .and_then(|()| self.state())
            .and_then(|mut state| state.rename(parent.0, name, newparent.0, newname, flags));
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = name_ok(newname)
            .and_then(|()| self.state())
            .and_then(|mut state| {
                if state.node(ino.0)?.dir {
                    return Err(Errno::EPERM);
                }
                let dir = state.dir_mut(newparent.0)?;
                if dir.entries.contains_key(newname) {
                    return Err(Errno::EEXIST);
                }
                dir.entries.insert(newname.to_owned(), ino.0);
                dir.mtime = SystemTime::now();
                state.node_mut(ino.0)?.nlink += 1;
                state.attr(ino.0)
            });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().and_then(|state| state.attr(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.state().and_then(|mut state| {
            let file = state.file(ino.0)?;
            let len = state.node(ino.0)?.size;
            let end = len.min(offset.saturating_add(u64::from(size)));
            let mut buffer = vec![0u8; usize::try_from(end.saturating_sub(offset)).unwrap_or(0)];
            file.read_exact_at(&mut buffer, offset)
                .map_err(Errno::from)?;
            Ok(buffer)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(error) => reply.error(error),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .state()
            .and_then(|mut state| state.write(ino.0, offset, data))
        {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.state() {
            Ok(_) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let synced = self.state().and_then(|mut state| {
            if self.shared.armed.load(Ordering::SeqCst) && !state.node(ino.0)?.dirty.is_empty() {
                self.shared.cut.store(true, Ordering::SeqCst);
                return Err(Errno::EIO);
            }
            state.sync_file(ino.0)
        });
        match synced {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.state().and_then(|state| {
            let node = state.node(ino.0)?;
            if !node.dir {
                return Err(Errno::ENOTDIR);
            }
            let mut list = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (ino.0, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in &node.entries {
                let kind = if state.nodes.get(child).is_some_and(|node| node.dir) {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                list.push((*child, kind, name.clone()));
            }
            Ok(list)
        });
        match listed {
            Ok(list) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (index, (child, kind, name)) in list.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(error) => reply.error(error),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().and_then(|mut state| state.sync_dir(ino.0)) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.state() {
            // 64 GiB free in 4 KiB blocks, a million inodes.
            Ok(_) => reply.statfs(
                1 << 24,
                1 << 24,
                1 << 24,
                1 << 20,
                1 << 20,
                BLOCK,
                255,
                BLOCK,
            ),
            Err(error) => reply.error(error),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.state().and_then(|state| state.attr(ino.0)) {
            Ok(_) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = name_ok(name)
            .and_then(|()| self.state())
            .and_then(|mut state| {
                let ino = match state.lookup(parent.0, name) {
                    Ok(_) if flags & 0o200 != 0 => return Err(Errno::EEXIST), // O_EXCL
                    Ok(ino) => {
                        if flags & 0o1000 != 0 {
                            state.set_size(ino, 0)?; // O_TRUNC
                        }
                        ino
                    }
                    Err(_) => state.make(parent.0, name, false, mode)?,
                };
                state.attr(ino)
            });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        const KEEP_SIZE: i32 = 1;
        let result = self.state().and_then(|mut state| {
            state.attr(ino.0)?;
            match mode {
                // Reserving room changes nothing a reader sees.
                KEEP_SIZE => Ok(()),
                0 => {
                    let end = offset.saturating_add(length);
                    if end > state.node(ino.0)?.size {
                        state.set_size(ino.0, end)?;
                    }
                    Ok(())
                }
                _ => Err(Errno::from_i32(95)), // EOPNOTSUPP
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }
}
