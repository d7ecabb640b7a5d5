//! (security owner) capabilities
