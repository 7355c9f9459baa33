//! `collect::parse_custom_value` on arbitrary command output, for each metric type (first byte
//! chooses): never panics, and a value it accepts passes the AWS value rules it promises.
#![no_main]

use defender_agent::collect::parse_custom_value;
use defender_agent::custom_metric::{check_value, CustomMetricType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let metric_type = match selector % 4 {
        0 => CustomMetricType::Number,
        1 => CustomMetricType::NumberList,
        2 => CustomMetricType::StringList,
        _ => CustomMetricType::IpAddressList,
    };
    match parse_custom_value(text, metric_type) {
        Ok(value) => {
            assert_eq!(value.metric_type(), metric_type);
            assert_eq!(
                check_value(&value),
                Ok(()),
                "accepted value breaks the AWS rules"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
