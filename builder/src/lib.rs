//! skiff-build: Dockerfile parser and builder.
