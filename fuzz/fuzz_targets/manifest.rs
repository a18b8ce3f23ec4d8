#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxsdn_controller::fuzzing::manifest(data));
