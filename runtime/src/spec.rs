//! (lifecycle owner) spec
