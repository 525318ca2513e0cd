//! The peer clients `scripts/test` installs under `target/peers` (or
//! `$TENAX_PEERS`). A missing peer fails the test; it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peers folder `scripts/test` fills, unless `TENAX_PEERS` says otherwise.
const DEFAULT_PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/peers");

/// A driver script in `tests/peers/`.
pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers")).join(name)
}

/// `node tests/peers/NAME` (`$NODE` or `node`) with `modules` as its
/// `NODE_PATH`, run in the folder that holds them.
pub(crate) fn node_driver(modules: &Path, name: &str) -> Command {
    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    let mut command = Command::new(node);
    command
        .arg(script(name))
        .current_dir(modules.parent().expect("node_modules has a parent"))
        .env("NODE_PATH", modules);
    command
}

/// The venv's `python tests/peers/NAME`.
pub(crate) fn python_driver(name: &str) -> Command {
    let mut command = Command::new(peers_python());
    command
        .arg(script(name))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// The peers folder.
pub(crate) fn peers_dir() -> PathBuf {
    std::env::var_os("TENAX_PEERS")
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PEERS), PathBuf::from)
}

/// The venv's Python, or a failure telling how to install it.
pub(crate) fn peers_python() -> PathBuf {
    let python = peers_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "the Python peers are not installed ({} is missing): run scripts/test \
         to install the peers (it creates target/peers/venv from \
         tests/peers/requirements.txt)",
        python.display()
    );
    python
}

/// The `node_modules` folder holding tus-js-client, or a failure telling how
/// to install it.
pub(crate) fn peers_node_modules() -> PathBuf {
    let modules = peers_dir().join("node/node_modules");
    let package = modules.join("tus-js-client/package.json");
    assert!(
        package.exists(),
        "the Node peers are not installed ({} is missing): run scripts/test to \
         install the peers (it runs `npm ci` in target/peers/node from \
         tests/peers/package-lock.json)",
        package.display()
    );
    modules
}

/// The `node_modules` folder holding playwright-core, or a failure telling
/// how to install it.
pub(crate) fn peers_playwright() -> PathBuf {
    let modules = peers_dir().join("node/node_modules");
    let package = modules.join("playwright-core/package.json");
    assert!(
        package.exists(),
        "playwright-core is not installed ({} is missing): run scripts/test to \
         install the peers (it runs `npm ci` in target/peers/node from \
         tests/peers/package-lock.json)",
        package.display()
    );
    modules
}

/// Debian's Chromium, which the browser tests drive, or a failure telling
/// how to install it.
pub(crate) fn chromium() -> PathBuf {
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/test (it installs Debian's chromium package \
         with apt-get)",
        chromium.display()
    );
    chromium
}

/// The `node_modules` folder holding Uppy (`@uppy/core`, `@uppy/tus`) and
/// esbuild, which bundles it for the browser, or a failure telling how to
/// install them.
pub(crate) fn peers_uppy() -> PathBuf {
    let modules = peers_playwright();
    for package in ["@uppy/core", "@uppy/tus", "esbuild"] {
        let manifest = modules.join(package).join("package.json");
        assert!(
            manifest.exists(),
            "{package} is not installed ({} is missing): run scripts/test to \
             install the peers (it runs `npm ci` in target/peers/node from \
             tests/peers/package-lock.json)",
            manifest.display()
        );
    }
    modules
}

/// The venv's Python with aiotus, or a failure telling how to install it.
pub(crate) fn peers_aiotus() -> PathBuf {
    let python = peers_python();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import aiotus"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ok,
        "aiotus is not installed in {}: run scripts/test to install the peers \
         (tests/peers/requirements.txt)",
        python.display()
    );
    python
}
