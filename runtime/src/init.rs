//! (lifecycle owner) init
