//! (lifecycle owner) state
