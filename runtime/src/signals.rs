//! (lifecycle owner) signals
