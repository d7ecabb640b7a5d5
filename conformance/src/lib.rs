//! Test harness shared by skiff's conformance, differential and security suites.
