//! The one integration test binary: modules beside this file.

mod report;
mod support;
