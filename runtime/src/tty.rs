//! (lifecycle owner) tty
