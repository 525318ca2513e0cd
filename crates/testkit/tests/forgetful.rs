//! The forgetful file system's own semantics (crates/testkit/src/forgetful.rs):
//! each test writes through the mount with ordinary system calls, cuts the
//! power, restores, and checks what is left. Skips without FUSE unless
//! `TENAX_TEST_FUSE` is set.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use tenax_testkit::forgetful::mount_or_skip;
use tenax_testkit::{Forgotten, Loss};

fn write(path: &Path, bytes: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    file.write_all(bytes).expect("write");
    file
}

fn sync_dir(path: &Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

#[test]
fn unsynced_data_is_lost_and_synced_data_kept() {
    let Some(mut fs) = mount_or_skip("unsynced_data_is_lost_and_synced_data_kept") else {
        return;
    };
    let root = fs.path().to_owned();
    let path = root.join("a");
    write(&path, b"synced ").sync_data().expect("fdatasync");
    sync_dir(&root);
    let mut file = write(&path, b"lost");
    file.flush().expect("flush");
    drop(file);
    assert_eq!(fs::read(&path).expect("read"), b"synced lost");
    let forgotten = fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(&path).expect("read"), b"synced ");
    assert_eq!(forgotten.files, 1);
    assert_eq!(forgotten.bytes, 4);
    // After the cut the file works as before, and syncing keeps more.
    let file = write(&path, b"again");
    file.sync_all().expect("fsync");
    drop(file);
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(&path).expect("read"), b"synced again");
}

#[test]
fn an_overwrite_and_a_truncation_are_undone_unless_synced() {
    let Some(mut fs) = mount_or_skip("an_overwrite_and_a_truncation_are_undone_unless_synced")
    else {
        return;
    };
    let root = fs.path().to_owned();
    let path = root.join("b");
    write(&path, b"0123456789").sync_all().expect("fsync");
    sync_dir(&root);
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all_at(b"xx", 2).expect("pwrite");
    file.set_len(6).expect("truncate");
    drop(file);
    assert_eq!(fs::read(&path).expect("read"), b"01xx45");
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(&path).expect("read"), b"0123456789");
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(4).expect("truncate");
    file.sync_data().expect("fdatasync");
    drop(file);
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(&path).expect("read"), b"0123");
}

#[test]
fn a_new_name_needs_its_directory_synced() {
    let Some(mut fs) = mount_or_skip("a_new_name_needs_its_directory_synced") else {
        return;
    };
    let root = fs.path().to_owned();
    // A synced file whose directory was not synced: gone.
    write(&root.join("orphan"), b"data")
        .sync_all()
        .expect("fsync");
    // A directory made, then a file in it synced with its directory, but
    // the directory's own name never synced in the root: gone too.
    fs::create_dir(root.join("sub")).expect("mkdir");
    write(&root.join("sub/inner"), b"x")
        .sync_all()
        .expect("fsync");
    sync_dir(&root.join("sub"));
    let forgotten = fs.restore(Loss::Unsynced).expect("restore");
    assert!(!root.join("orphan").exists());
    assert!(!root.join("sub").exists());
    assert_eq!(forgotten.names, 2);
    // Now with the root synced: the names stay (the file's data was synced).
    write(&root.join("kept"), b"data")
        .sync_all()
        .expect("fsync");
    fs::create_dir(root.join("dir")).expect("mkdir");
    write(&root.join("dir/inner"), b"x")
        .sync_all()
        .expect("fsync");
    sync_dir(&root.join("dir"));
    sync_dir(&root);
    // A name whose data was never synced: there, empty.
    write(&root.join("dir/empty"), b"unsynced");
    sync_dir(&root.join("dir"));
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(root.join("kept")).expect("kept"), b"data");
    assert_eq!(fs::read(root.join("dir/inner")).expect("inner"), b"x");
    assert_eq!(fs::read(root.join("dir/empty")).expect("empty"), b"");
}

#[test]
fn a_rename_or_unlink_without_a_directory_sync_is_undone() {
    let Some(mut fs) = mount_or_skip("a_rename_or_unlink_without_a_directory_sync_is_undone")
    else {
        return;
    };
    let root = fs.path().to_owned();
    write(&root.join("old"), b"old").sync_all().expect("fsync");
    write(&root.join("temp"), b"new").sync_all().expect("fsync");
    write(&root.join("doomed"), b"doomed")
        .sync_all()
        .expect("fsync");
    sync_dir(&root);
    // The publish pattern: rename a temp file over a name; and an unlink.
    fs::rename(root.join("temp"), root.join("old")).expect("rename");
    fs::remove_file(root.join("doomed")).expect("unlink");
    assert_eq!(fs::read(root.join("old")).expect("read"), b"new");
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(root.join("old")).expect("read"), b"old");
    assert_eq!(fs::read(root.join("temp")).expect("read"), b"new");
    assert_eq!(fs::read(root.join("doomed")).expect("read"), b"doomed");
    // With the directory synced, the rename and the unlink hold.
    fs::rename(root.join("temp"), root.join("old")).expect("rename");
    fs::remove_file(root.join("doomed")).expect("unlink");
    sync_dir(&root);
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(root.join("old")).expect("read"), b"new");
    assert!(!root.join("temp").exists());
    assert!(!root.join("doomed").exists());
}

