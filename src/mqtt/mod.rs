//! The MQTT link to Device Defender (rumqttc over rustls).
