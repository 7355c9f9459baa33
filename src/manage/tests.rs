//! Unit tests for the pure manage rules.
use super::*;
use crate::detect::profile::Format;

const NOW: f64 = 1_700_000_000.5;

fn arns() -> Arns {
    Arns::default()
}

fn dim_req(name: &str, values: &[&str], token: Option<&str>) -> CreateDimensionRequest {
    CreateDimensionRequest {
        name: name.to_owned(),
        dimension_type: "TOPIC_FILTER".to_owned(),
        string_values: values.iter().map(|s| s.to_string()).collect(),
        tags: None,
        client_request_token: token.map(str::to_owned),
    }
}

fn stored_dim(name: &str, token: Option<&str>) -> StoredDimension {
    create_dimension(None, dim_req(name, &["device/+/auth"], token), NOW, &arns())
        .unwrap()
        .write
        .unwrap()
}

fn behavior(json: &str) -> Behavior {
    serde_json::from_str(json).unwrap()
}

fn scoped_behavior(dim: &str) -> Behavior {
    behavior(&format!(
        r#"{{"name":"B","metric":"aws:num-messages-sent","metricDimension":{{"dimensionName":"{dim}"}},"criteria":{{"comparisonOperator":"less-than","value":{{"count":10}},"durationSeconds":300}}}}"#
    ))
}

fn ctx_with(dims: &[&str]) -> ValidationContext {
    ValidationContext::new(
        dims.iter().map(|d| stored_dim(d, None).dimension).collect(),
        Vec::new(),
    )
}

fn profile_req(name: &str, behaviors: Vec<Behavior>) -> CreateSecurityProfileRequest {
    CreateSecurityProfileRequest {
        security_profile_name: name.to_owned(),
        security_profile_description: None,
        behaviors: Some(behaviors),
        alert_targets: None,
        additional_metrics_to_retain: None,
        additional_metrics_to_retain_v2: None,
        metrics_export_config: None,
        tags: None,
    }
}

fn stored_profile(name: &str, dim: &str) -> StoredProfile {
    create_profile(
        None,
        profile_req(name, vec![scoped_behavior(dim)]),
        &ctx_with(&[dim]),
        NOW,
        &arns(),
    )
    .unwrap()
    .write
    .unwrap()
}

#[test]
fn a_dimension_create_repeated_with_the_same_token_is_idempotent() {
    let first = stored_dim("Auth", Some("t1"));
    let again = create_dimension(
        Some(&first),
        dim_req("Auth", &["device/+/auth"], Some("t1")),
        NOW + 5.0,
        &arns(),
    )
    .unwrap();
    assert!(again.write.is_none());
    assert_eq!(
        again.response.arn,
        "arn:aws:iot:local:000000000000:dimension/Auth"
    );
}

#[test]
fn a_different_request_under_an_existing_dimension_name_is_refused() {
    let first = stored_dim("Auth", Some("t1"));
    for req in [
        dim_req("Auth", &["other/#"], Some("t1")),
        dim_req("Auth", &["device/+/auth"], Some("t2")),
        dim_req("Auth", &["device/+/auth"], None),
    ] {
        let err = create_dimension(Some(&first), req, NOW, &arns()).unwrap_err();
        assert_eq!(err.code(), "ResourceAlreadyExistsException");
    }
}

#[test]
fn a_dimension_is_validated_strictly_on_create_and_update() {
    let err = create_dimension(None, dim_req("D", &["a/#/b"], None), NOW, &arns()).unwrap_err();
    assert_eq!(err.code(), "InvalidRequestException");
    assert!(
        err.message().contains("not a valid MQTT topic filter"),
        "{err}"
    );
    let mut req = dim_req("D", &["a"], None);
    req.dimension_type = "SOURCE_IP".to_owned();
    assert!(create_dimension(None, req, NOW, &arns()).is_err());
    let old = stored_dim("D", None);
    let up = UpdateDimensionRequest {
        name: "D".into(),
        string_values: vec!["x".into(); 6],
    };
    assert!(update_dimension(Some(&old), up, NOW, &arns()).is_err());
}

