//! Fuzz target: the Dockerfile parser, the word expander and .dockerignore matching must
//! never panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = skiff_build::fuzzing::exercise(s);
});