#[test]
fn a_hard_link_needs_its_directory_synced_and_shares_the_data() {
    let Some(mut fs) = mount_or_skip("a_hard_link_needs_its_directory_synced_and_shares_the_data")
    else {
        return;
    };
    let root = fs.path().to_owned();
    fs::create_dir(root.join("files")).expect("mkdir");
    sync_dir(&root);
    write(&root.join("data"), b"bytes")
        .sync_all()
        .expect("fsync");
    sync_dir(&root);
    fs::hard_link(root.join("data"), root.join("files/name")).expect("link");
    fs.restore(Loss::Unsynced).expect("restore");
    assert!(!root.join("files/name").exists());
    fs::hard_link(root.join("data"), root.join("files/name")).expect("link");
    sync_dir(&root.join("files"));
    write(&root.join("data"), b" more")
        .sync_data()
        .expect("fdatasync");
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(
        fs::read(root.join("files/name")).expect("read"),
        b"bytes more"
    );
    assert_eq!(fs::metadata(root.join("data")).expect("stat").len(), 10);
}

#[test]
fn in_zero_tail_mode_the_new_size_survives_but_its_bytes_are_zeros() {
    let Some(mut fs) =
        mount_or_skip("in_zero_tail_mode_the_new_size_survives_but_its_bytes_are_zeros")
    else {
        return;
    };
    let root = fs.path().to_owned();
    let path = root.join("z");
    write(&path, b"synced").sync_data().expect("fdatasync");
    sync_dir(&root);
    drop(write(&path, b"tail!"));
    // (Not through the append handle: Linux appends a `pwrite` there.)
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all_at(b"SY", 0).expect("overwrite");
    drop(file);
    let forgotten = fs.restore(Loss::ZeroTail).expect("restore");
    assert_eq!(
        forgotten,
        Forgotten {
            files: 1,
            bytes: 7,
            names: 0
        }
    );
    // The overwrite of synced bytes is undone; the growth is zeros.
    assert_eq!(fs::read(&path).expect("read"), b"synced\0\0\0\0\0");
    // The zeros are now what the disk holds: a second cut keeps them.
    fs.restore(Loss::Unsynced).expect("restore");
    assert_eq!(fs::read(&path).expect("read"), b"synced\0\0\0\0\0");
}

#[test]
fn after_a_cut_every_operation_fails_with_eio() {
    let Some(mut fs) = mount_or_skip("after_a_cut_every_operation_fails_with_eio") else {
        return;
    };
    let root = fs.path().to_owned();
    let file = write(&root.join("f"), b"x");
    fs.cut();
    let errors = [
        file.sync_data().expect_err("fdatasync after the cut"),
        file.write_all_at(b"y", 1).expect_err("write after the cut"),
        File::create(root.join("g")).expect_err("create after the cut"),
    ];
    for error in errors {
        assert_eq!(error.raw_os_error(), Some(5), "{error}");
    }
    drop(file);
    fs.restore(Loss::Unsynced).expect("restore");
    // Nothing was ever synced.
    assert_eq!(
        fs::metadata(root.join("f")).expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    assert!(fs.syncs().files == 0 && fs.syncs().dirs == 0);
    File::create(root.join("g")).expect("the disk works again");
}

#[test]
fn an_armed_cut_lands_on_the_next_sync_of_unsynced_data() {
    let Some(mut fs) = mount_or_skip("an_armed_cut_lands_on_the_next_sync_of_unsynced_data") else {
        return;
    };
    let root = fs.path().to_owned();
    let file = write(&root.join("f"), b"kept");
    file.sync_data().expect("fdatasync");
    sync_dir(&root);
    fs.cut_at_next_sync();
    // A sync with nothing unsynced does not trigger it.
    file.sync_data().expect("fdatasync of nothing new");
    assert!(!fs.is_cut());
    drop(file);
    let file = write(&root.join("f"), b" lost");
    let error = file.sync_data().expect_err("the armed cut");
    assert_eq!(error.raw_os_error(), Some(5), "{error}");
    assert!(fs.is_cut());
    drop(file);
    fs.restore(Loss::ZeroTail).expect("restore");
    assert_eq!(fs::read(root.join("f")).expect("read"), b"kept\0\0\0\0\0");
}
