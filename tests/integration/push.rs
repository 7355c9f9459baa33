//! `[detect.push]` against a real mosquitto over mutual TLS, in a private network namespace (so
//! an `in-port-set` allow-list sees only this test's ports): a retained push applied when the
//! agent connects, a bad push refused whole with its errors on the response topic while the old
//! profile keeps working, an update that keeps a behavior keeping its violation id, an oversize
//! push refused unread.

use std::time::{Duration, Instant};

use crate::detect_agent::{agent_toml, cli, json_of, ports_of, Agent, Subscriber};
use crate::support::certs::Pki;
use crate::support::endpoint::{accept_any_report, DefenderEndpoint};
use crate::support::mosquitto::{Mosquitto, MosquittoOptions};

const THING: &str = "gw-push";
const PUSH_TOPIC: &str = "fleet/defender/profiles";
const RESPONSE_TOPIC: &str = "fleet/defender/gw-push/profiles/result";
const ALARMS: &str = "alarms/gw-push";

fn profile(broker_port: u16, extra_behavior: &str) -> String {
    format!(
        r#"{{"securityProfileName":"AllowList","securityProfileArn":"arn:aws:iot:eu-west-1:123456789012:securityprofile/AllowList",
        "behaviors":[{{"name":"OnlyBrokerPort","metric":"aws:listening-tcp-ports",
          "criteria":{{"comparisonOperator":"in-port-set","value":{{"ports":[{broker_port}]}},
          "consecutiveDatapointsToAlarm":1,"consecutiveDatapointsToClear":1}}}}{extra_behavior}],
        "version":7,"creationDate":1764000000.0,"lastModifiedDate":1764000000.0}}"#
    )
}

fn push(version: u32, profiles: &[String]) -> Vec<u8> {
    format!(
        r#"{{"pushVersion":{version},"dimensions":[],"securityProfiles":[{}]}}"#,
        profiles.join(",")
    )
    .into_bytes()
}

#[test]
fn pushed_profiles_are_applied_refused_whole_and_keep_unchanged_behaviors_violations() {
    crate::support::netns::run_isolated_async(scenario);
}

async fn scenario() {
    let pki = Pki::new();
    let broker = Mosquitto::start(MosquittoOptions::mutual_tls(&pki));
    let _endpoint = DefenderEndpoint::start(&broker, &pki, accept_any_report).await;
    let mut watch = Subscriber::start_on(&broker, &pki, &[ALARMS, RESPONSE_TOPIC]).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let profiles = dir.path().join("profiles");
    let dimensions = dir.path().join("dimensions");
    // The fleet's retained push is on the broker before the agent first connects.
    watch
        .publish(PUSH_TOPIC, push(1, &[profile(broker.port(), "")]), true)
        .await;

    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{base}\
             [detect]\nprofiles = [{profiles:?}]\ndimensions = [{dimensions:?}]\n\
             region = \"eu-west-1\"\naccount_id = \"123456789012\"\n\
             [detect.push]\ntopic = \"{PUSH_TOPIC}\"\nresponse_topic = \"{RESPONSE_TOPIC}\"\nmax_bytes = 4096\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"{ALARMS}\"\nqos = 1\n",
            base = agent_toml(THING, &state, &broker.mqtt_toml(&pki, THING)),
            profiles = profiles.display().to_string(),
            dimensions = dimensions.display().to_string(),
        ),
    )
    .unwrap();
    let agent = Agent::start(dir.path(), &config);
    let log = || agent.log();

    let (topic, applied) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(topic, RESPONSE_TOPIC, "{applied}");
    assert_eq!(applied["status"], "applied", "{applied}");
    assert_eq!(applied["pushVersion"], 1);
    assert_eq!(
        applied["securityProfiles"],
        serde_json::json!([{"name": "AllowList", "version": 1, "change": "created"}])
    );
    let described = json_of(&cli(&[
        "security-profiles",
        "describe",
        "--config",
        config.to_str().unwrap(),
        "--security-profile-name",
        "AllowList",
    ]));
    assert_eq!(
        described["securityProfileArn"],
        "arn:aws:iot:eu-west-1:123456789012:securityprofile/AllowList"
    );

    // The pushed profile is live: a listener outside its port set raises an alarm.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = u64::from(listener.local_addr().unwrap().port());
    let (topic, raised) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(topic, ALARMS, "{raised}");
    assert_eq!(raised["violationEventType"], "in-alarm", "{raised}");
    assert!(ports_of(&raised).contains(&port), "{raised}");
    let id = raised["violationId"].as_str().unwrap().to_owned();

    // A bad push: refused whole, every error named, nothing written, the old profile kept.
    let bad_behavior = r#",{"name":"Bad","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[1]}}}"#;
    let other = r#"{"securityProfileName":"bad name!","behaviors":[]}"#.to_owned();
    watch
        .publish(
            PUSH_TOPIC,
            push(2, &[profile(broker.port(), bad_behavior), other]),
            false,
        )
        .await;
    let (topic, refused) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(topic, RESPONSE_TOPIC, "{refused}");
    assert_eq!(refused["status"], "refused", "{refused}");
    assert_eq!(refused["pushVersion"], 2);
    let errors: Vec<&str> = refused["validationErrors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["errorMessage"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{refused}");
    assert!(
        errors[0].contains("securityProfiles[0] (AllowList)")
            && errors[0].contains("Behavior Bad is malformed"),
        "{errors:?}"
    );
    assert!(errors[1].contains("securityProfiles[1]"), "{errors:?}");
    let on_disk = std::fs::read_to_string(profiles.join("AllowList.json")).unwrap();
    assert!(!on_disk.contains("\"Bad\""), "nothing half-written");

    // An oversize push is refused unread.
    watch.publish(PUSH_TOPIC, vec![b' '; 5000], false).await;
    let (_, big) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(big["status"], "refused", "{big}");
    assert!(
        big["validationErrors"][0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not read"),
        "{big}"
    );

    // An update that keeps OnlyBrokerPort and adds a behavior: the violation keeps its id.
    let udp = r#",{"name":"NoUdp","metric":"aws:listening-udp-ports","criteria":{"comparisonOperator":"not-in-port-set","value":{"ports":[69]}}}"#;
    watch
        .publish(PUSH_TOPIC, push(3, &[profile(broker.port(), udp)]), true)
        .await;
    let (_, updated) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(updated["status"], "applied", "{updated}");
    assert_eq!(
        updated["securityProfiles"],
        serde_json::json!([{"name": "AllowList", "version": 2, "change": "updated"}])
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.log().matches("Detect started.").count() < 3 {
        assert!(Instant::now() < deadline, "no reload:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(listener);
    let (topic, cleared) = watch.next_with_topic(Duration::from_secs(20), log).await;
    assert_eq!(topic, ALARMS, "{cleared}");
    assert_eq!(cleared["violationEventType"], "alarm-cleared", "{cleared}");
    assert_eq!(
        cleared["violationId"],
        id.as_str(),
        "same id across the update"
    );
    assert!(
        agent.log().matches("Push refused").count() == 2,
        "{}",
        agent.log()
    );
    // Clear the retained message (an empty retained publish), as an operator would.
    watch.publish(PUSH_TOPIC, Vec::new(), true).await;
    drop(agent);
}
