//! The command API with Bearer JWTs (`AUTH=jwt`): who may call, whose orders they may
//! touch, and whose idempotency keys they see. The tokens come from a stand-in identity
//! provider (`orders_testkit::jwt`), its key set a file the service reads.

use std::time::Duration;

use orders_testkit::jwt::{Signer, TestIssuer};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app_with};

const AUDIENCE: &str = "orders-commands";

async fn app(issuer: &TestIssuer, extra: &[&str]) -> TestApp {
    let mut args = issuer.args();
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_app_with(&args).await
}

fn body(user: Option<&str>) -> Value {
    let mut body =
        json!({ "currency": "EUR", "items": [{ "sku": "SKU-1", "quantity": 1, "unit_price_minor": 700 }] });
    if let Some(user) = user {
        body["user_id"] = user.into();
    }
    body
}

async fn post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app.http.post(app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

async fn created(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The user of an order, from its first event, read as an administrator.
async fn user_of(app: &TestApp, issuer: &TestIssuer, order_id: &str) -> String {
    let admin = issuer.token_with_scopes("ops", &["orders:admin"]);
    let response =
        app.http.get(app.url(&format!("/orders/{order_id}/events"))).bearer_auth(admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["events"][0]["payload"]["user_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_request_without_a_valid_token_is_refused_with_a_challenge() {
    let issuer = TestIssuer::new(AUDIENCE);
    let app = app(&issuer, &[]).await;

    let missing = post(&app, "/commands/orders", None, &body(Some("alice")), None).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let missing = problem(missing, 401).await;
    assert_eq!(missing["type"], "/problems/unauthenticated");

    let now = issuer.claims("alice", &[])["iat"].as_u64().unwrap();
    let mut expired = issuer.claims("alice", &[]);
    expired["exp"] = (now - 3600).into();
    let mut future = issuer.claims("alice", &[]);
    future["nbf"] = (now + 3600).into();
    let mut elsewhere = issuer.claims("alice", &[]);
    elsewhere["aud"] = "another-api".into();
    let mut stranger = issuer.claims("alice", &[]);
    stranger["iss"] = "https://stranger.test/".into();
    let mut nobody = issuer.claims("alice", &[]);
    nobody.as_object_mut().unwrap().remove("sub");
    let mut forever = issuer.claims("alice", &[]);
    forever.as_object_mut().unwrap().remove("exp");
    let valid = issuer.claims("alice", &[]);
    let cases = [
        (issuer.sign(Signer::Rs256, &expired), "the token has expired"),
        (issuer.sign(Signer::Rs256, &future), "the token is not valid yet"),
        (issuer.sign(Signer::Rs256, &elsewhere), "the token is not for this API"),
        (issuer.sign(Signer::Rs256, &stranger), "the token's issuer is not trusted"),
        (issuer.sign(Signer::Rs256, &nobody), "the token lacks a required claim"),
        (issuer.sign(Signer::Forged, &issuer.claims("alice", &[])), "the token's signature does not verify"),
        (issuer.sign(Signer::Rotated, &issuer.claims("alice", &[])), "the token's key rs-2 is not known"),
        (issuer.sign(Signer::Rs256, &forever), "the token lacks a required claim"),
        // The algorithm is the key's, whatever the token says.
        (issuer.sign_claiming(Signer::Es256, "rs-1", &valid), "the token's algorithm is not its key's"),
        (issuer.hs256_with_the_public_key(&valid), "the token's algorithm is not its key's"),
        (issuer.unsigned(&valid), "the token is malformed"),
        ("not.a.token".to_string(), "the token is malformed"),
    ];
    for (token, reason) in cases {
        let response = post(&app, "/commands/orders", Some(&token), &body(Some("alice")), None).await;
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
        let refused = problem(response, 401).await;
        assert!(refused["detail"].as_str().unwrap().starts_with(reason), "{reason}: {refused}");
    }
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0, "nothing refused was written");
}

#[tokio::test]
async fn an_order_belongs_to_the_tokens_subject() {
    let issuer = TestIssuer::new(AUDIENCE);
    let app = app(&issuer, &[]).await;
    let alice = issuer.token("alice");
    let bob = issuer.token("bob");

    // The user comes from the token; a body naming another is refused.
    let order = created(post(&app, "/commands/orders", Some(&alice), &body(None), None).await).await;
    let order_id = order["order_id"].as_str().unwrap().to_string();
    assert_eq!(user_of(&app, &issuer, &order_id).await, "alice");
    let forged = post(&app, "/commands/orders", Some(&alice), &body(Some("bob")), None).await;
    assert_eq!(problem(forged, 403).await["type"], "/problems/forbidden");

    // Only alice (or an administrator) acts on her order.
    let pay = json!({ "payment_id": "p-1", "amount_minor": 700 });
    let by_bob = post(&app, &format!("/commands/orders/{order_id}/pay"), Some(&bob), &pay, None).await;
    problem(by_bob, 403).await;
    let history =
        app.http.get(app.url(&format!("/orders/{order_id}/events"))).bearer_auth(&bob).send().await.unwrap();
    problem(history, 403).await;
    let by_alice = post(&app, &format!("/commands/orders/{order_id}/pay"), Some(&alice), &pay, None).await;
    assert_eq!(by_alice.status(), 200);

    // An administrator orders for anyone; an ES256 token works as well as an RS256 one.
    let admin = issuer.token_with_scopes("ops", &["orders:read", "orders:admin"]);
    let for_bob = created(post(&app, "/commands/orders", Some(&admin), &body(Some("bob")), None).await).await;
    assert_eq!(user_of(&app, &issuer, for_bob["order_id"].as_str().unwrap()).await, "bob");
    let es256 = issuer.sign(Signer::Es256, &issuer.claims("carol", &[]));
    let for_carol = created(post(&app, "/commands/orders", Some(&es256), &body(None), None).await).await;
    assert_eq!(user_of(&app, &issuer, for_carol["order_id"].as_str().unwrap()).await, "carol");
}

#[tokio::test]
async fn two_callers_with_the_same_idempotency_key_never_see_each_others_answers() {
    let issuer = TestIssuer::new(AUDIENCE);
    let app = app(&issuer, &[]).await;
    let (alice, bob) = (issuer.token("alice"), issuer.token("bob"));

    let first = post(&app, "/commands/orders", Some(&alice), &body(None), Some("key-1")).await;
    let first = created(first).await;
    let replay = post(&app, "/commands/orders", Some(&alice), &body(None), Some("key-1")).await;
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(created(replay).await["order_id"], first["order_id"]);

    let other = post(&app, "/commands/orders", Some(&bob), &body(None), Some("key-1")).await;
    assert!(other.headers().get("idempotency-replayed").is_none(), "bob got alice's answer");
    let other = created(other).await;
    assert_ne!(other["order_id"], first["order_id"]);
    assert_eq!(user_of(&app, &issuer, other["order_id"].as_str().unwrap()).await, "bob");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_a_restart() {
    let issuer = TestIssuer::new(AUDIENCE);
    let app = app(&issuer, &["--auth-jwks-refresh=1s"]).await;
    let old = issuer.token("alice");
    let new = issuer.sign(Signer::Rotated, &issuer.claims("alice", &[]));
    assert_eq!(post(&app, "/commands/orders", Some(&old), &body(None), None).await.status(), 201);

    issuer.rotate();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = post(&app, "/commands/orders", Some(&new), &body(None), None).await.status();
        if status == 201 {
            break;
        }
        assert_eq!(status, 401);
        assert!(tokio::time::Instant::now() < deadline, "the new key was not picked up in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The key the provider removed is no longer trusted.
    let refused = post(&app, "/commands/orders", Some(&old), &body(None), None).await;
    assert!(problem(refused, 401).await["detail"].as_str().unwrap().contains("rs-1 is not known"));
}
