//! `[[alarms]]` → [`alarm::Output`]s.

use std::path::PathBuf;

use serde_spanned::Spanned;

use super::{file, line_col, Problem, Severity, Validator};
use crate::alarm::{self, Output, Via};

impl Validator<'_> {
    /// `[[alarms]]`, in file order; `via = "tap"` needs an enabled `[tap]` (`has_tap`), `via =
    /// "link"` an `[mqtt]` table (`has_mqtt`).
    pub(super) fn alarms(
        &mut self,
        list: &[Spanned<file::Alarm>],
        has_tap: bool,
        has_mqtt: bool,
    ) -> Vec<alarm::Output> {
        let mut alarms = Vec::new();
        for (i, a) in list.iter().enumerate() {
            if let Some(out) = self.alarm(i, a) {
                if let Output::Mqtt { via: Via::Tap, .. } = out {
                    if !has_tap {
                        self.error(
                            &format!("alarms[{i}].via"),
                            a,
                            "\"tap\" needs an enabled [tap] table",
                        );
                    }
                }
                if let Output::Mqtt { via: Via::Link, .. } = out {
                    if !has_mqtt {
                        self.error(
                            &format!("alarms[{i}].via"),
                            a,
                            "\"link\" needs an [mqtt] table",
                        );
                    }
                }
                alarms.push(out);
            }
        }
        alarms
    }

    /// One `[[alarms]]` table (`alarms[i]`): its type's keys only, each checked. The fleet
    /// service reads its agent types with it too.
    pub fn alarm(&mut self, i: usize, a: &Spanned<file::Alarm>) -> Option<Output> {
        let key = format!("alarms[{i}]");
        let x = a.get_ref();
        let kind = x.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "log" => &[],
            "file" => &["path"],
            "mqtt" => &["topic", "qos", "via"],
            "command" => &["argv", "timeout_secs"],
            other => {
                self.error(
                    &format!("{key}.type"),
                    &x.kind,
                    format!(
                        "must be one of \"log\", \"file\", \"mqtt\", \"command\", got \"{other}\""
                    ),
                );
                return None;
            }
        };
        let present = [
            ("topic", x.topic.as_ref().map(|v| v.span())),
            ("qos", x.qos.as_ref().map(|v| v.span())),
            ("via", x.via.as_ref().map(|v| v.span())),
            ("path", x.path.as_ref().map(|v| v.span())),
            ("argv", x.argv.as_ref().map(|v| v.span())),
            ("timeout_secs", x.timeout_secs.as_ref().map(|v| v.span())),
        ];
        for (name, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&name) {
                    self.problems.push(Problem {
                        severity: Severity::Error,
                        key: format!("{key}.{name}"),
                        position: Some(line_col(self.src, span.start)),
                        message: format!("does not apply to type = \"{kind}\""),
                    });
                }
            }
        }
        match kind {
            "log" => Some(Output::Log),
            "file" => match &x.path {
                Some(p) if !p.get_ref().is_empty() => Some(Output::File {
                    path: PathBuf::from(p.get_ref()),
                }),
                _ => {
                    self.error(&key, a, "type = \"file\" needs `path`");
                    None
                }
            },
            "mqtt" => {
                let topic = match &x.topic {
                    Some(t) => match crate::topic_filter::validate_topic(t.get_ref()) {
                        Ok(()) => t.get_ref().clone(),
                        Err(e) => {
                            self.error(&format!("{key}.topic"), t, e.to_string());
                            return None;
                        }
                    },
                    None => {
                        self.error(&key, a, "type = \"mqtt\" needs `topic`");
                        return None;
                    }
                };
                let qos = match &x.qos {
                    None => 1,
                    Some(q) if *q.get_ref() <= 2 => *q.get_ref() as u8,
                    Some(q) => {
                        self.error(&format!("{key}.qos"), q, "must be 0, 1 or 2");
                        1
                    }
                };
                let via = self.choice(
                    &format!("{key}.via"),
                    &x.via,
                    Via::Link,
                    &[("link", Via::Link), ("tap", Via::Tap)],
                );
                Some(Output::Mqtt { topic, qos, via })
            }
            _ => match &x.argv {
                Some(argv) if argv.get_ref().first().is_some_and(|p| !p.is_empty()) => {
                    Some(Output::Command {
                        argv: argv.get_ref().clone(),
                        timeout: self.secs(
                            &format!("{key}.timeout_secs"),
                            &x.timeout_secs,
                            10,
                            1,
                            300,
                        ),
                    })
                }
                _ => {
                    self.error(
                        &key,
                        a,
                        "type = \"command\" needs `argv` = [\"/path/to/program\", ...]",
                    );
                    None
                }
            },
        }
    }
}
