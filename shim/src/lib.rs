//! containerd shim v2 for skiff.
