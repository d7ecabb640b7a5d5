//! `containerd-shim-skiff-v2` binary.
fn main() {}
