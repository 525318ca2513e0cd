// The browser bundle of Uppy for crates/cli/tests/uppy_browser.rs: Uppy's
// core and its tus plugin, as an application would import them, bundled by
// uppy_driver.mjs with esbuild and exposed on `window` for the test page.
import Uppy from "@uppy/core";
import Tus from "@uppy/tus";

window.Uppy = Uppy;
window.UppyTus = Tus;
