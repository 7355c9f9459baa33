//! The one integration test binary: modules beside this file.

mod detect;
mod support;
