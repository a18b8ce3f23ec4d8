//! Replaying the fuzz corpora (`fuzz/corpus/<target>/`) through the checks the fuzz
//! targets run, so the seeds and every finding kept there are regression tests that need
//! no libFuzzer.

use std::path::Path;

/// What a fuzz target runs on one input; it panics on a bug.
pub type Check = fn(&[u8]);

/// Runs every file of `fuzz/corpus/<name>/` through `check` for each target; a target
/// without corpus files fails.
pub fn replay(targets: &[(&str, Check)]) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, check) in targets {
        let dir = corpus.join(target);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            eprintln!("{target}: {}", path.display());
            check(&std::fs::read(&path).expect("corpus file"));
            files += 1;
        }
        assert!(files > 0, "fuzz/corpus/{target} is empty");
    }
}