#[test]
fn an_update_dimension_request_has_no_type_and_an_update_keeps_the_creation_date() {
    // issue 15: the model's UpdateDimensionRequest has no `type`; it was accepted when equal.
    for t in ["SOURCE_IP", "TOPIC_FILTER"] {
        let body = format!(r#"{{"name":"D","stringValues":["admin/#"],"type":"{t}"}}"#);
        let err = parse_request::<UpdateDimensionRequest>(&body, "body").unwrap_err();
        assert_eq!(err.code(), "InvalidRequestException");
        assert!(err.message().contains("unknown field `type`"), "{err}");
    }
    let old = stored_dim("D", None);
    let up = UpdateDimensionRequest {
        name: "D".into(),
        string_values: vec!["admin/#".into()],
    };
    let new = update_dimension(Some(&old), up, NOW + 60.0, &arns()).unwrap();
    assert_eq!(new.dimension.string_values, vec!["admin/#"]);
    assert_eq!(new.dimension.creation_date, Some(NOW));
    assert_eq!(new.dimension.last_modified_date, Some(NOW + 60.0));
}

#[test]
fn a_missing_dimension_is_not_found() {
    let err = describe_dimension("Nope", None).unwrap_err();
    assert_eq!(err.code(), "ResourceNotFoundException");
    let up = UpdateDimensionRequest {
        name: "Nope".into(),
        string_values: vec!["a".into()],
    };
    assert_eq!(
        update_dimension(None, up, NOW, &arns()).unwrap_err().code(),
        "ResourceNotFoundException"
    );
}

#[test]
fn a_dimension_used_by_a_profile_cannot_be_deleted() {
    let d = stored_dim("Auth", None);
    let p = stored_profile("P", "Auth");
    let err =
        check_delete_dimension("Auth", Some(&d), std::slice::from_ref(&p.profile)).unwrap_err();
    assert_eq!(err.code(), "InvalidRequestException");
    assert!(err.message().contains('P'), "{err}");
    assert!(check_delete_dimension("Auth", Some(&d), &[]).is_ok());
    // A retained metric's dimension counts as a use too.
    let mut q = profile_req("Q", vec![]);
    q.additional_metrics_to_retain_v2 = Some(vec![MetricToRetain {
        metric: "aws:num-messages-sent".into(),
        metric_dimension: Some(crate::detect::MetricDimension {
            dimension_name: "Auth".into(),
            operator: None,
        }),
        export_metric: None,
    }]);
    let q = create_profile(None, q, &ctx_with(&["Auth"]), NOW, &arns())
        .unwrap()
        .write
        .unwrap();
    assert!(check_delete_dimension("Auth", Some(&d), &[q.profile]).is_err());
}

#[test]
fn pagination_walks_every_name_once_and_rejects_tokens_for_other_filters() {
    let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = paginate(names.clone(), "f", token.as_deref(), Some(3)).unwrap();
        assert!(page.len() <= 3);
        seen.extend(page);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, names);
    let (_, t) = paginate(names.clone(), "f", None, Some(3)).unwrap();
    let err = paginate(names.clone(), "g", t.as_deref(), Some(3)).unwrap_err();
    assert_eq!(err.code(), "InvalidRequestException");
    assert!(paginate(names.clone(), "f", Some("zz"), None).is_err());
    assert!(paginate(names.clone(), "f", None, Some(0)).is_err());
    assert!(paginate(names, "f", None, Some(251)).is_err());
}

#[test]
fn a_full_last_page_has_no_next_token() {
    let names: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
    let (page, next) = paginate(names, "f", None, Some(4)).unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(next, None);
}

#[test]
fn an_identical_profile_create_is_idempotent_and_a_different_one_already_exists() {
    let ctx = ctx_with(&["Auth"]);
    let p = stored_profile("P", "Auth");
    let same = create_profile(
        Some(&p),
        profile_req("P", vec![scoped_behavior("Auth")]),
        &ctx,
        NOW + 1.0,
        &arns(),
    )
    .unwrap();
    assert!(same.write.is_none());
    let err = create_profile(Some(&p), profile_req("P", vec![]), &ctx, NOW, &arns()).unwrap_err();
    assert_eq!(err.code(), "ResourceAlreadyExistsException");
}

