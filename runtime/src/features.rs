//! (lifecycle owner) features
