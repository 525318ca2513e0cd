//! The engine against a plain model (`fuzz/model.rs`, shared with the fuzz
//! target `engine_model`): the committed regression inputs and (within a
//! time budget) corpus are replayed, and proptest feeds fresh random inputs
//! through the same decoder.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

#[path = "../../../fuzz/model.rs"]
mod model;

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");

/// Replays the regression inputs, then the corpus for at most
/// `TENAX_MODEL_REPLAY_SECS` seconds (10 by default, 0 for no limit): a
/// debug build runs about 7 inputs a second, too slow for the whole corpus
/// in CI, so each run starts at a different place (printed) and wraps.
#[test]
fn engine_model_corpus() {
    let budget = std::env::var("TENAX_MODEL_REPLAY_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(10u64);
    let started = Instant::now();
    let mut replayed = 0;
    for kind in ["regressions", "corpus"] {
        let dir = Path::new(FUZZ_DIR).join(kind).join("engine_model");
        let Ok(entries) = fs::read_dir(&dir) else {
            assert_ne!(kind, "corpus", "missing corpus {}", dir.display());
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|entry| entry.expect("readable corpus directory").path())
            .filter(|path| path.is_file())
            .collect();
        assert!(
            kind != "corpus" || !paths.is_empty(),
            "no engine_model corpus"
        );
        paths.sort();
        let start = if kind == "corpus" && budget > 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            (now % paths.len() as u64) as usize
        } else {
            0
        };
        eprintln!("{kind}: {} inputs, from #{start}", paths.len());
        for path in paths.iter().cycle().skip(start).take(paths.len()) {
            if kind == "corpus" && budget > 0 && started.elapsed() > Duration::from_secs(budget) {
                break;
            }
            let data = fs::read(path).expect("readable corpus file");
            let outcome = std::panic::catch_unwind(|| model::run_bytes(&data));
            assert!(outcome.is_ok(), "{} breaks the model", path.display());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} inputs in {:.1?}", started.elapsed());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_model(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        model::run_bytes(&data);
    }
}
