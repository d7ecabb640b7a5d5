//! (security owner) privileges
