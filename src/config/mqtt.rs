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
    /// `[detect.push]`'s topic. `shared_group` is the caller's (the fleet service's) to check.
    pub fn mqtt(
        &mut self,
        m: &Spanned<file::Mqtt>,
        thing_name: &str,
        format: report::Format,
    ) -> mqtt::Settings {
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
        let proxy = match &mq.proxy {
            Some(p) if !p.get_ref().is_empty() => match parse_proxy_url(p.get_ref()) {
                Ok(proxy) => Some(proxy),
                Err(reason) => {
                    // The reason never quotes the URL: it may hold the password.
                    self.error("mqtt.proxy", p, reason);
                    None
                }
            },
            _ => None,
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
        let topic_root = match &mq.topic_root {
            None => mqtt::topics::TopicRoot::default(),
            Some(r) => match mqtt::topics::TopicRoot::parse(r.get_ref()) {
                Ok(root) => root,
                Err(why) => {
                    self.error("mqtt.topic_root", r, why.to_string());
                    mqtt::topics::TopicRoot::default()
                }
            },
        };
        mqtt::Settings {
            endpoint,
            port,
            proxy,
            tls,
            ca_file,
            cert_file,
            key_file,
            alpn,
            client_id,
            thing_name: thing_name.to_owned(),
            format,
            topic_root,
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
        }
    }
}

