//! Every file of `fuzz/corpus/<target>/` through the check its fuzz target runs.

#[test]
fn every_corpus_file_passes_its_check() {
    oxsdn_tests::fuzz_corpus::replay(oxsdn_controller::fuzzing::TARGETS);
}
