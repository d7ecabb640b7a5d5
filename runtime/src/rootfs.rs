//! (filesystem owner) rootfs
