//! MQTT topic filters: parse, validate and match, including `$` topics.
