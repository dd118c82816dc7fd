//! `orders-load token`: a stand-in identity provider for a machine without one (`make
//! security-test`): bearer tokens signed with an RSA key of the machine's (RS256), and
//! the key set (JWKS) the services read to check them (`AUTH_JWKS`).
//!
//! ```text
//! orders-load token --key signing.pem --jwks > jwks.json
//! orders-load token --key signing.pem --subject ops --scope orders:admin > token
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};

/// What to issue.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The signing key: an RSA private key, PEM.
    #[arg(long)]
    pub key: PathBuf,
    /// Its key id (`kid`), in the token's header and the key set.
    #[arg(long, default_value = "local-1")]
    pub kid: String,
    /// Print the key set (JWKS) of the key instead of a token.
    #[arg(long)]
    pub jwks: bool,
    /// The token's issuer (`iss`).
    #[arg(long, default_value = "https://issuer.local/")]
    pub issuer: String,
    /// The token's audience (`aud`).
    #[arg(long, default_value = "orders-api")]
    pub audience: String,
    /// The token's subject (`sub`): the user.
    #[arg(long, default_value = "orders-load")]
    pub subject: String,
    /// Its scopes, space-separated (`orders:admin`: acts for every user).
    #[arg(long, default_value = "")]
    pub scope: String,
    /// How long it is valid.
    #[arg(long, default_value = "1h", value_parser = crate::parse_duration)]
    pub ttl: Duration,
}

/// Prints the token (or the key set) on standard output.
///
/// # Errors
/// When the key cannot be read or used.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let pem = std::fs::read(&args.key).with_context(|| format!("reading the key {}", args.key.display()))?;
    let key = EncodingKey::from_rsa_pem(&pem).context("the key is not an RSA private key (PEM)")?;
    if args.jwks {
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).context("deriving the public key")?;
        jwk.common.key_id = Some(args.kid.clone());
        println!("{}", serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })?);
        return Ok(());
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": args.issuer,
        "aud": args.audience,
        "sub": args.subject,
        "scope": args.scope,
        "iat": now,
        "nbf": now,
        "exp": now + args.ttl.as_secs(),
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(args.kid.clone());
    println!("{}", jsonwebtoken::encode(&header, &claims, &key).context("signing the token")?);
    Ok(())
}
