//! What every storage backend stores the same way: an upload's record as
//! JSON, and where published files go under a backend's root.
//!
//! ```text
//! uploads/...      the uploads' records and data (each backend names its files)
//! files/NAME       published files of the default namespace
//! spaces/NS/NAME   published files of namespace NS
//! ```

use std::io;

use tenax_protocol::Namespace;

use crate::record::UploadRecord;

/// The directory of the uploads' records and data, under a backend's root.
pub const UPLOADS: &str = "uploads";

/// The directory of the default namespace's published files.
pub const FILES: &str = "files";

/// The directory holding one directory of published files per other namespace.
pub const SPACES: &str = "spaces";

/// The directory of a namespace's published files, as path segments under
/// a backend's root: `files`, or `spaces/NS`.
pub fn published_dir(namespace: &Namespace) -> Vec<&str> {
    if namespace.is_default() {
        vec![FILES]
    } else {
        vec![SPACES, namespace.as_str()]
    }
}

/// A record as it is stored: JSON.
pub fn record_json(record: &UploadRecord) -> io::Result<String> {
    serde_json::to_string_pretty(record).map_err(io::Error::other)
}

/// Parses a stored record; `what` names it in the error, of kind
/// `InvalidData`.
pub fn parse_record(what: &str, bytes: &[u8]) -> io::Result<UploadRecord> {
    serde_json::from_slice(bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DigestSet;

    #[test]
    fn published_files_of_a_namespace_have_their_own_directory() {
        assert_eq!(published_dir(&Namespace::default()), vec!["files"]);
        let team = Namespace::new("team").expect("a valid namespace");
        assert_eq!(published_dir(&team), vec!["spaces", "team"]);
    }

    #[test]
    fn the_digest_set_is_stored_as_the_md5_flag_of_older_records() {
        let record = UploadRecord {
            id: tenax_protocol::UploadId::from_bytes([1; 16]),
            namespace: Namespace::default(),
            name: None,
            total: Some(5),
            content_type: None,
            metadata: Default::default(),
            concat: None,
            staged_from: None,
            digests: DigestSet::NONE,
            created_at: 1,
            created_ns: None,
            updated_at: 2,
            status: crate::Status::Active,
            object: None,
        };
        let json = record_json(&record).expect("encode");
        assert!(json.contains("\"md5\": false"), "{json}");
        assert_eq!(parse_record("r", json.as_bytes()).expect("decode"), record);
        // A record written before the field existed computed an MD5.
        let older = json.replace("\"md5\": false,", "");
        assert_ne!(older, json);
        let parsed = parse_record("r", older.as_bytes()).expect("decode");
        assert_eq!(parsed.digests, DigestSet::MD5);
    }

    #[test]
    fn a_bad_record_names_itself_and_is_invalid_data() {
        let Err(error) = parse_record("uploads/x.json", b"{") else {
            panic!("a truncated record parsed");
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().starts_with("uploads/x.json: "), "{error}");
    }
}
