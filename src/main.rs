//! The `defender-agent` binary: command line, tracing, exit codes.

fn main() {}
