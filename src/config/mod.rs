//! Configuration: the TOML file's serde mirror (`file`) and the validated `Config`.
