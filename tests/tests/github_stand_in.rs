//! The GitHub stand-in answers as GitHub does for the calls the operator makes: who may call,
//! what a check run body must hold, state kept across calls, pagination, injected faults.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_tests::github::FakeGitHub;
use gatehouse_tests::http::{HttpResponse, request};
use serde_json::{Value, json};

const SHA: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";

/// An App JWT as octocrab makes one (the stand-in does not check the signature).
fn app_jwt() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"iat": now - 60, "exp": now + 540, "iss": "12345"}).to_string());
    format!("{head}.{claims}.c2lnbmF0dXJl")
}

async fn call(
    github: &FakeGitHub,
    method: &str,
    path: &str,
    authorization: &str,
    body: Option<&Value>,
) -> HttpResponse {
    let mut headers = vec![
        ("Accept", "application/vnd.github+json"),
        ("User-Agent", "gatehouse-test"),
    ];
    if !authorization.is_empty() {
        headers.push(("Authorization", authorization));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(github.addr(), method, path, &headers, body.as_bytes())
        .await
        .unwrap()
}

/// Mints a token and answers `Authorization: Bearer <token>`.
async fn token(github: &FakeGitHub) -> String {
    let jwt = format!("Bearer {}", app_jwt());
    let answer = call(
        github,
        "POST",
        "/app/installations/42/access_tokens",
        &jwt,
        None,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    format!("Bearer {}", answer.json()["token"].as_str().unwrap())
}

async fn create(github: &FakeGitHub, auth: &str, body: &Value) -> HttpResponse {
    call(github, "POST", "/repos/o/r/check-runs", auth, Some(body)).await
}

#[tokio::test]
async fn an_access_token_is_minted_only_for_an_app_jwt() {
    let github = FakeGitHub::start().await.unwrap();
    let path = "/app/installations/42/access_tokens";
    let body = json!({"repository_ids": [7], "permissions": {"contents": "read"}});

    let anonymous = call(&github, "POST", path, "", Some(&body)).await;
    assert_eq!(anonymous.status, 401);
    let not_a_jwt = call(&github, "POST", path, "Bearer ghs_fake1", Some(&body)).await;
    assert_eq!(not_a_jwt.status, 401);
    assert!(github.tokens_minted().is_empty());

    let jwt = format!("Bearer {}", app_jwt());
    let minted = call(&github, "POST", path, &jwt, Some(&body)).await;
    assert_eq!(minted.status, 201, "{}", minted.text());
    let answer = minted.json();
    assert_eq!(answer["token"], "ghs_fake1");
    assert_eq!(answer["permissions"], json!({"contents": "read"}));
    assert_eq!(answer["repository_selection"], "selected");
    let expires = answer["expires_at"].as_str().unwrap();
    assert_eq!(expires.len(), "2026-01-01T00:00:00Z".len(), "{expires}");
    assert!(expires.ends_with('Z') && expires.as_bytes()[10] == b'T');

    let octocrab_style = call(&github, "POST", path, &jwt, None).await;
    assert_eq!(octocrab_style.json()["token"], "ghs_fake2");
    assert_eq!(
        octocrab_style.json()["permissions"],
        json!({"checks": "write", "contents": "read", "pull_requests": "read"})
    );
    assert_eq!(github.tokens_minted(), vec![body, Value::Null]);
    let statuses: Vec<u16> = github.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [401, 401, 201, 201]);
}

#[tokio::test]
async fn repository_calls_need_a_minted_token() {
    let github = FakeGitHub::start().await.unwrap();
    let path = &format!("/repos/o/r/commits/{SHA}/check-runs");

    let anonymous = call(&github, "GET", path, "", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["message"], "Bad credentials");
    let jwt = call(&github, "GET", path, &format!("Bearer {}", app_jwt()), None).await;
    assert_eq!(jwt.status, 401);
    let unminted = call(&github, "GET", path, "token ghs_fake1", None).await;
    assert_eq!(unminted.status, 401);

    let bearer = token(&github).await;
    assert_eq!(call(&github, "GET", path, &bearer, None).await.status, 200);
    let token_scheme = bearer.replace("Bearer ", "token ");
    assert_eq!(
        call(&github, "GET", path, &token_scheme, None).await.status,
        200
    );
    let unknown = call(&github, "GET", "/repos/o/r/hooks", &bearer, None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["message"], "Not Found");
    assert_eq!(github.calls().last().unwrap().authorization, bearer);
}

#[tokio::test]
async fn a_created_then_completed_run_is_found_by_name_with_its_history() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let created = create(
        &github,
        &auth,
        &json!({"name": "gatehouse/kics", "head_sha": SHA, "external_id": "scan-1",
            "status": "queued", "details_url": "https://gatehouse.example/scan-1"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_i64().unwrap();
    assert_eq!(id, 1000);
    assert_eq!(created.json()["status"], "queued");
    assert!(created.json()["started_at"].is_string());
    // Another check on the same commit, which listing by name must leave out.
    create(
        &github,
        &auth,
        &json!({"name": "gatehouse/blackduck", "head_sha": SHA}),
    )
    .await;

    let run_path = format!("/repos/o/r/check-runs/{id}");
    let started = call(
        &github,
        "PATCH",
        &run_path,
        &auth,
        Some(&json!({"status": "in_progress"})),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let finished = call(
        &github,
        "PATCH",
        &run_path,
        &auth,
        Some(&json!({"conclusion": "cancelled",
            "output": {"title": "Cancelled", "summary": "A newer commit was pushed."}})),
    )
    .await;
    assert_eq!(finished.status, 200, "{}", finished.text());
    assert_eq!(finished.json()["status"], "completed");
    assert!(finished.json()["completed_at"].is_string());

    let listed = call(
        &github,
        "GET",
        &format!(
            "/repos/o/r/commits/{SHA}/check-runs?check_name=gatehouse%2Fkics&filter=all&per_page=100&page=1"
        ),
        &auth,
        None,
    )
    .await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(listed["total_count"], 1);
    let run = &listed["check_runs"][0];
    assert_eq!(run["id"], id);
    assert_eq!(run["external_id"], "scan-1");
    assert_eq!(run["conclusion"], "cancelled");
    assert_eq!(run["output"]["title"], "Cancelled");

    let held = github.check_runs();
    assert_eq!(held.len(), 2);
    assert_eq!(
        held[0].history,
        ["queued", "in_progress", "completed/cancelled"]
    );
    assert_eq!(
        held[0].details_url.as_deref(),
        Some("https://gatehouse.example/scan-1")
    );
    assert_eq!(
        held[0].summary.as_deref(),
        Some("A newer commit was pushed.")
    );
    assert_eq!(held[1].name, "gatehouse/blackduck");
    assert_eq!(held[1].history, ["queued"]);
}

#[tokio::test]
async fn a_run_is_not_found_through_another_repository_or_commit() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let created = create(
        &github,
        &auth,
        &json!({"name": "gatehouse/kics", "head_sha": SHA}),
    )
    .await;
    let id = created.json()["id"].as_i64().unwrap();
    let patch = json!({"status": "in_progress"});

    let elsewhere = call(
        &github,
        "PATCH",
        &format!("/repos/o/other/check-runs/{id}"),
        &auth,
        Some(&patch),
    )
    .await;
    assert_eq!(elsewhere.status, 404);
    let unknown = call(
        &github,
        "PATCH",
        "/repos/o/r/check-runs/999999",
        &auth,
        Some(&patch),
    )
    .await;
    assert_eq!(unknown.status, 404);
    let other_commit = call(
        &github,
        "GET",
        "/repos/o/r/commits/0000000000000000000000000000000000000000/check-runs",
        &auth,
        None,
    )
    .await;
    assert_eq!(other_commit.json()["total_count"], 0);
    assert_eq!(github.check_runs()[0].history, ["queued"]);
}

#[tokio::test]
async fn check_run_bodies_github_refuses_are_422_and_change_nothing() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let long = "x".repeat(65_536);
    let refused = [
        json!({"name": "gatehouse/kics", "head_sha": SHA, "status": "completed"}),
        json!({"head_sha": SHA}),
        json!({"name": "gatehouse/kics"}),
        json!({"name": "gatehouse/kics", "head_sha": SHA, "status": "waiting"}),
        json!({"name": "gatehouse/kics", "head_sha": SHA, "conclusion": "stale"}),
        json!({"name": "gatehouse/kics", "head_sha": SHA, "output": {"title": "t"}}),
        json!({"name": "gatehouse/kics", "head_sha": SHA,
            "output": {"title": "t", "summary": long}}),
        json!({"name": "gatehouse/kics", "head_sha": SHA, "started_at": "yesterday"}),
    ];
    for body in &refused {
        let answer = create(&github, &auth, body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text());
    }
    assert!(github.check_runs().is_empty());

    // A conclusion alone completes the run; exactly the summary limit is fine.
    let completed = create(
        &github,
        &auth,
        &json!({"name": "gatehouse/kics", "head_sha": SHA, "conclusion": "success",
            "output": {"title": "t", "summary": "x".repeat(65_535)}}),
    )
    .await;
    assert_eq!(completed.status, 201, "{}", completed.text());
    assert_eq!(completed.json()["status"], "completed");
    let id = completed.json()["id"].as_i64().unwrap();
    let reopen_without_conclusion = call(
        &github,
        "PATCH",
        &format!("/repos/o/r/check-runs/{id}"),
        &auth,
        Some(&json!({"status": "completed"})),
    )
    .await;
    assert_eq!(reopen_without_conclusion.status, 422);
    assert_eq!(github.check_runs()[0].history, ["completed/success"]);
}

#[tokio::test]
async fn an_update_after_completion_is_allowed_and_shows_in_history() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let created = create(
        &github,
        &auth,
        &json!({"name": "gatehouse/kics", "head_sha": SHA, "conclusion": "failure"}),
    )
    .await;
    let path = format!("/repos/o/r/check-runs/{}", created.json()["id"]);
    let retitled = json!({"output": {"title": "2 high", "summary": "See details."}});
    assert_eq!(
        call(&github, "PATCH", &path, &auth, Some(&retitled))
            .await
            .status,
        200
    );
    let concluded = json!({"conclusion": "success"});
    call(&github, "PATCH", &path, &auth, Some(&concluded)).await;
    assert_eq!(
        github.check_runs()[0].history,
        [
            "completed/failure",
            "completed/failure",
            "completed/success"
        ]
    );
}

#[tokio::test]
async fn an_injected_failure_is_answered_as_often_as_asked_then_normal_service_resumes() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    github.fail_next(
        "POST",
        "/repos/o/r/check-runs",
        502,
        vec![("retry-after".to_owned(), "1".to_owned())],
        1,
    );
    let body = json!({"name": "gatehouse/kics", "head_sha": SHA});

    let failed = create(&github, &auth, &body).await;
    assert_eq!(failed.status, 502);
    assert_eq!(failed.json(), json!({"message": "injected"}));
    assert_eq!(failed.headers["retry-after"], "1");
    assert!(!failed.headers.contains_key("x-ratelimit-remaining"));
    assert!(github.check_runs().is_empty());

    let served = create(&github, &auth, &body).await;
    assert_eq!(served.status, 201);
    assert_eq!(served.json()["id"], 1000);
    assert_eq!(github.check_runs().len(), 1);

    let statuses: Vec<(String, u16)> = github
        .calls()
        .iter()
        .map(|c| (c.method.clone(), c.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("POST".to_owned(), 201),
            ("POST".to_owned(), 502),
            ("POST".to_owned(), 201)
        ]
    );
    assert_eq!(github.calls()[1].body, body);
}

