//! libpq's `sslmode` against the local PostgreSQL, which serves TLS with the
//! repository's certificates (`make up`, deploy/local/security.sh): each mode encrypts
//! and checks what it promises.

use orders_postgres::{DatabaseUrl, Session, connect};
use orders_testkit::{postgres::admin_url, secured};

/// The admin URL with `host` and the query `query`.
fn url(host: &str, query: &str) -> DatabaseUrl {
    let admin = admin_url();
    let rest = admin.split_once("@").map_or(admin.as_str(), |(_, rest)| rest);
    let port_and_db = rest.split_once(':').map_or(rest, |(_, p)| p);
    format!("postgres://postgres@{host}:{port_and_db}?{query}").parse().expect("a valid URL")
}

/// Whether the session is encrypted, as the server sees it.
async fn encrypted(url: &DatabaseUrl) -> Result<bool, String> {
    let client = connect(url, "tls-test", &Session::default()).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn each_sslmode_encrypts_and_checks_what_it_promises() {
    let ca = secured::ca_file();
    let other = secured::other_ca_file();
    let (ca, other) = (ca.display(), other.display());

    assert_eq!(encrypted(&url("localhost", "sslmode=disable")).await, Ok(false));
    assert_eq!(encrypted(&url("localhost", "sslmode=prefer")).await, Ok(true));
    assert_eq!(encrypted(&url("localhost", "sslmode=require")).await, Ok(true), "require checks nothing");
    assert_eq!(
        encrypted(&url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).await,
        Ok(true)
    );
    // The certificate names localhost and 127.0.0.1: verify-full takes both, not another name.
    assert_eq!(
        encrypted(&url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"))).await,
        Ok(true)
    );

    // A CA that did not sign the server's certificate: refused by verify-ca and verify-full.
    for mode in ["verify-ca", "verify-full"] {
        let refused = encrypted(&url("localhost", &format!("sslmode={mode}&sslrootcert={other}"))).await;
        let error = refused.expect_err(mode);
        assert!(error.contains("certificate verify failed"), "{mode}: {error}");
    }
    // require with a root certificate checks the chain, as libpq's does.
    let refused = encrypted(&url("localhost", &format!("sslmode=require&sslrootcert={other}"))).await;
    assert!(refused.expect_err("require with a root certificate").contains("certificate verify failed"));
}

#[tokio::test]
async fn verify_full_checks_the_name_and_verify_ca_does_not() {
    let ca = secured::ca_file();
    // Connected to 127.0.0.1 (`hostaddr`) under a name the certificate does not carry.
    let query = |mode: &str| format!("sslmode={mode}&sslrootcert={}&hostaddr=127.0.0.1", ca.display());
    let refused = encrypted(&url("not-in-the-certificate.test", &query("verify-full"))).await;
    let error = refused.expect_err("verify-full with a name the certificate lacks");
    assert!(error.contains("certificate verify failed") || error.contains("hostname mismatch"), "{error}");
    assert_eq!(encrypted(&url("not-in-the-certificate.test", &query("verify-ca"))).await, Ok(true));
}
