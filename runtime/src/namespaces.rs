//! (lifecycle owner) namespaces
