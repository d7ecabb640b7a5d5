//! (filesystem owner) mounts
