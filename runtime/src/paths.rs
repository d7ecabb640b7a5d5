//! Filesystem: safe resolution of paths inside a root.
