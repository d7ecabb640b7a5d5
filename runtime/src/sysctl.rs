//! (filesystem owner) sysctl
