//! `[tap]` → [`tap::Settings`].

use std::path::PathBuf;

use serde_spanned::Spanned;

use super::{file, Severity, Validator};
use crate::tap;

impl Validator<'_> {
    /// `[tap]` (`None` when absent or disabled); `<thing_name>-tap` is the default client id.
    pub(super) fn tap(
        &mut self,
        t: &Spanned<file::Tap>,
        thing_name: &str,
    ) -> Option<tap::Settings> {
        let tf = t.get_ref();
        if !tf.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let port = match &tf.port {
            None => 1883,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.error(
                    "tap.port",
                    p,
                    format!("must be between 1 and 65535, got {}", p.get_ref()),
                );
                1883
            }
        };
        let tls = tf.tls.as_ref().is_some_and(|t| *t.get_ref());
        let file = |v: &mut Self, key: &str, f: &Option<Spanned<String>>| -> PathBuf {
            match f {
                Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
                _ if tls => {
                    v.error("tap", t, format!("`{key}` is required when tls = true"));
                    PathBuf::new()
                }
                _ => PathBuf::new(),
            }
        };
        let ca_file = file(self, "ca_file", &tf.ca_file);
        let cert_file = file(self, "cert_file", &tf.cert_file);
        let key_file = file(self, "key_file", &tf.key_file);
        let outbound = self.filters("tap.outbound", &tf.outbound);
        let inbound = self.filters("tap.inbound", &tf.inbound);
        if outbound.is_empty() && inbound.is_empty() {
            self.push(
                Severity::Warning,
                "tap",
                t,
                "neither `outbound` nor `inbound` filters: the tap counts nothing".to_owned(),
            );
        }
        let client_id = match &tf.client_id {
            Some(c) if !c.get_ref().is_empty() => c.get_ref().clone(),
            _ => tap::default_client_id(thing_name),
        };
        Some(tap::Settings {
            host: tf
                .host
                .as_ref()
                .map_or_else(|| "127.0.0.1".to_owned(), |h| h.get_ref().clone()),
            port,
            tls,
            ca_file,
            cert_file,
            key_file,
            client_id,
            outbound,
            inbound,
            reconnect_min: tap::DEFAULT_RECONNECT_MIN,
            reconnect_max: tap::DEFAULT_RECONNECT_MAX,
        })
    }

    fn filters(&mut self, key: &str, v: &Option<Vec<Spanned<String>>>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in v.iter().flatten().enumerate() {
            match crate::topic_filter::TopicFilter::parse(f.get_ref()) {
                Ok(_) => out.push(f.get_ref().clone()),
                Err(e) => self.error(&format!("{key}[{i}]"), f, e.to_string()),
            }
        }
        out
    }
}
