//! `[mqtt]` → [`mqtt::Settings`].

use std::path::PathBuf;

use serde_spanned::Spanned;

use super::{file, Severity, Validator};

/// AWS IoT Core raises a keep-alive below 30 s to 30 s (AWS IoT Core quotas).
pub const AWS_MIN_KEEP_ALIVE_SECS: u64 = 30;

/// Checks `mqtt.endpoint`: a host name or an IP address, as the link dials it; a scheme, a port,
/// a path, brackets or spaces would only fail at connect time.
pub fn check_endpoint(e: &str) -> Result<(), String> {
    const WHAT: &str = "must be a host name or IP address";
    if let Some((scheme, _)) = e.split_once("://") {
        return Err(format!("{WHAT}, without a scheme (\"{scheme}://\")"));
    }
    if e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{WHAT}: it contains a space or control character"));
    }
    if e.contains('/') {
        return Err(format!("{WHAT}, without a path"));
    }
    if e.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if e.starts_with('[') {
        return Err(format!("{WHAT}: write an IPv6 address without brackets"));
    }
    if let Some((_, port)) = e.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{WHAT}, without a port: set mqtt.port = {port}"));
        }
    }
    if e.len() > 253 {
        return Err(format!("{WHAT}: at most 253 bytes"));
    }
    if let Some(c) = e
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("{WHAT}: {c:?} cannot appear in one"));
    }
    // A trailing dot (a fully qualified name) is allowed; an empty label elsewhere is not.
    if e.strip_suffix('.')
        .unwrap_or(e)
        .split('.')
        .any(str::is_empty)
    {
        return Err(format!("{WHAT}: it has an empty label"));
    }
    Ok(())
}
use crate::mqtt;
use crate::report;

impl Validator<'_> {
    /// `[mqtt]`; `thing_name` names the topics and is the default client id, `format` is
    /// `[report] format` (it picks the topics). The subscriptions are left empty: the caller adds
    /// `[detect.push]`'s topic.
    pub(super) fn mqtt(
        &mut self,
        m: &Spanned<file::Mqtt>,
        thing_name: &str,
        format: report::Format,
    ) -> Option<mqtt::Settings> {
        let mq = m.get_ref();
        let endpoint = match &mq.endpoint {
            Some(e) if !e.get_ref().is_empty() => {
                if let Err(why) = check_endpoint(e.get_ref()) {
                    self.error("mqtt.endpoint", e, why);
                }
                e.get_ref().clone()
            }
            Some(e) => {
                self.error("mqtt.endpoint", e, "must not be empty");
                String::new()
            }
            None => {
                self.error("mqtt", m, "`endpoint` is required in [mqtt]");
                String::new()
            }
        };
        let port = match &mq.port {
            None => 8883,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.error(
                    "mqtt.port",
                    p,
                    format!("must be between 1 and 65535, got {}", p.get_ref()),
                );
                8883
            }
        };
        let tls = mq.tls.as_ref().is_none_or(|t| *t.get_ref());
        if let (false, Some(t)) = (tls, &mq.tls) {
            self.push(
                Severity::Warning,
                "mqtt.tls",
                t,
                "false: reports travel in plaintext; only for a local broker".to_owned(),
            );
        }
        let file_key = |v: &mut Self, key: &str, f: &Option<Spanned<String>>| -> PathBuf {
            match f {
                Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
                Some(p) if tls => {
                    v.error(
                        &format!("mqtt.{key}"),
                        p,
                        "must not be empty when tls = true",
                    );
                    PathBuf::new()
                }
                None if tls => {
                    v.error(
                        "mqtt",
                        m,
                        format!("`{key}` is required when tls = true (mutual TLS)"),
                    );
                    PathBuf::new()
                }
                _ => PathBuf::new(),
            }
        };
        let ca_file = file_key(self, "ca_file", &mq.ca_file);
        let cert_file = file_key(self, "cert_file", &mq.cert_file);
        let key_file = file_key(self, "key_file", &mq.key_file);
        let alpn = mq
            .alpn
            .as_ref()
            .map_or_else(String::new, |a| a.get_ref().clone());
        if let Some(a) = &mq.alpn {
            if a.get_ref().len() > 255 {
                self.error("mqtt.alpn", a, "must be at most 255 bytes");
            }
            if !a.get_ref().is_empty() && !tls {
                self.error("mqtt.alpn", a, "needs tls = true");
            }
        }
        if port == 443 && alpn.is_empty() && tls {
            if let Some(p) = &mq.port {
                self.push(
                    Severity::Warning,
                    "mqtt.port",
                    p,
                    "443 without alpn: AWS IoT needs alpn = \"x-amzn-mqtt-ca\" on port 443"
                        .to_owned(),
                );
            }
        }
        let client_id = match &mq.client_id {
            Some(c) if !c.get_ref().is_empty() => {
                if c.get_ref().len() > 128 {
                    self.error(
                        "mqtt.client_id",
                        c,
                        "must be at most 128 bytes (AWS IoT limit)",
                    );
                }
                c.get_ref().clone()
            }
            _ => thing_name.to_owned(),
        };
        let reconnect_min = self.secs(
            "mqtt.reconnect_min_secs",
            &mq.reconnect_min_secs,
            1,
            1,
            3_600,
        );
        let reconnect_max = self.secs(
            "mqtt.reconnect_max_secs",
            &mq.reconnect_max_secs,
            300,
            1,
            86_400,
        );
        if reconnect_max < reconnect_min {
            if let Some(s) = &mq.reconnect_max_secs {
                self.error(
                    "mqtt.reconnect_max_secs",
                    s,
                    "must not be smaller than reconnect_min_secs",
                );
            }
        }
        let keep_alive = self.secs("mqtt.keep_alive_secs", &mq.keep_alive_secs, 60, 5, 1_200);
        if let Some(k) = &mq.keep_alive_secs {
            if (5..AWS_MIN_KEEP_ALIVE_SECS).contains(k.get_ref()) {
                self.push(
                    Severity::Warning,
                    "mqtt.keep_alive_secs",
                    k,
                    format!(
                        "{} s is below {AWS_MIN_KEEP_ALIVE_SECS} s: AWS IoT raises a shorter keep-alive to {AWS_MIN_KEEP_ALIVE_SECS} s",
                        k.get_ref()
                    ),
                );
            }
        }
        Some(mqtt::Settings {
            endpoint,
            port,
            tls,
            ca_file,
            cert_file,
            key_file,
            alpn,
            client_id,
            thing_name: thing_name.to_owned(),
            format,
            keep_alive,
            clean_session: mq.clean_session.as_ref().is_none_or(|c| *c.get_ref()),
            reconnect_min,
            reconnect_max,
            answer_timeout: self.secs(
                "mqtt.answer_timeout_secs",
                &mq.answer_timeout_secs,
                60,
                1,
                3_600,
            ),
            subscriptions: Vec::new(),
        })
    }
}
