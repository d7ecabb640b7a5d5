//! cgroups v1/v2/hybrid manager.