#[tokio::test]
async fn an_injected_failure_applies_only_to_its_method_and_path() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    github.fail_next("PATCH", "/repos/o/r/check-runs/", 500, Vec::new(), 2);
    let created = create(
        &github,
        &auth,
        &json!({"name": "gatehouse/kics", "head_sha": SHA}),
    )
    .await;
    assert_eq!(created.status, 201);
    let run_path = format!("/repos/o/r/check-runs/{}", created.json()["id"]);
    let patch = json!({"status": "in_progress"});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            call(&github, "PATCH", &run_path, &auth, Some(&patch))
                .await
                .status,
        );
    }
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(github.check_runs()[0].history, ["queued", "in_progress"]);
}

#[tokio::test]
async fn listing_check_runs_is_paginated_newest_first() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    for i in 0..5 {
        let answer = create(
            &github,
            &auth,
            &json!({"name": "gatehouse/kics", "head_sha": SHA, "external_id": format!("scan-{i}")}),
        )
        .await;
        assert_eq!(answer.status, 201);
    }
    let mut pages = Vec::new();
    for page in 1..=4 {
        let answer = call(
            &github,
            "GET",
            &format!(
                "/repos/o/r/commits/{SHA}/check-runs?check_name=gatehouse%2Fkics&per_page=2&page={page}"
            ),
            &auth,
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["total_count"], 5);
        let ids: Vec<i64> = answer.json()["check_runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        pages.push((ids, answer.headers.get("link").cloned()));
    }
    let ids: Vec<&Vec<i64>> = pages.iter().map(|(ids, _)| ids).collect();
    assert_eq!(
        ids,
        [&vec![1004, 1003], &vec![1002, 1001], &vec![1000], &vec![]]
    );
    let first_link = pages[0].1.as_deref().unwrap();
    assert!(first_link.contains("page=2>; rel=\"next\""), "{first_link}");
    assert!(!pages[2].1.as_deref().unwrap().contains("rel=\"next\""));

    let default_page = call(
        &github,
        "GET",
        &format!("/repos/o/r/commits/{SHA}/check-runs"),
        &auth,
        None,
    )
    .await;
    assert_eq!(
        default_page.json()["check_runs"].as_array().unwrap().len(),
        5
    );
}

