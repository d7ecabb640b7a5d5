//! (lifecycle owner) logging
