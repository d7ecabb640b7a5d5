//! (filesystem owner) devices
