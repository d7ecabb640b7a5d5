//! `skiff-build` binary.
fn main() {}
