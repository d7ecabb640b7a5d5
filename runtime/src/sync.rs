//! (lifecycle owner) sync
