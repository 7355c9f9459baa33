//! The local Detect engine: security profiles, behaviors, violations.
