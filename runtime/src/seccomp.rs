//! (security owner) seccomp
