//! The one integration test binary: modules beside this file.

mod support;
mod detect;
