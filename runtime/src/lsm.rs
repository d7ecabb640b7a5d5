//! (security owner) lsm
