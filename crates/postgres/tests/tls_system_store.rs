//! With `sslrootcert`, only those CAs are trusted, never the system's store beside
//! them; without it, the system's store is, and then the server's name is checked even
//! under `verify-ca` (the store trusts every public CA, each of which signs certificates
//! for anyone). To stand for "the system's store", this test runs itself again in a
//! child process whose OpenSSL takes the local CA as its default (`SSL_CERT_FILE`).

use orders_postgres::{DatabaseUrl, Session, connect};
use orders_testkit::{postgres::admin_url, secured};

const CHILD: &str = "ORDERS_TLS_SYSTEM_STORE_CHILD";

fn url(host: &str, query: &str) -> DatabaseUrl {
    let admin = admin_url();
    let rest = admin.split_once('@').map_or(admin.as_str(), |(_, rest)| rest);
    let port_and_db = rest.split_once(':').map_or(rest, |(_, p)| p);
    format!("postgres://postgres@{host}:{port_and_db}?{query}").parse().expect("a valid URL")
}

async fn connects(url: &DatabaseUrl) -> Result<(), String> {
    connect(url, "tls-store-test", &Session::default()).await.map(drop).map_err(|e| e.to_string())
}

#[tokio::test]
async fn sslrootcert_alone_is_trusted_and_the_system_store_checks_names() {
    if std::env::var_os(CHILD).is_none() {
        let output = std::process::Command::new(std::env::current_exe().expect("this test's binary"))
            .args([
                "--exact",
                "sslrootcert_alone_is_trusted_and_the_system_store_checks_names",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("SSL_CERT_FILE", secured::ca_file())
            .output()
            .expect("the child runs");
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && text.contains("1 passed"), "the child failed:\n{text}");
        return;
    }
    // Here OpenSSL's default store trusts the local CA, as a system store trusts public ones.
    let hostaddr = "hostaddr=127.0.0.1";
    assert_eq!(connects(&url("localhost", "sslmode=verify-ca")).await, Ok(()), "the system store is used");
    // sslrootcert names another CA: the server's (trusted by the system store) is refused.
    let other = secured::other_ca_file();
    for mode in ["verify-ca", "verify-full", "require"] {
        let refused =
            connects(&url("localhost", &format!("sslmode={mode}&sslrootcert={}", other.display()))).await;
        assert!(refused.expect_err(mode).contains("certificate verify failed"), "{mode}");
    }
    // Without sslrootcert, verify-ca checks the name too.
    let refused =
        connects(&url("not-in-the-certificate.test", &format!("sslmode=verify-ca&{hostaddr}"))).await;
    assert!(refused.expect_err("a wrong name under the system store").contains("certificate verify failed"));
    // With sslrootcert, verify-ca leaves names alone, as libpq's does.
    let ca = secured::ca_file();
    let named_wrong = url(
        "not-in-the-certificate.test",
        &format!("sslmode=verify-ca&sslrootcert={}&{hostaddr}", ca.display()),
    );
    assert_eq!(connects(&named_wrong).await, Ok(()));
}
