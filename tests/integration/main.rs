//! The one integration test binary: modules beside this file.

mod cli;
mod support;

mod mqtt;

mod tap;
