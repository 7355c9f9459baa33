//! Traffic counters: MQTT messages counted by TOPIC_FILTER dimension scope.
