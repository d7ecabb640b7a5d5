//! (lifecycle owner) container
