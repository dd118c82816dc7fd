//! The query API with Bearer JWTs (`AUTH=jwt`): a user reads their own orders,
//! statistics and windows; another user gets `403`, a request without a token `401`,
//! and an administrator reads anyone's (and alone hears of an order's parked events).

use orders_testkit::jwt::TestIssuer;

use crate::helpers::{Fate, TestApp, World, at, interleave, order_events, problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_only_their_own_data() {
    let issuer = TestIssuer::new("orders-queries");
    let mut world = World::new().await;
    let ann = order_events("ann", 1, Fate::Paid, at(0));
    world.produce(&interleave(std::slice::from_ref(&ann))).await;
    // An order whose first event has not come: its later one waits (parked).
    let early = order_events("ann", 2, Fate::Paid, at(1));
    world.produce(&interleave(&[vec![early[1].clone()]])).await;
    let args = issuer.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = TestApp::spawn(&world, "auth", &args).await;
    world.wait_caught_up().await;

    let order_id = ann[0].order_id;
    let paths = [
        format!("/queries/orders/{order_id}"),
        "/queries/users/ann/orders".to_string(),
        "/queries/users/ann/stats".to_string(),
        "/queries/users/ann/windows".to_string(),
    ];
    let (owner, other) = (issuer.token("ann"), issuer.token("bob"));
    let admin = issuer.token_with_scopes("ops", &["orders:admin"]);
    for path in &paths {
        let anonymous = app.get(path).await;
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer", "{path}");
        problem(anonymous, 401).await;
        let get = |token: &str| app.http.get(app.url(path)).bearer_auth(token).send();
        let refused = problem(get(&other).await.unwrap(), 403).await;
        assert_eq!(refused["type"], "/problems/forbidden", "{path}");
        assert_eq!(get(&owner).await.unwrap().status(), 200, "{path} for its user");
        assert_eq!(get(&admin).await.unwrap().status(), 200, "{path} for an administrator");
    }

    // Whose an order without its first event is, is not known yet: only an administrator
    // hears of its parked events; anyone else gets a plain 404.
    let path = format!("/queries/orders/{}", early[0].order_id);
    let by_bob = problem(app.http.get(app.url(&path)).bearer_auth(&other).send().await.unwrap(), 404).await;
    assert_eq!(by_bob["type"], "/problems/not-found", "{by_bob}");
    assert!(by_bob.get("parked_versions").is_none(), "{by_bob}");
    let by_admin = problem(app.http.get(app.url(&path)).bearer_auth(&admin).send().await.unwrap(), 404).await;
    assert_eq!(by_admin["type"], "/problems/missing-events", "{by_admin}");
    assert_eq!(by_admin["parked_versions"], serde_json::json!([2]), "{by_admin}");
}
