//! The `dimensions` and `security-profiles` commands, run as a user would: the AWS API's verbs
//! over the `[detect]` directories, in both request shapes (flags, `--cli-input-json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use defender_agent::detect::{self, Format, Mode, ValidationContext};
use serde_json::{json, Value};

use crate::support::agent_bin;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// What one command did: exit code, stdout parsed as JSON (or Null), stderr text.
struct Out {
    code: i32,
    json: Value,
    stderr: String,
}

impl Out {
    fn ok(self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self.json
    }
    /// The API error: exit 2 and `{"__type","message"}` on stderr.
    fn api_error(&self, ty: &str) -> String {
        assert_eq!(
            self.code, 2,
            "stdout: {} stderr: {}",
            self.json, self.stderr
        );
        let e: Value = serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", self.stderr));
        assert_eq!(e["__type"], ty, "{e}");
        e["message"].as_str().unwrap().to_owned()
    }
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        let text = format!(
            "thing_name = \"t\"\nstate_dir = \"{s}\"\n[detect]\nprofiles = [\"{p}\"]\ndimensions = [\"{d}\"]\nmode = \"strict\"\n",
            s = dir.path().join("state").display(),
            p = dir.path().join("profiles").display(),
            d = dir.path().join("dimensions").display(),
        );
        std::fs::write(&config, text).unwrap();
        Env { dir, config }
    }

    fn profiles(&self) -> PathBuf {
        self.dir.path().join("profiles")
    }

    fn dimensions(&self) -> PathBuf {
        self.dir.path().join("dimensions")
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(agent_bin());
        cmd.args(&args[..2])
            .arg("--config")
            .arg(&self.config)
            .args(&args[2..])
            .env("DEFENDER_AGENT_LOG", "warn")
            .env_remove("DEFENDER_AGENT_REGION")
            .env_remove("DEFENDER_AGENT_ACCOUNT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run defender-agent");
        Out {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Writes a request file and returns its `file://` argument.
    fn input(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        format!("file://{}", p.display())
    }

    fn json(&self, args: &[&str], request: &Value) -> Out {
        let file = self.input(
            "request.json",
            &serde_json::to_string_pretty(request).unwrap(),
        );
        let mut a = args.to_vec();
        a.push("--cli-input-json");
        a.push(&file);
        self.run(&a)
    }

    /// Every file in the managed directories with its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for d in [self.profiles(), self.dimensions()] {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd {
                    let p = e.unwrap().path();
                    out.insert(p.clone(), std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        out
    }
}

const BEHAVIORS: &str = r#"[{"name":"AuthMessages","metric":"aws:num-messages-sent","metricDimension":{"dimensionName":"Auth","operator":"IN"},"criteria":{"comparisonOperator":"less-than","value":{"count":10},"durationSeconds":300}}]"#;

fn create_auth_dimension(env: &Env) {
    env.run(&[
        "dimensions",
        "create",
        "--name",
        "Auth",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "device/+/auth",
    ])
    .ok();
}

fn create_profile(env: &Env, name: &str, behaviors: &str) -> Value {
    env.run(&[
        "security-profiles",
        "create",
        "--security-profile-name",
        name,
        "--behaviors",
        behaviors,
    ])
    .ok()
}

fn load_profile_file(path: &Path, dims: &[detect::Dimension]) -> detect::SecurityProfile {
    let text = std::fs::read_to_string(path).unwrap();
    let ctx = ValidationContext::new(dims.to_vec(), Vec::new());
    detect::load_profile(&text, "f", Format::Json, &ctx, Mode::Strict)
        .unwrap()
        .profile
}

#[test]
fn dimensions_round_trip_through_every_command_with_flags() {
    let env = Env::new();
    let out = env
        .run(&[
            "dimensions",
            "create",
            "--name",
            "Auth",
            "--type",
            "TOPIC_FILTER",
            "--string-values",
            "device/+/auth",
            "admin/#",
            "--tags",
            r#"[{"Key":"team","Value":"edge"}]"#,
        ])
        .ok();
    assert_eq!(
        out,
        json!({"name":"Auth","arn":"arn:aws:iot:local:000000000000:dimension/Auth"})
    );
    let d = env.run(&["dimensions", "describe", "--name", "Auth"]).ok();
    assert_eq!(d["type"], "TOPIC_FILTER");
    assert_eq!(d["stringValues"], json!(["device/+/auth", "admin/#"]));
    assert!(d["creationDate"].as_f64().unwrap() > 1.6e9);
    assert!(d.get("localMetadata").is_none(), "{d}");
    let u = env
        .run(&[
            "dimensions",
            "update",
            "--name",
            "Auth",
            "--string-values",
            "device/${iot:ClientId}/auth",
        ])
        .ok();
    assert_eq!(u["stringValues"], json!(["device/${iot:ClientId}/auth"]));
    assert_eq!(u["creationDate"], d["creationDate"]);
    let l = env.run(&["dimensions", "list"]).ok();
    assert_eq!(l, json!({"dimensionNames":["Auth"]}));
    // What the daemon's loader will read.
    let text = std::fs::read_to_string(env.dimensions().join("Auth.json")).unwrap();
    let loaded = detect::load_dimension(&text, "Auth.json", Format::Json, Mode::Strict).unwrap();
    assert_eq!(loaded.string_values, vec!["device/${iot:ClientId}/auth"]);
    assert_eq!(
        env.run(&["dimensions", "delete", "--name", "Auth"]).ok(),
        json!({})
    );
    env.run(&["dimensions", "describe", "--name", "Auth"])
        .api_error("ResourceNotFoundException");
    assert!(env.snapshot().is_empty());
}

#[test]
fn dimensions_round_trip_through_every_command_with_cli_input_json() {
    let env = Env::new();
    let created = env
        .json(
            &["dimensions", "create"],
            &json!({"name":"Auth","type":"TOPIC_FILTER","stringValues":["device/+/auth"],"clientRequestToken":"t-1"}),
        )
        .ok();
    assert_eq!(created["name"], "Auth");
    let d = env
        .json(&["dimensions", "describe"], &json!({"name":"Auth"}))
        .ok();
    assert_eq!(d["arn"], created["arn"]);
    let u = env
        .json(
            &["dimensions", "update"],
            &json!({"name":"Auth","stringValues":["a/+"]}),
        )
        .ok();
    assert_eq!(u["stringValues"], json!(["a/+"]));
    let l = env
        .json(&["dimensions", "list"], &json!({"maxResults": 10}))
        .ok();
    assert_eq!(l["dimensionNames"], json!(["Auth"]));
    env.json(&["dimensions", "delete"], &json!({"name":"Auth"}))
        .ok();
    assert_eq!(
        env.run(&["dimensions", "list"]).ok()["dimensionNames"],
        json!([])
    );
}

#[test]
fn security_profiles_round_trip_through_every_command_in_both_shapes() {
    let env = Env::new();
    create_auth_dimension(&env);
    let created = create_profile(&env, "Edge", BEHAVIORS);
    assert_eq!(
        created,
        json!({"securityProfileName":"Edge","securityProfileArn":"arn:aws:iot:local:000000000000:securityprofile/Edge"})
    );
    let created = env
        .json(
            &["security-profiles", "create"],
            &json!({"securityProfileName":"Json","securityProfileDescription":"from a file",
                    "behaviors": serde_json::from_str::<Value>(BEHAVIORS).unwrap(),
                    "alertTargets":{"SNS":{"alertTargetArn":"arn:aws:sns:local:000000000000:t","roleArn":"arn:aws:iam::000000000000:role/r"}},
                    "additionalMetricsToRetainV2":[{"metric":"aws:num-listening-tcp-ports"}],
                    "tags":[{"Key":"k","Value":"v"}]}),
        )
        .ok();
    assert_eq!(created["securityProfileName"], "Json");
    for name in ["Edge", "Json"] {
        let by_flag = env
            .run(&[
                "security-profiles",
                "describe",
                "--security-profile-name",
                name,
            ])
            .ok();
        let by_json = env
            .json(
                &["security-profiles", "describe"],
                &json!({"securityProfileName": name}),
            )
            .ok();
        assert_eq!(by_flag, by_json);
        assert_eq!(by_flag["version"], 1);
        assert_eq!(by_flag["behaviors"][0]["name"], "AuthMessages");
        assert_eq!(by_flag["creationDate"], by_flag["lastModifiedDate"]);
    }
    let u = env
        .run(&[
            "security-profiles",
            "update",
            "--security-profile-name",
            "Json",
            "--delete-alert-targets",
            "--delete-additional-metrics-to-retain",
            "--expected-version",
            "1",
        ])
        .ok();
    assert_eq!(u["version"], 2);
    assert!(u.get("alertTargets").is_none(), "{u}");
    assert!(u.get("additionalMetricsToRetainV2").is_none(), "{u}");
    let u = env
        .json(
            &["security-profiles", "update"],
            &json!({"securityProfileName":"Json","deleteBehaviors":true,"expectedVersion":2}),
        )
        .ok();
    assert_eq!(u["version"], 3);
    assert_eq!(u["behaviors"], json!([]));
    let l = env.run(&["security-profiles", "list"]).ok();
    assert_eq!(
        l["securityProfileIdentifiers"],
        json!([{"name":"Edge","arn":"arn:aws:iot:local:000000000000:securityprofile/Edge"},
               {"name":"Json","arn":"arn:aws:iot:local:000000000000:securityprofile/Json"}])
    );
    // The file is what the daemon's loader reads, in STRICT mode.
    let dims = vec![detect::load_dimension(
        &std::fs::read_to_string(env.dimensions().join("Auth.json")).unwrap(),
        "d",
        Format::Json,
        Mode::Strict,
    )
    .unwrap()];
    let p = load_profile_file(&env.profiles().join("Edge.json"), &dims);
    assert_eq!(p.behaviors.len(), 1);
    env.run(&[
        "security-profiles",
        "delete",
        "--security-profile-name",
        "Edge",
    ])
    .ok();
    env.json(
        &["security-profiles", "delete"],
        &json!({"securityProfileName":"Json","expectedVersion":3}),
    )
    .ok();
    assert_eq!(
        env.run(&["security-profiles", "list"]).ok(),
        json!({"securityProfileIdentifiers":[]})
    );
    env.run(&[
        "security-profiles",
        "describe",
        "--security-profile-name",
        "Edge",
    ])
    .api_error("ResourceNotFoundException");
}

#[test]
fn create_with_the_same_token_is_idempotent_and_a_different_request_already_exists() {
    let env = Env::new();
    let args = [
        "dimensions",
        "create",
        "--name",
        "Auth",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "device/+/auth",
        "--client-request-token",
        "tok-1",
    ];
    let first = env.run(&args).ok();
    let before = env.snapshot();
    assert_eq!(env.run(&args).ok(), first);
    assert_eq!(
        env.snapshot(),
        before,
        "an idempotent repeat rewrites nothing"
    );
    let mut other = args.to_vec();
    other[7] = "other/#";
    env.run(&other).api_error("ResourceAlreadyExistsException");
    create_profile(&env, "P", BEHAVIORS);
    let again = create_profile(&env, "P", BEHAVIORS);
    assert_eq!(again["securityProfileName"], "P");
    env.run(&[
        "security-profiles",
        "create",
        "--security-profile-name",
        "P",
    ])
    .api_error("ResourceAlreadyExistsException");
    assert_eq!(env.snapshot().len(), 2);
}

#[test]
fn a_stale_expected_version_is_a_version_conflict_and_changes_nothing() {
    let env = Env::new();
    create_auth_dimension(&env);
    create_profile(&env, "P", BEHAVIORS);
    env.run(&[
        "security-profiles",
        "update",
        "--security-profile-name",
        "P",
        "--security-profile-description",
        "v2",
    ])
    .ok();
    let before = env.snapshot();
    let m = env
        .run(&[
            "security-profiles",
            "update",
            "--security-profile-name",
            "P",
            "--security-profile-description",
            "lost update",
            "--expected-version",
            "1",
        ])
        .api_error("VersionConflictException");
    assert!(m.contains("version 2"), "{m}");
    env.run(&[
        "security-profiles",
        "delete",
        "--security-profile-name",
        "P",
        "--expected-version",
        "1",
    ])
    .api_error("VersionConflictException");
    assert_eq!(env.snapshot(), before);
}

#[test]
fn a_dimension_a_profile_uses_cannot_be_deleted_until_the_profile_lets_go() {
    let env = Env::new();
    create_auth_dimension(&env);
    create_profile(&env, "P", BEHAVIORS);
    let m = env
        .run(&["dimensions", "delete", "--name", "Auth"])
        .api_error("InvalidRequestException");
    assert!(m.contains("used by security profile(s) P"), "{m}");
    assert!(env.dimensions().join("Auth.json").exists());
    env.run(&[
        "security-profiles",
        "update",
        "--security-profile-name",
        "P",
        "--delete-behaviors",
    ])
    .ok();
    env.run(&["dimensions", "delete", "--name", "Auth"]).ok();
    // A type change is refused too.
    create_auth_dimension(&env);
    env.json(
        &["dimensions", "update"],
        &json!({"name":"Auth","type":"SOURCE_IP","stringValues":["a"]}),
    )
    .api_error("InvalidRequestException");
}

#[test]
fn lists_paginate_with_next_token_and_filter_by_dimension() {
    let env = Env::new();
    create_auth_dimension(&env);
    for i in 0..5 {
        let name = format!("P{i}");
        if i % 2 == 0 {
            create_profile(&env, &name, BEHAVIORS);
        } else {
            env.run(&[
                "security-profiles",
                "create",
                "--security-profile-name",
                &name,
            ])
            .ok();
        }
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["security-profiles", "list", "--max-results", "2"];
        if let Some(t) = &token {
            args.push("--next-token");
            args.push(t);
        }
        let page = env.run(&args).ok();
        pages += 1;
        for i in page["securityProfileIdentifiers"].as_array().unwrap() {
            names.push(i["name"].as_str().unwrap().to_owned());
        }
        match page["nextToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["P0", "P1", "P2", "P3", "P4"]);
    let f = env
        .run(&["security-profiles", "list", "--dimension-name", "Auth"])
        .ok();
    let filtered: Vec<&str> = f["securityProfileIdentifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(filtered, ["P0", "P2", "P4"]);
    // A token from one filter is refused under another; maxResults is bounded.
    let first = env
        .run(&["security-profiles", "list", "--max-results", "1"])
        .ok();
    let t = first["nextToken"].as_str().unwrap();
    env.run(&[
        "security-profiles",
        "list",
        "--dimension-name",
        "Auth",
        "--next-token",
        t,
    ])
    .api_error("InvalidRequestException");
    env.run(&["dimensions", "list", "--max-results", "0"])
        .api_error("InvalidRequestException");
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing_on_disk() {
    let env = Env::new();
    create_auth_dimension(&env);
    let before = env.snapshot();

    // Malformed JSON: file, line and column.
    let file = env.input(
        "bad.json",
        "{\n  \"securityProfileName\": \"P\",\n  \"behaviors\": [,]\n}\n",
    );
    let m = env
        .run(&["security-profiles", "create", "--cli-input-json", &file])
        .api_error("InvalidRequestException");
    assert!(m.contains("bad.json:3:17"), "{m}");

    // An unknown field names itself.
    let m = env
        .json(
            &["security-profiles", "create"],
            &json!({"securityProfileName":"P","behaviours":[]}),
        )
        .api_error("InvalidRequestException");
    assert!(m.contains("unknown field `behaviours`"), "{m}");
    let m = env
        .json(
            &["dimensions", "create"],
            &json!({"name":"D","type":"TOPIC_FILTER","stringValues":["a"],"operator":"IN"}),
        )
        .api_error("InvalidRequestException");
    assert!(m.contains("unknown field `operator`"), "{m}");

    // A behavior that fails STRICT validation (the API's own published message).
    let m = env
        .run(&[
            "security-profiles",
            "create",
            "--security-profile-name",
            "P",
            "--behaviors",
            r#"[{"name":"Authorization","metric":"aws:num-authorization-failures","criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300,"consecutiveDatapointsToAlarm":100000}}]"#,
        ])
        .api_error("InvalidRequestException");
    assert!(
        m.contains("Behavior Authorization is malformed. consecutiveDatapointsToAlarm 100000 should be in range[1,10]"),
        "{m}"
    );
    // A malformed --behaviors flag names the flag.
    let m = env
        .run(&[
            "security-profiles",
            "create",
            "--security-profile-name",
            "P",
            "--behaviors",
            "[{",
        ])
        .api_error("InvalidRequestException");
    assert!(m.contains("--behaviors:1:"), "{m}");

    // Names that break the API pattern.
    for args in [
        vec![
            "security-profiles",
            "create",
            "--security-profile-name",
            "my profile",
        ],
        vec![
            "dimensions",
            "create",
            "--name",
            "../escape",
            "--type",
            "TOPIC_FILTER",
            "--string-values",
            "a",
        ],
        vec!["dimensions", "describe", "--name", "a/b"],
    ] {
        let m = env.run(&args).api_error("InvalidRequestException");
        assert!(m.contains("[a-zA-Z0-9:_-]+"), "{m}");
    }
    // An invalid topic filter.
    env.run(&[
        "dimensions",
        "create",
        "--name",
        "D",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "a/#/b",
    ])
    .api_error("InvalidRequestException");

    assert_eq!(
        env.snapshot(),
        before,
        "nothing written, no temporary file left"
    );
    assert!(!env.dir.path().join("escape.json").exists());
}

#[test]
fn arns_take_region_and_account_from_the_environment() {
    let env = Env::new();
    let out = env
        .run_env(
            &[
                "dimensions",
                "create",
                "--name",
                "Auth",
                "--type",
                "TOPIC_FILTER",
                "--string-values",
                "a",
            ],
            &[
                ("DEFENDER_AGENT_REGION", "eu-west-1"),
                ("DEFENDER_AGENT_ACCOUNT", "123456789012"),
            ],
        )
        .ok();
    assert_eq!(
        out["arn"],
        "arn:aws:iot:eu-west-1:123456789012:dimension/Auth"
    );
}

#[test]
fn a_config_without_detect_is_bad_input() {
    let env = Env::new();
    std::fs::write(&env.config, "thing_name = \"t\"\n").unwrap();
    let out = env.run(&["dimensions", "list"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("[detect]"), "{}", out.stderr);
}

#[test]
fn reload_sends_sighup_to_the_daemon_named_in_the_status_file() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    // A stand-in daemon: `sleep` dies of the SIGHUP the command sends.
    let mut daemon = Command::new("sleep").arg("60").spawn().expect("run sleep");
    let state = env.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let status = defender_agent::status::Status {
        pid: daemon.id(),
        thing_name: "t".into(),
        started_at: 0,
        updated_at: 0,
        connection: defender_agent::status::LinkState::Connected,
        last_error: None,
        last_report: None,
        last_answer: None,
        spool: Default::default(),
        traffic: None,
    };
    defender_agent::status::write(&state, &status).unwrap();
    let out = env.run(&[
        "dimensions",
        "create",
        "--name",
        "Auth",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "a",
        "--reload",
    ]);
    let code = out.code;
    if code != 0 {
        let _ = daemon.kill();
    }
    assert_eq!(code, 0, "{}", out.stderr);
    let exit = daemon.wait().unwrap();
    assert_eq!(exit.signal(), Some(libc::SIGHUP), "{exit:?}");
}

#[test]
fn reload_without_a_running_daemon_fails_after_the_change_is_written() {
    let env = Env::new();
    let out = env.run(&[
        "dimensions",
        "create",
        "--name",
        "Auth",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "a",
        "--reload",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--reload"), "{}", out.stderr);
    assert_eq!(out.json["name"], "Auth");
    assert!(env.dimensions().join("Auth.json").exists());
}

/// Loads a profiles directory the way the daemon does (LOAD mode, every `.json`).
fn load_dir(dir: &Path, ctx: &ValidationContext) -> Vec<detect::SecurityProfile> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        let name = p.display().to_string();
        out.push(
            detect::load_profile(&text, &name, Format::Json, ctx, Mode::Load)
                .unwrap()
                .profile,
        );
    }
    out
}

#[test]
fn deleting_a_profile_in_alarm_invalidates_its_violations_on_reload() {
    use defender_agent::detect::violation::ViolationEventType;
    use defender_agent::detect::{DetectEngine, EngineSettings, TrafficLog, TrafficRecord};
    let env = Env::new();
    create_profile(
        &env,
        "P",
        r#"[{"name":"Chatty","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","value":{"count":1},"durationSeconds":300}}]"#,
    );
    let ctx = ValidationContext::default();
    let mut engine = DetectEngine::new(
        EngineSettings::new("t1"),
        &load_dir(&env.profiles(), &ctx),
        &ctx,
    );
    let mut log = TrafficLog::new("c1");
    for k in 0..15 {
        log.record(
            299_000 - k,
            TrafficRecord::Publish {
                topic: "x".into(),
                bytes: 10,
            },
        );
    }
    let evs = engine.evaluate_cloud(&log, 300_000);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].event.violation_event_type,
        ViolationEventType::InAlarm
    );
    env.run(&[
        "security-profiles",
        "delete",
        "--security-profile-name",
        "P",
    ])
    .ok();
    let evs = engine.reconfigure(&load_dir(&env.profiles(), &ctx), &ctx, 400_000);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].event.violation_event_type,
        ViolationEventType::AlarmInvalidated
    );
    assert!(engine.active_violations().is_empty());
}

#[test]
fn a_temporary_file_left_by_a_crash_is_ignored_and_replaced() {
    let env = Env::new();
    std::fs::create_dir_all(env.profiles()).unwrap();
    // What a crash between write and rename leaves: a half file under the temporary name.
    std::fs::write(
        env.profiles().join("P.json.tmp"),
        "{\"securityProfileName\":\"P\",\"behav",
    )
    .unwrap();
    assert_eq!(
        env.run(&["security-profiles", "list"]).ok(),
        json!({"securityProfileIdentifiers":[]})
    );
    env.run(&[
        "security-profiles",
        "create",
        "--security-profile-name",
        "P",
    ])
    .ok();
    assert!(!env.profiles().join("P.json.tmp").exists());
    let p = env
        .run(&[
            "security-profiles",
            "describe",
            "--security-profile-name",
            "P",
        ])
        .ok();
    assert_eq!(p["version"], 1);
}

#[test]
fn concurrent_updates_with_the_same_expected_version_let_exactly_one_through() {
    let env = Env::new();
    create_profile(&env, "P", "[]");
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(agent_bin())
                .args(["security-profiles", "update", "--config"])
                .arg(&env.config)
                .args([
                    "--security-profile-name",
                    "P",
                    "--security-profile-description",
                    &format!("writer {i}"),
                    "--expected-version",
                    "1",
                ])
                .env("DEFENDER_AGENT_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code().unwrap_or(-1))
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 2).count(), 3, "{codes:?}");
    let p = env
        .run(&[
            "security-profiles",
            "describe",
            "--security-profile-name",
            "P",
        ])
        .ok();
    assert_eq!(p["version"], 2);
}

