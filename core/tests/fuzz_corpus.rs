//! Every committed fuzz corpus file, replayed through its target on stable Rust: what the fuzzer
//! found once (and every input that reached new code) stays a regression test without nightly.
//! `scripts/fuzz` grows and minimises the corpora in `fuzz/corpus/<target>/`.

use std::path::Path;

use portcullis_core::fuzz::TARGETS;

#[test]
fn every_corpus_file_replays_without_breaking_a_promise() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {name} is empty");
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} breaks a promise",
                file.display()
            );
        }
        total += files.len();
    }
    eprintln!(
        "replayed {total} corpus files over {} targets",
        TARGETS.len()
    );
}