#[tokio::test]
async fn a_pull_requests_files_are_the_ones_set_paginated() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let files: Vec<String> = (0..150).map(|i| format!("deploy/{i}.yaml")).collect();
    github.set_changed_files("o", "r", 7, files.clone());
    let mut listed = Vec::new();
    for page in 1..=3 {
        let answer = call(
            &github,
            "GET",
            &format!("/repos/o/r/pulls/7/files?per_page=100&page={page}"),
            &auth,
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        let items = answer.json();
        for item in items.as_array().unwrap() {
            assert_eq!(item["status"], "modified");
            listed.push(item["filename"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(listed, files);

    let unset = call(&github, "GET", "/repos/o/r/pulls/8/files", &auth, None).await;
    assert_eq!(unset.status, 200);
    assert_eq!(unset.json(), json!([]));
}

#[tokio::test]
async fn every_answer_reports_the_rate_limit_and_repository_calls_use_it_up() {
    let github = FakeGitHub::start().await.unwrap();
    let auth = token(&github).await;
    let path = format!("/repos/o/r/commits/{SHA}/check-runs");
    let first = call(&github, "GET", &path, &auth, None).await;
    let second = call(&github, "GET", &path, &auth, None).await;
    let remaining = |a: &HttpResponse| a.headers["x-ratelimit-remaining"].parse::<u64>().unwrap();
    assert_eq!(first.headers["x-ratelimit-limit"], "5000");
    assert_eq!(first.headers["x-ratelimit-resource"], "core");
    assert_eq!(remaining(&first), 4999);
    assert_eq!(remaining(&second), 4998);
    let reset: u64 = first.headers["x-ratelimit-reset"].parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset > now && reset <= now + 3600, "{reset} vs {now}");
}

#[tokio::test]
async fn waiting_for_a_state_that_never_comes_names_it() {
    let github = FakeGitHub::start().await.unwrap();
    let error = github
        .wait_for("a completed kics run", Duration::from_millis(100), |g| {
            !g.check_runs().is_empty()
        })
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("a completed kics run"),
        "{error}"
    );
    github
        .wait_for("nothing", Duration::from_millis(100), |g| {
            g.check_runs().is_empty()
        })
        .await
        .unwrap();
}
