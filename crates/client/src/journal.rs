//! The resume journal: one small JSON file per (file, URL) pair that remembers
//! the session of an interrupted upload.
//!
//! The file is named after the hex SHA-256 of `"<canonical path>\n<url>"`,
//! written atomically (a temporary file renamed into place, mode `0600` on
//! Unix since a session URL is a capability) and removed once the session is
//! finished or dead.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::hash::sha256_hex;

/// What identifies the local file's content well enough to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileIdentity {
    /// Size in bytes.
    pub(crate) size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative
    /// before it), if the platform reports one.
    pub(crate) mtime_ns: Option<i128>,
    /// Inode number (Unix).
    pub(crate) ino: Option<u64>,
    /// Device number (Unix).
    pub(crate) dev: Option<u64>,
}

impl FileIdentity {
    /// The identity of the file `meta` describes.
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
        let mtime_ns = meta
            .modified()
            .ok()
            .map(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
                Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
            });
        #[cfg(unix)]
        let (ino, dev) = {
            use std::os::unix::fs::MetadataExt;
            (Some(meta.ino()), Some(meta.dev()))
        };
        #[cfg(not(unix))]
        let (ino, dev) = (None, None);
        FileIdentity {
            size: meta.len(),
            mtime_ns,
            ino,
            dev,
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Format version (1).
    pub(crate) version: u32,
    /// The session (upload) URL; empty for a parallel upload.
    pub(crate) session: String,
    /// The dialect the session speaks (`seed`, `tus` or `ietf`; entries
    /// written before dialects existed are `seed`).
    #[serde(default = "seed")]
    pub(crate) protocol: String,
    /// The part upload URLs of a parallel (tus concatenation) upload, in
    /// file order; `None` for a part not created yet. Empty otherwise.
    #[serde(default)]
    pub(crate) parts: Vec<Option<String>>,
    /// The canonical local path (informational).
    pub(crate) file: String,
    /// The endpoint sessions are created at (informational).
    pub(crate) endpoint: String,
    /// The file's identity when the session was created.
    pub(crate) identity: FileIdentity,
}

/// The protocol of entries that do not name one.
fn seed() -> String {
    "seed".to_owned()
}

/// The journal slot of one (file, URL) pair.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
    path: PathBuf,
}

impl Journal {
    /// The slot for `file` (canonical path) uploaded to `url`, in `dir`.
    pub(crate) fn new(dir: &Path, file: &Path, url: &str) -> Self {
        let key = sha256_hex(format!("{}\n{url}", file.display()).as_bytes());
        Journal {
            dir: dir.to_owned(),
            path: dir.join(format!("{key}.json")),
        }
    }

    /// The entry's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the entry. A missing file is `Ok(None)`; an unreadable or
    /// foreign one is `Err` (callers treat that like a missing one).
    pub(crate) fn load(&self) -> io::Result<Option<Entry>> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let entry: Entry = serde_json::from_slice(&text).map_err(io::Error::other)?;
        if entry.version != 1 {
            return Err(io::Error::other("unknown journal version"));
        }
        Ok(Some(entry))
    }

    /// Writes the entry atomically (temporary file, fsync, rename).
    pub(crate) fn store(&self, entry: &Entry) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut file = options.open(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(entry).map_err(io::Error::other)?)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the entry (a missing one is fine).
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(path: &Path) -> FileIdentity {
        FileIdentity::of(&fs::metadata(path).expect("stat"))
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("data.bin");
        fs::write(&file, b"hello").expect("write");
        let journal = Journal::new(&dir.path().join("state/tenax"), &file, "http://h/");
        assert_eq!(journal.load().expect("load"), None);
        let entry = Entry {
            version: 1,
            session: "http://h/uploads/00112233445566778899aabbccddeeff".into(),
            protocol: "tus".into(),
            parts: vec![Some("http://h/uploads/1".into()), None],
            file: file.display().to_string(),
            endpoint: "http://h/api/upload?file=data.bin".into(),
            identity: identity_of(&file),
        };
        journal.store(&entry).expect("store");
        assert_eq!(journal.load().expect("load"), Some(entry.clone()));
        // Overwriting is fine; no temporary files are left behind.
        journal.store(&entry).expect("store again");
        let names: Vec<_> = fs::read_dir(dir.path().join("state/tenax"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
        let name = names[0].to_string_lossy().into_owned();
        assert!(name.len() == 64 + 5 && name.ends_with(".json"), "{name}");
        journal.remove().expect("remove");
        journal.remove().expect("remove twice");
        assert_eq!(journal.load().expect("load"), None);
    }

    #[test]
    fn keys_differ_per_url_and_file() {
        let dir = Path::new("/j");
        let a = Journal::new(dir, Path::new("/f"), "http://h/");
        let b = Journal::new(dir, Path::new("/f"), "http://g/");
        let c = Journal::new(dir, Path::new("/g"), "http://h/");
        assert_ne!(a.path(), b.path());
        assert_ne!(a.path(), c.path());
    }

    #[test]
    fn identity_changes_are_detected() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("data.bin");
        fs::write(&file, b"hello").expect("write");
        let before = identity_of(&file);
        assert_eq!(before, identity_of(&file));
        assert_eq!(before.size, 5);
        // Same size, new content and mtime.
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .expect("touch");
        assert_ne!(before, identity_of(&file));
        // A replaced file (new inode) differs even with the same mtime.
        let again = identity_of(&file);
        let other = dir.path().join("other.bin");
        fs::write(&other, b"hello").expect("write");
        fs::OpenOptions::new()
            .write(true)
            .open(&other)
            .expect("open")
            .set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .expect("touch");
        fs::rename(&other, &file).expect("replace");
        let replaced = identity_of(&file);
        assert_eq!(replaced.mtime_ns, again.mtime_ns);
        if cfg!(unix) {
            assert_ne!(replaced, again);
        }
    }

    #[test]
    fn old_entries_are_seed_sessions() {
        let dir = tempfile::tempdir().expect("tmp");
        let journal = Journal::new(dir.path(), Path::new("/f"), "u");
        let old = r#"{"version":1,"session":"http://h/uploads/x","file":"/f","endpoint":"u",
            "identity":{"size":1,"mtime_ns":null,"ino":null,"dev":null}}"#;
        fs::write(journal.path(), old).expect("write");
        let entry = journal.load().expect("load").expect("entry");
        assert_eq!(entry.protocol, "seed");
        assert!(entry.parts.is_empty());
    }

    #[test]
    fn corrupt_entries_are_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let journal = Journal::new(dir.path(), Path::new("/f"), "u");
        fs::write(journal.path(), b"{not json").expect("write");
        assert!(journal.load().is_err());
    }
}
