//! Where an upload's objects are under the store's prefix (the layout in
//! the crate documentation); published files go where
//! [`tenax_core::layout`] puts them on every backend.

use object_store::path::{Path, PathPart};
use tenax_core::layout;
use tenax_core::{FileKey, UploadId};

/// The object paths under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    root: Path,
}

impl Paths {
    /// The paths under `root`.
    pub(crate) fn new(root: Path) -> Self {
        Paths { root }
    }

    /// The prefix.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `PREFIX/uploads`: one directory per upload.
    pub(crate) fn uploads(&self) -> Path {
        self.root.clone().join(layout::UPLOADS)
    }

    /// `PREFIX/uploads/ID`: every object of one upload.
    pub(crate) fn upload_dir(&self, id: UploadId) -> Path {
        self.uploads().join(id.to_string())
    }

    /// The upload's record.
    pub(crate) fn record(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("record.json")
    }

    /// The upload's data state.
    pub(crate) fn state(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("state.json")
    }

    /// Tail object number `seq` of the upload.
    pub(crate) fn tail(&self, id: UploadId, seq: u64) -> Path {
        self.upload_dir(id).join(format!("tail-{seq}"))
    }

    /// The multipart upload's target: the whole data once sealed.
    pub(crate) fn data(&self, id: UploadId) -> Path {
        self.upload_dir(id).join("data")
    }

    /// A published file.
    pub(crate) fn file(&self, file: &FileKey) -> Path {
        let dir = layout::published_dir(&file.namespace)
            .into_iter()
            .fold(self.root.clone(), |dir, segment| {
                dir.join(PathPart::from(segment))
            });
        dir.join(PathPart::from(file.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use tenax_core::{FileName, Namespace};

    use super::*;

    #[test]
    fn the_layout_of_the_crate_documentation() {
        let paths = Paths::new(Path::from("pre"));
        let id = UploadId::from_bytes([7; 16]);
        let dir = format!("pre/uploads/{id}");
        assert_eq!(paths.record(id).as_ref(), format!("{dir}/record.json"));
        assert_eq!(paths.state(id).as_ref(), format!("{dir}/state.json"));
        assert_eq!(paths.tail(id, 3).as_ref(), format!("{dir}/tail-3"));
        assert_eq!(paths.data(id).as_ref(), format!("{dir}/data"));
        let name = FileName::new("a b.txt").expect("a valid name");
        let file = |namespace| FileKey {
            namespace,
            name: name.clone(),
        };
        assert_eq!(
            paths.file(&file(Namespace::default())).as_ref(),
            "pre/files/a b.txt"
        );
        let team = Namespace::new("team").expect("a valid namespace");
        assert_eq!(paths.file(&file(team)).as_ref(), "pre/spaces/team/a b.txt");
    }
}
