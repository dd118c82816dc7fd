//! The session limits reach the server, and errors are classified, against the real
//! PostgreSQL that `make up` starts.

use std::time::{Duration, Instant};

use orders_postgres::{DatabaseUrl, Failure, Session, classify, connect, describe, pool};
use orders_testkit::postgres::TestDatabase;

fn url(db: &TestDatabase) -> DatabaseUrl {
    db.url().parse().expect("the test database URL parses")
}

#[tokio::test]
async fn every_pooled_session_carries_the_limits() {
    let db = TestDatabase::create().await;
    let pool = pool(&url(&db), 2, "limits-test", &Session::default()).expect("pool");
    let client = pool.get().await.expect("a connection");
    for (setting, expected) in [
        ("statement_timeout", "30s"),
        ("lock_timeout", "10s"),
        ("idle_in_transaction_session_timeout", "1min"),
    ] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await.expect("show");
        assert_eq!(row.get::<_, String>(0), expected, "{setting}");
    }
    let row = client.query_one("SELECT current_setting('application_name')", &[]).await.expect("name");
    assert_eq!(row.get::<_, String>(0), "limits-test");
}

#[tokio::test]
async fn the_server_ends_a_statement_past_its_timeout() {
    let db = TestDatabase::create().await;
    let session = Session { statement_timeout: Some(Duration::from_millis(200)), ..Session::default() };
    let pool = pool(&url(&db), 1, "timeout-test", &session).expect("pool");
    let client = pool.get().await.expect("a connection");
    let started = Instant::now();
    let err = client.execute("SELECT pg_sleep(30)", &[]).await.expect_err("the server cancels it");
    assert!(started.elapsed() < Duration::from_secs(20), "cancelled after {:?}", started.elapsed());
    assert_eq!(classify(&err), Failure::Transient, "{}", describe(&err));
    assert!(describe(&err).contains("SQLSTATE 57014"), "{}", describe(&err));
    // The connection is usable again at once: nothing is left running on it.
    client.execute("SELECT 1", &[]).await.expect("the connection is free");
}

#[tokio::test]
async fn a_lock_wait_ends_at_the_lock_timeout() {
    let db = TestDatabase::create().await;
    let session = Session { lock_timeout: Some(Duration::from_millis(200)), ..Session::default() };
    let pool = pool(&url(&db), 2, "lock-test", &session).expect("pool");
    let mut holder = pool.get().await.expect("a connection");
    holder.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.expect("table");
    let tx = holder.transaction().await.expect("begin");
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let waiter = pool.get().await.expect("a second connection");
    let err = waiter.execute("SELECT * FROM t", &[]).await.expect_err("gives up waiting");
    assert_eq!(classify(&err), Failure::Transient, "{}", describe(&err));
    assert!(describe(&err).contains("SQLSTATE 55P03"), "{}", describe(&err));
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn unique_violations_and_bad_statements_are_told_apart() {
    let db = TestDatabase::create().await;
    let client = connect(&url(&db), "classify-test", &Session::default()).await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .expect("setup");
    let dup = client.execute("INSERT INTO t VALUES (1)", &[]).await.expect_err("duplicate");
    assert_eq!(classify(&dup), Failure::UniqueViolation, "{}", describe(&dup));
    let bad = client.execute("SELECT no_such_column FROM t", &[]).await.expect_err("bad column");
    assert_eq!(classify(&bad), Failure::Permanent, "{}", describe(&bad));
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_connect_error() {
    // Port 1 on loopback: nothing listens there.
    let url: DatabaseUrl = "postgres://nobody:secret@127.0.0.1:1/none".parse().expect("url");
    let err = connect(&url, "unreachable-test", &Session::default()).await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1") && !text.contains("secret"), "{text}");
}