#[test]
fn a_hand_written_toml_dimension_is_listed_and_described_but_not_rewritten() {
    let env = Env::new();
    std::fs::create_dir_all(env.dimensions()).unwrap();
    std::fs::write(
        env.dimensions().join("hand.toml"),
        "# mine\nname = \"Hand\"\ntype = \"TOPIC_FILTER\"\nstringValues = [\"a/+\"]\n",
    )
    .unwrap();
    assert_eq!(
        env.run(&["dimensions", "list"]).ok(),
        json!({"dimensionNames":["Hand"]})
    );
    let d = env.run(&["dimensions", "describe", "--name", "Hand"]).ok();
    assert_eq!(d["stringValues"], json!(["a/+"]));
    let m = env
        .run(&[
            "dimensions",
            "update",
            "--name",
            "Hand",
            "--string-values",
            "b",
        ])
        .api_error("InvalidRequestException");
    assert!(m.contains("hand.toml"), "{m}");
    env.run(&[
        "dimensions",
        "create",
        "--name",
        "Hand",
        "--type",
        "TOPIC_FILTER",
        "--string-values",
        "a/+",
    ])
    .api_error("ResourceAlreadyExistsException");
}

#[test]
fn execute_runs_a_json_request_on_the_same_files_as_the_commands() {
    use defender_agent::manage::ops::{execute, Managed, OpError, Resource, Verb};
    use defender_agent::manage::Arns;
    let env = Env::new();
    let m = Managed {
        profiles: defender_agent::manage::files::Dir::new(env.profiles()),
        dimensions: defender_agent::manage::files::Dir::new(env.dimensions()),
        custom_metrics: Vec::new(),
    };
    let arns = Arns::default();
    let r = execute(
        &m,
        Resource::Dimensions,
        Verb::Create,
        r#"{"name":"Auth","type":"TOPIC_FILTER","stringValues":["device/+/auth"]}"#,
        "payload",
        1_700_000_000.0,
        &arns,
    )
    .unwrap();
    let created: Value = serde_json::from_str(&r.json).unwrap();
    assert_eq!(
        created["arn"],
        "arn:aws:iot:local:000000000000:dimension/Auth"
    );
    let d = env.run(&["dimensions", "describe", "--name", "Auth"]).ok();
    assert_eq!(d["creationDate"], 1_700_000_000.0);
    let r = execute(
        &m,
        Resource::SecurityProfiles,
        Verb::List,
        "",
        "payload",
        0.0,
        &arns,
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&r.json).unwrap(),
        json!({"securityProfileIdentifiers":[]})
    );
    match execute(
        &m,
        Resource::SecurityProfiles,
        Verb::Describe,
        "{\n\"securityProfileName\": 5}",
        "payload",
        0.0,
        &arns,
    ) {
        Err(OpError::Api(e)) => {
            assert_eq!(e.code(), "InvalidRequestException");
            assert!(e.message().starts_with("payload:2:"), "{}", e.message());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn members_the_model_does_not_have_are_refused_at_any_depth_with_their_path() {
    // issue 15: unknown members inside Behavior, BehaviorCriteria, MetricValue, … were dropped.
    let env = Env::new();
    create_auth_dimension(&env);
    let before = env.snapshot();
    let behavior = |patch: &str, with: &str| -> Value {
        let b: Value = serde_json::from_str(BEHAVIORS).unwrap();
        let text = serde_json::to_string(&b[0])
            .unwrap()
            .replacen(patch, with, 1);
        serde_json::from_str(&text).unwrap()
    };
    for (b, path) in [
        (
            behavior(r#""name":"#, r#""colour":1,"name":"#),
            "behaviors[0]",
        ),
        (
            behavior(
                r#""comparisonOperator":"#,
                r#""colour":1,"comparisonOperator":"#,
            ),
            "behaviors[0].criteria",
        ),
        (
            behavior(r#""count":10"#, r#""count":10,"colour":1"#),
            "behaviors[0].criteria.value",
        ),
        (
            behavior(r#""operator":"IN""#, r#""operator":"IN","colour":1"#),
            "behaviors[0].metricDimension",
        ),
    ] {
        // --cli-input-json: the path, with line and column.
        let m = env
            .json(
                &["security-profiles", "create"],
                &json!({"securityProfileName":"P","behaviors":[b]}),
            )
            .api_error("InvalidRequestException");
        assert!(
            m.contains(&format!("at {path}: unknown field `colour`")),
            "{m}"
        );
        // Flags merged into a request: the same path.
        let m = env
            .run(&[
                "security-profiles",
                "create",
                "--security-profile-name",
                "P",
                "--behaviors",
                &json!([b]).to_string(),
            ])
            .api_error("InvalidRequestException");
        assert!(
            m.contains(&format!("at {path}: unknown field `colour`")),
            "{m}"
        );
    }
    for (request, path) in [
        (
            json!({"securityProfileName":"P","alertTargets":{"SNS":{"alertTargetArn":"arn:aws:sns:eu-west-1:123456789012:t","roleArn":"arn:aws:iam::123456789012:role/r","colour":1}}}),
            "alertTargets.SNS",
        ),
        (
            json!({"securityProfileName":"P","metricsExportConfig":{"mqttTopic":"t","roleArn":"arn:aws:iam::123456789012:role/r","colour":1}}),
            "metricsExportConfig",
        ),
        (
            json!({"securityProfileName":"P","additionalMetricsToRetainV2":[{"metric":"aws:num-messages-sent","colour":1}]}),
            "additionalMetricsToRetainV2[0]",
        ),
        (
            json!({"securityProfileName":"P","tags":[{"Key":"k","colour":1}]}),
            "tags[0]",
        ),
    ] {
        let m = env
            .json(&["security-profiles", "create"], &request)
            .api_error("InvalidRequestException");
        assert!(m.contains(&format!("at {path}: ")), "{m}");
        assert!(m.contains("unknown field `colour`"), "{m}");
    }
    // "count": "5": the model says long.
    let m = env
        .json(
            &["security-profiles", "create"],
            &json!({"securityProfileName":"P","behaviors":[behavior(r#""count":10"#, r#""count":"10""#)]}),
        )
        .api_error("InvalidRequestException");
    assert!(
        m.contains(
            "at behaviors[0].criteria.value.count: invalid type: string \"10\", expected a long"
        ),
        "{m}"
    );
    // UpdateDimension has no `type` in the model.
    let m = env
        .json(
            &["dimensions", "update"],
            &json!({"name":"Auth","type":"TOPIC_FILTER","stringValues":["a"]}),
        )
        .api_error("InvalidRequestException");
    assert!(m.contains("unknown field `type`"), "{m}");
    assert_eq!(env.snapshot(), before, "nothing written");
}

#[test]
fn the_models_limits_hold_for_tokens_tags_role_arns_and_string_values() {
    let env = Env::new();
    let dim = |name: &str, token: &str| {
        env.json(
            &["dimensions", "create"],
            &json!({"name":name,"type":"TOPIC_FILTER","stringValues":["a/b"],"clientRequestToken":token}),
        )
    };
    dim("One", "tok-1").ok();
    // Another dimension's token: the model says each dimension has its own.
    let m = dim("Two", "tok-1").api_error("ResourceAlreadyExistsException");
    assert!(m.contains("tok-1") && m.contains("One"), "{m}");
    // The token pattern is [a-zA-Z0-9-_].
    let m = dim("Two", "tok.2").api_error("InvalidRequestException");
    assert!(m.contains("clientRequestToken"), "{m}");
    dim("Two", "tok_2").ok();
    // 1-100 string values (the spec's 5 was CloudFormation's).
    let values: Vec<String> = (0..100).map(|i| format!("t/{i}")).collect();
    env.json(
        &["dimensions", "create"],
        &json!({"name":"Many","type":"TOPIC_FILTER","stringValues":values}),
    )
    .ok();
    let mut more = values.clone();
    more.push("t/100".into());
    env.json(
        &["dimensions", "update"],
        &json!({"name":"Many","stringValues":more}),
    )
    .api_error("InvalidRequestException");
    // Tag keys: letters, numbers, spaces and _.:/=+-@.
    let m = env
        .json(
            &["security-profiles", "create"],
            &json!({"securityProfileName":"P","tags":[{"Key":"a*b","Value":"v"}]}),
        )
        .api_error("InvalidRequestException");
    assert!(m.contains("tag key \"a*b\""), "{m}");
    env.json(
        &["security-profiles", "create"],
        &json!({"securityProfileName":"P","tags":[{"Key":"env:prod/é 1","Value":"v"}]}),
    )
    .ok();
    // roleArn: at least 20 characters.
    let m = env
        .json(
            &["security-profiles", "update"],
            &json!({"securityProfileName":"P","alertTargets":{"SNS":{"alertTargetArn":"arn:aws:sns:eu-west-1:123456789012:t","roleArn":"arn:aws:iam::1:r"}}}),
        )
        .api_error("InvalidRequestException");
    assert!(
        m.contains("alertTargets.SNS.roleArn must be 20-2048 characters"),
        "{m}"
    );
}

#[test]
fn an_aws_cli_v2_dimension_file_is_managed_and_described_in_epoch_seconds() {
    let env = Env::new();
    std::fs::create_dir_all(env.dimensions()).unwrap();
    let v2 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws-cli/v2/dimensions/TopicFilterForAuthMessages.json");
    std::fs::copy(
        &v2,
        env.dimensions().join("TopicFilterForAuthMessages.json"),
    )
    .unwrap();
    let d = env
        .run(&[
            "dimensions",
            "describe",
            "--name",
            "TopicFilterForAuthMessages",
        ])
        .ok();
    assert_eq!(d["creationDate"], json!(1_790_812_799.5));
    env.run(&[
        "dimensions",
        "update",
        "--name",
        "TopicFilterForAuthMessages",
        "--string-values",
        "device/+/auth",
        "device/+/login",
    ])
    .ok();
    let text =
        std::fs::read_to_string(env.dimensions().join("TopicFilterForAuthMessages.json")).unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored["creationDate"], json!(1_790_812_799.5));
    assert!(stored["lastModifiedDate"].is_number(), "{text}");
}
