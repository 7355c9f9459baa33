//! Collectors: the I/O edge that samples `/proc`, netlink and custom sources into a `Sample`.
