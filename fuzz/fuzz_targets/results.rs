//! results.json: any bytes through the loader that `vmbench` uses to read an earlier run's
//! results (schema check, then the typed model), as a user's file would be.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = harness::results::parse(std::path::Path::new("results.json"), data);
});
