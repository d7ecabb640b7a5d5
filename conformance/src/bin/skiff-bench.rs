//! Benchmarks of skiff against runc, crun, umoci and buildah.
fn main() {}
