//! Scenario files: any text through the TOML parser and the scenario checks (matrix
//! expansion, parameters, limits), as a user's file would be.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = harness::scenario::Scenario::parse("fuzz.toml", text) {
        std::hint::black_box(s.schedule().len());
    }
});