#[test]
fn a_behavior_that_fails_strict_validation_is_refused() {
    let b = behavior(
        r#"{"name":"Authorization","metric":"aws:num-authorization-failures","criteria":{"comparisonOperator":"less-than","value":{"count":5},"durationSeconds":300,"consecutiveDatapointsToAlarm":100000}}"#,
    );
    let err = create_profile(
        None,
        profile_req("P", vec![b]),
        &ctx_with(&[]),
        NOW,
        &arns(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "InvalidRequestException");
    assert!(
        err.message()
            .contains("consecutiveDatapointsToAlarm 100000 should be in range[1,10]"),
        "{err}"
    );
    // A behavior naming a dimension that does not exist fails in STRICT.
    let err = create_profile(
        None,
        profile_req("P", vec![scoped_behavior("Missing")]),
        &ctx_with(&[]),
        NOW,
        &arns(),
    )
    .unwrap_err();
    assert!(err.message().contains("does not exist"), "{err}");
}

#[test]
fn a_name_that_breaks_the_api_pattern_is_refused() {
    let err = create_profile(
        None,
        profile_req("my profile", vec![]),
        &ctx_with(&[]),
        NOW,
        &arns(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "InvalidRequestException");
    assert!(create_dimension(None, dim_req("../x", &["a"], None), NOW, &arns()).is_err());
    assert!(describe_profile(&"x".repeat(129), None).is_err());
}

#[test]
fn an_update_of_a_profile_stored_at_the_largest_version_does_not_overflow() {
    let ctx = ctx_with(&["Auth"]);
    let mut p = stored_profile("P", "Auth");
    p.profile.version = Some(i64::MAX);
    let req = UpdateSecurityProfileRequest {
        security_profile_name: "P".into(),
        security_profile_description: Some("d".into()),
        ..Default::default()
    };
    let next = update_profile(Some(&p), req, &ctx, NOW, &arns()).unwrap();
    assert_eq!(next.profile.version, Some(i64::MAX));
}

#[test]
fn an_update_bumps_the_version_and_a_stale_expected_version_conflicts() {
    let ctx = ctx_with(&["Auth"]);
    let p = stored_profile("P", "Auth");
    assert_eq!(p.profile.version, Some(1));
    let req = UpdateSecurityProfileRequest {
        security_profile_name: "P".into(),
        security_profile_description: Some("d".into()),
        expected_version: Some(1),
        ..Default::default()
    };
    let v2 = update_profile(Some(&p), req.clone(), &ctx, NOW + 10.0, &arns()).unwrap();
    assert_eq!(v2.profile.version, Some(2));
    assert_eq!(v2.profile.creation_date, Some(NOW));
    assert_eq!(v2.profile.last_modified_date, Some(NOW + 10.0));
    assert_eq!(v2.profile.behaviors.len(), 1, "absent fields stay");
    let err = update_profile(Some(&v2), req, &ctx, NOW, &arns()).unwrap_err();
    assert_eq!(err.code(), "VersionConflictException");
    let del = DeleteSecurityProfileRequest {
        security_profile_name: "P".into(),
        expected_version: Some(1),
    };
    assert_eq!(
        check_delete_profile(&del, Some(&v2)).unwrap_err().code(),
        "VersionConflictException"
    );
    let del = DeleteSecurityProfileRequest {
        expected_version: Some(2),
        ..del
    };
    assert!(check_delete_profile(&del, Some(&v2)).is_ok());
}

#[test]
fn delete_flags_remove_fields_and_clash_with_the_field_itself() {
    let ctx = ctx_with(&["Auth"]);
    let mut req = profile_req("P", vec![scoped_behavior("Auth")]);
    req.alert_targets = Some(BTreeMap::from([(
        "SNS".to_owned(),
        AlertTarget {
            alert_target_arn: "arn:aws:sns:local:000000000000:t".into(),
            role_arn: "arn:aws:iam::000000000000:role/r".into(),
        },
    )]));
    req.additional_metrics_to_retain_v2 = Some(vec![MetricToRetain {
        metric: "aws:num-listening-tcp-ports".into(),
        metric_dimension: None,
        export_metric: None,
    }]);
    let p = create_profile(None, req, &ctx, NOW, &arns())
        .unwrap()
        .write
        .unwrap();
    let clash = UpdateSecurityProfileRequest {
        security_profile_name: "P".into(),
        delete_behaviors: Some(true),
        behaviors: Some(vec![]),
        ..Default::default()
    };
    assert_eq!(
        update_profile(Some(&p), clash, &ctx, NOW, &arns())
            .unwrap_err()
            .code(),
        "InvalidRequestException"
    );
    let req = UpdateSecurityProfileRequest {
        security_profile_name: "P".into(),
        delete_behaviors: Some(true),
        delete_alert_targets: Some(true),
        delete_additional_metrics_to_retain: Some(true),
        ..Default::default()
    };
    let new = update_profile(Some(&p), req, &ctx, NOW, &arns()).unwrap();
    assert!(new.profile.behaviors.is_empty());
    assert!(new.profile.alert_targets.is_none());
    assert!(new.profile.additional_metrics_to_retain_v2.is_none());
}

#[test]
fn list_profiles_filters_by_dimension_and_metric() {
    let a = stored_profile("A", "Auth").profile;
    let b = stored_profile("B", "Other").profile;
    let c = create_profile(None, profile_req("C", vec![]), &ctx_with(&[]), NOW, &arns())
        .unwrap()
        .write
        .unwrap()
        .profile;
    let all = [a, b, c];
    let names = |r: ListSecurityProfilesResponse| {
        r.security_profile_identifiers
            .into_iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
    };
    let req = ListSecurityProfilesRequest {
        dimension_name: Some("Auth".into()),
        ..Default::default()
    };
    assert_eq!(names(list_profiles(&all, &req, &arns()).unwrap()), ["A"]);
    let req = ListSecurityProfilesRequest {
        metric_name: Some("aws:num-messages-sent".into()),
        ..Default::default()
    };
    assert_eq!(
        names(list_profiles(&all, &req, &arns()).unwrap()),
        ["A", "B"]
    );
    let req = ListSecurityProfilesRequest::default();
    assert_eq!(
        names(list_profiles(&all, &req, &arns()).unwrap()),
        ["A", "B", "C"]
    );
}

#[test]
fn arns_carry_the_region_and_account() {
    let a = Arns {
        region: "eu-west-1".into(),
        account: "123456789012".into(),
    };
    assert_eq!(
        a.profile("P"),
        "arn:aws:iot:eu-west-1:123456789012:securityprofile/P"
    );
    assert_eq!(
        a.dimension("D"),
        "arn:aws:iot:eu-west-1:123456789012:dimension/D"
    );
}

#[test]
fn errors_serialise_as_the_api_error_shape() {
    let e = ManageError::VersionConflict("stale".into());
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"__type":"VersionConflictException","message":"stale"}"#
    );
}

