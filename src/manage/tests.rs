//! Unit tests for the pure manage rules.
use super::*;
