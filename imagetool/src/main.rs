//! `skiff-image` binary.
fn main() {}
