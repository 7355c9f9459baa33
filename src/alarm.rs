//! Alarm outputs (placeholder).
