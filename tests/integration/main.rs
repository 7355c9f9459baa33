//! The one integration test binary: modules beside this file.

mod collect;
mod support;
