//! The one integration test binary: modules beside this file.

mod spool;
mod support;
