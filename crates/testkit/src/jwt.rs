//! A stand-in identity provider for the tests of Bearer JWT checks: it publishes a JSON
//! Web Key Set in a file (the services read it as they would a mounted one) and signs
//! tokens with the keys of `fixtures/` (test-only keys, see `fixtures/README.md`).
//!
//! ```no_run
//! let issuer = orders_testkit::jwt::TestIssuer::new("orders-api");
//! let args = issuer.args(); // --auth=jwt --auth-jwks=<file> --auth-issuer=... --auth-audience=...
//! let token = issuer.token("alice"); // RS256, expires in 10 minutes
//! # let _ = (args, token);
//! ```

use std::path::{Path, PathBuf};

use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};

use crate::unique_suffix;

const RS256_KEY: &[u8] = include_bytes!("../fixtures/jwt-rs256.pem");
const ES256_KEY: &[u8] = include_bytes!("../fixtures/jwt-es256.pem");
const OTHER_KEY: &[u8] = include_bytes!("../fixtures/jwt-rs256-other.pem");

/// Which key signs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The RSA key of the set (kid `rs-1`), RS256.
    Rs256,
    /// The P-256 key of the set (kid `es-1`), ES256.
    Es256,
    /// A key the set does not have until [`TestIssuer::rotate`] (kid `rs-2`), RS256.
    Rotated,
    /// A key that claims kid `rs-1` but is not its key: the signature does not verify.
    Forged,
}

impl Signer {
    fn kid(self) -> &'static str {
        match self {
            Self::Rs256 | Self::Forged => "rs-1",
            Self::Es256 => "es-1",
            Self::Rotated => "rs-2",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            _ => Algorithm::RS256,
        }
    }

    fn key(self) -> EncodingKey {
        let parsed = match self {
            Self::Rs256 => EncodingKey::from_rsa_pem(RS256_KEY),
            Self::Es256 => EncodingKey::from_ec_pem(ES256_KEY),
            Self::Rotated | Self::Forged => EncodingKey::from_rsa_pem(OTHER_KEY),
        };
        parsed.unwrap_or_else(|e| panic!("the test key of {self:?} does not load: {e}"))
    }

    fn jwk(self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key(), self.algorithm())
            .unwrap_or_else(|e| panic!("no JWK for the test key of {self:?}: {e}"));
        jwk.common.key_id = Some(self.kid().to_string());
        jwk
    }
}

/// The stand-in provider: its key set file, issuer and audience. The file is deleted
/// when it is dropped.
#[derive(Debug)]
pub struct TestIssuer {
    dir: PathBuf,
    /// The issuer (`iss`) of its tokens.
    pub issuer: String,
    /// The audience (`aud`) of its tokens.
    pub audience: String,
}

impl TestIssuer {
    /// A provider whose key set holds the RS256 and ES256 keys, for `audience`.
    pub fn new(audience: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("orders-test-issuer-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let issuer = Self { dir, issuer: "https://issuer.test/".into(), audience: audience.into() };
        issuer.publish(&[Signer::Rs256, Signer::Es256]);
        issuer
    }

    /// The key set file.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }

    /// A service's arguments to trust this provider.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--auth=jwt".into(),
            format!("--auth-jwks={}", self.jwks_path().display()),
            format!("--auth-issuer={}", self.issuer),
            format!("--auth-audience={}", self.audience),
        ]
    }

    /// Rotates the keys: the set now holds the `Rotated` key and the ES256 one, no longer
    /// the first RSA key.
    pub fn rotate(&self) {
        self.publish(&[Signer::Rotated, Signer::Es256]);
    }

    fn publish(&self, signers: &[Signer]) {
        let set = JwkSet { keys: signers.iter().map(|s| s.jwk()).collect() };
        let text =
            serde_json::to_string_pretty(&set).unwrap_or_else(|e| panic!("the key set serializes: {e}"));
        write_atomically(&self.jwks_path(), &text);
    }

    /// A token of `subject` (RS256, valid for 10 minutes, no scope).
    pub fn token(&self, subject: &str) -> String {
        self.sign(Signer::Rs256, &self.claims(subject, &[]))
    }

    /// A token of `subject` with the scopes `scopes` (space-separated in `scope`).
    pub fn token_with_scopes(&self, subject: &str, scopes: &[&str]) -> String {
        self.sign(Signer::Rs256, &self.claims(subject, scopes))
    }

    /// The claims a valid token of `subject` has; change them to make invalid ones.
    pub fn claims(&self, subject: &str, scopes: &[&str]) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "scope": scopes.join(" "),
        })
    }

    /// `claims` signed by `signer`, its header naming the signer's kid and algorithm.
    pub fn sign(&self, signer: Signer, claims: &Value) -> String {
        self.sign_claiming(signer, signer.kid(), claims)
    }

    /// `claims` signed by `signer`, its header naming `kid` (another key's, say).
    pub fn sign_claiming(&self, signer: Signer, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(signer.algorithm());
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &signer.key()).unwrap_or_else(|e| panic!("signing failed: {e}"))
    }

    /// The algorithm confusion: `claims` in a token that says HS256 under kid `rs-1`,
    /// "signed" with that RSA key's public half (as published in the key set) as the
    /// HMAC secret. A verifier that trusts the token's `alg` would accept it.
    pub fn hs256_with_the_public_key(&self, claims: &Value) -> String {
        let jwk = serde_json::to_vec(&Signer::Rs256.jwk()).unwrap_or_default();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(Signer::Rs256.kid().to_string());
        let key = EncodingKey::from_secret(&jwk).unwrap_or_else(|e| panic!("no HMAC key: {e}"));
        jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| panic!("signing failed: {e}"))
    }

    /// `claims` in an unsigned token (`"alg": "none"`, kid `rs-1`).
    pub fn unsigned(&self, claims: &Value) -> String {
        use base64::Engine as _;
        let encode =
            |value: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
        format!("{}.{}.", encode(&serde_json::json!({"alg": "none", "kid": "rs-1"})), encode(claims))
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `path` whole (a reader never sees half a file).
fn write_atomically(path: &Path, text: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", partial.display()));
    std::fs::rename(&partial, path).unwrap_or_else(|e| panic!("cannot replace {}: {e}", path.display()));
}
