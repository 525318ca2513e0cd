//! The engine against a plain model (`fuzz/model.rs`, shared with the fuzz
//! target `engine_model`): the committed corpus and regression inputs are
//! replayed, and proptest feeds fresh random inputs through the same decoder.

use std::fs;
use std::path::Path;

use proptest::prelude::*;

#[path = "../../../fuzz/model.rs"]
mod model;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

#[test]
fn engine_model_corpus() {
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        let dir = Path::new(FUZZ_DIR).join(kind).join("engine_model");
        let Ok(entries) = fs::read_dir(&dir) else {
            assert_ne!(kind, "corpus", "missing corpus {}", dir.display());
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|entry| entry.expect("readable corpus directory").path())
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let data = fs::read(&path).expect("readable corpus file");
            let outcome = std::panic::catch_unwind(|| model::run_bytes(&data));
            assert!(outcome.is_ok(), "{} breaks the model", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no engine_model corpus");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        model::run_bytes(&data);
    }
}