#[test]
fn stored_files_load_through_the_detect_loaders_in_strict_mode() {
    let d = stored_dim("Auth", Some("tok"));
    let text = serde_json::to_string_pretty(&d).unwrap();
    let loaded =
        crate::detect::load_dimension(&text, "Auth.json", Format::Json, Mode::Strict).unwrap();
    assert_eq!(loaded, d.dimension);
    let p = stored_profile("P", "Auth");
    let text = serde_json::to_string_pretty(&p).unwrap();
    let loaded = crate::detect::load_profile(
        &text,
        "P.json",
        Format::Json,
        &ctx_with(&["Auth"]),
        Mode::Strict,
    )
    .unwrap();
    assert_eq!(loaded.profile, p.profile);
    let back: StoredProfile = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
}

#[test]
fn request_topics_map_to_a_resource_and_a_verb() {
    use super::ops::{topic_verb, Resource, Verb};
    assert_eq!(
        topic_verb("defender-agent/t1/manage/security-profiles/update"),
        Some((Resource::SecurityProfiles, Verb::Update))
    );
    assert_eq!(
        topic_verb("dimensions/list"),
        Some((Resource::Dimensions, Verb::List))
    );
    assert_eq!(
        topic_verb("defender-agent/t1/manage/dimensions/rename"),
        None
    );
    assert_eq!(topic_verb("defender-agent/t1/manage/things/list"), None);
    assert_eq!(topic_verb("list"), None);
    assert!(Verb::Delete.changes() && !Verb::Describe.changes());
}
