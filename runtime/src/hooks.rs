//! (lifecycle owner) hooks
