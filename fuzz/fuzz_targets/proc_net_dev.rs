//! `collect::parse_net_dev` on arbitrary `/proc/net/dev` text: never panics, and every interface
//! it returns is named (non-empty, no `:`), as the kernel names them.
#![no_main]

use defender_agent::collect::parse_net_dev;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_net_dev(text) {
        Ok(interfaces) => {
            for i in &interfaces {
                assert!(!i.name.is_empty(), "empty interface name from {text:?}");
                assert!(!i.name.contains(':'), "':' in interface name {:?}", i.name);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
