//! (lifecycle owner) process