/// `[mqtt] proxy`: `http://[user:password@]host:port[/]`. The port is required (proxies listen
/// on 3128, 8080, 80…: no default would be right more often than wrong); user and password are
/// percent-decoded; an IPv6 host is written in brackets. Refusals say what is wrong without
/// quoting the URL, which may hold the password.
pub(crate) fn parse_proxy_url(url: &str) -> Result<mqtt::Proxy, String> {
    const FORM: &str = "http://[user:password@]host:port";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("must be a URL of the form {FORM}"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(
                "https:// proxies (TLS to the proxy) are not supported: use http:// \
                        (the MQTT session inside the tunnel is TLS either way)"
                    .to_owned(),
            )
        }
        s if s.starts_with("socks") => {
            return Err(format!(
                "SOCKS proxies are not supported: only HTTP CONNECT proxies ({FORM})"
            ))
        }
        _ => return Err(format!("the scheme must be http:// ({FORM})")),
    }
    let authority = match rest.find(['/', '?', '#']) {
        Some(i) if &rest[i..] != "/" => {
            return Err(format!(
                "must not have a path, query or fragment (only {FORM})"
            ))
        }
        Some(i) => &rest[..i],
        None => rest,
    };
    // The last '@' ends the credentials, so a password may even hold an unencoded '@'.
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => {
            let Some((user, password)) = userinfo.split_once(':') else {
                return Err(format!("credentials must be user:password ({FORM})"));
            };
            let decode = |part: &str, what: &str| {
                percent_decode(part).ok_or_else(|| {
                    format!("the {what} has an invalid percent-encoding (%XX, UTF-8)")
                })
            };
            let user = decode(user, "user")?;
            if user.is_empty() {
                return Err("the user name is empty".to_owned());
            }
            let password = decode(password, "password")?;
            (Some(mqtt::ProxyCredentials { user, password }), host_port)
        }
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("an IPv6 host needs its closing ']'".to_owned());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the host in brackets is not an IPv6 address".to_owned());
        }
        (addr, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("has no host ({FORM})"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err("the host must be a DNS name or an IP address".to_owned());
    }
    let port = match port {
        None | Some("") => {
            return Err(
                "has no port: write it, e.g. http://proxy.example:3128 (there is no default)"
                    .to_owned(),
            )
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("the port must be a number between 1 and 65535".to_owned()),
        },
    };
    Ok(mqtt::Proxy {
        host: host.to_owned(),
        port,
        credentials,
    })
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(host: &str, port: u16, credentials: Option<(&str, &str)>) -> mqtt::Proxy {
        mqtt::Proxy {
            host: host.into(),
            port,
            credentials: credentials.map(|(user, password)| mqtt::ProxyCredentials {
                user: user.into(),
                password: password.into(),
            }),
        }
    }

    #[test]
    fn proxy_urls_of_the_documented_form_parse() {
        let cases = [
            (
                "http://proxy.example:3128",
                proxy("proxy.example", 3128, None),
            ),
            (
                "http://proxy.example:3128/",
                proxy("proxy.example", 3128, None),
            ),
            ("HTTP://10.0.0.1:8080", proxy("10.0.0.1", 8080, None)),
            ("http://[::1]:3128", proxy("::1", 3128, None)),
            (
                "http://alice:s3cret@proxy.example:80",
                proxy("proxy.example", 80, Some(("alice", "s3cret"))),
            ),
            (
                "http://al%20ice:p%40ss%3Aw%2Frd@proxy:3128",
                proxy("proxy", 3128, Some(("al ice", "p@ss:w/rd"))),
            ),
            (
                "http://bob:p@ss@proxy:3128",
                proxy("proxy", 3128, Some(("bob", "p@ss"))),
            ),
            (
                "http://bob:@proxy:3128",
                proxy("proxy", 3128, Some(("bob", ""))),
            ),
            (
                "http://b%C3%A9a:%E2%82%AC@proxy:3128",
                proxy("proxy", 3128, Some(("béa", "€"))),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(parse_proxy_url(url).as_ref(), Ok(&want), "{url}");
        }
    }

    #[test]
    fn proxy_urls_that_cannot_be_used_are_refused_with_the_reason() {
        let cases = [
            ("proxy.example:3128", "must be a URL"),
            ("https://proxy.example:3128", "https:// proxies"),
            (
                "socks5://proxy.example:1080",
                "SOCKS proxies are not supported",
            ),
            (
                "socks5h://proxy.example:1080",
                "SOCKS proxies are not supported",
            ),
            ("ftp://proxy.example:21", "the scheme must be http://"),
            ("http://:3128", "has no host"),
            ("http://user:pw@:3128", "has no host"),
            ("http://proxy.example", "has no port"),
            ("http://proxy.example:", "has no port"),
            ("http://[::1]", "has no port"),
            ("http://proxy.example:0", "between 1 and 65535"),
            ("http://proxy.example:65536", "between 1 and 65535"),
            ("http://proxy.example:+80", "between 1 and 65535"),
            ("http://proxy.example:3128/path", "must not have a path"),
            ("http://proxy.example:3128?x=1", "must not have a path"),
            (
                "http://user@proxy.example:3128",
                "credentials must be user:password",
            ),
            ("http://:pw@proxy.example:3128", "the user name is empty"),
            (
                "http://u:p%zz@proxy.example:3128",
                "the password has an invalid",
            ),
            (
                "http://u:p%C3@proxy.example:3128",
                "the password has an invalid",
            ),
            ("http://u%2:p@proxy.example:3128", "the user has an invalid"),
            ("http://[::1:3128", "closing ']'"),
            ("http://[proxy]:3128", "not an IPv6 address"),
            ("http://pro xy:3128", "DNS name or an IP address"),
        ];
        for (url, want) in cases {
            match parse_proxy_url(url) {
                Err(reason) => assert!(reason.contains(want), "{url}: {reason}"),
                Ok(p) => panic!("{url} accepted as {p}"),
            }
        }
    }

    #[test]
    fn a_refusal_never_quotes_the_password() {
        for url in [
            "https://u:hunter2@proxy:3128",
            "http://u:hunter2@proxy",
            "http://u:hunter2@proxy:3128/x",
            "http://u:hunter2%zz@proxy:3128",
            "http://u:hunter2@pro xy:3128",
        ] {
            let reason = parse_proxy_url(url).unwrap_err();
            assert!(!reason.contains("hunter2"), "{url}: {reason}");
        }
    }

    fn parse(proxy_line: &str) -> Result<super::super::Config, super::super::Error> {
        let src = format!(
            "thing_name = \"t\"\n[mqtt]\nendpoint = \"e.example\"\ntls = false\n{proxy_line}\n"
        );
        super::super::Config::parse(&src, "test.toml")
    }

    #[test]
    fn the_examples_proxy_line_uncommented_is_a_valid_proxy() {
        let line = super::super::EXAMPLE
            .lines()
            .find(|l| l.starts_with("# proxy = "))
            .expect("the example documents [mqtt] proxy");
        let c = parse(&line[2..]).unwrap();
        let mqtt = c.mqtt.unwrap();
        assert_eq!(mqtt.proxy, Some(proxy("proxy.example", 3128, None)));
        assert_eq!(parse("proxy = \"\"").unwrap().mqtt.unwrap().proxy, None);
        assert_eq!(parse("").unwrap().mqtt.unwrap().proxy, None);
    }

    #[test]
    fn a_bad_proxy_is_a_problem_at_its_key_line_and_column_without_the_password() {
        let err = parse("proxy = \"https://u:hunter2@proxy:3128\"").unwrap_err();
        let super::super::Error::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let errors: Vec<_> = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 1, "{problems:?}");
        assert_eq!(errors[0].key, "mqtt.proxy");
        assert_eq!(errors[0].position, Some((5, 9)));
        assert!(errors[0].message.contains("https://"));
        let shown = err.to_string();
        assert!(shown.contains("mqtt.proxy"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_proxy_shows_and_debugs_without_its_password() {
        let p = parse_proxy_url("http://alice:hunter2@[::1]:3128").unwrap();
        assert_eq!(p.to_string(), "http://alice:***@[::1]:3128");
        assert_eq!(p.address(), "[::1]:3128");
        let debug = format!("{p:?} {:?}", p.credentials);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            parse_proxy_url("http://proxy:8080").unwrap().to_string(),
            "http://proxy:8080"
        );
    }
}
