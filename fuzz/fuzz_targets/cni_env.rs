#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| oxsdn_cni::fuzzing::cni_env(data));
