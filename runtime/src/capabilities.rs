//! Linux capabilities: name parsing and the five capability sets.
