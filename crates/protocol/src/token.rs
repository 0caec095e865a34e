//! Worker tokens and run tokens, as Lightning mints and checks them.
//!
//! - **Worker token** (query param `token` when the socket connects): HS256
//!   keyed with the shared secret's UTF-8 bytes, claims
//!   `{worker_id, iat, iss: "urn:openfn:worker"}`, no `exp`.
//! - **Run token** (claim reply, then `phx_join run:<id> {token}`): RS256,
//!   claims `{iss: "Lightning", id, sub: "run:<id>", nbf, exp}`. gabbro may
//!   add two optional claims that Lightning and OpenFn's worker ignore:
//!   `worker_id` (the worker the run was claimed by) and `epoch` (the run's
//!   claim epoch, bumped when a claim is abandoned and the run requeued, so
//!   an old claim's token is refused).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const WORKER_ISSUER: &str = "urn:openfn:worker";
pub const RUN_ISSUER: &str = "Lightning";
/// Clock skew tolerated on `nbf`/`exp`, as OpenFn's worker allows.
pub const LEEWAY_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("token is for run {actual:?}, not {expected:?}")]
    WrongRun { expected: String, actual: String },
    #[error("token is missing the {0} claim")]
    MissingClaim(&'static str),
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Header with `alg` only, as Lightning's and kit's tokens have.
fn header(alg: Algorithm) -> Header {
    let mut h = Header::new(alg);
    h.typ = None;
    h
}

/// Claims of a worker token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerClaims {
    pub worker_id: String,
    pub iat: u64,
    pub iss: String,
}

/// HS256 worker tokens.
pub struct WorkerToken;

impl WorkerToken {
    /// A token for `worker_id`, issued now.
    pub fn sign(secret: &str, worker_id: &str) -> Result<String, TokenError> {
        let claims = WorkerClaims {
            worker_id: worker_id.to_string(),
            iat: now_seconds(),
            iss: WORKER_ISSUER.to_string(),
        };
        Self::sign_claims(secret, &claims)
    }

    pub fn sign_claims(secret: &str, claims: &WorkerClaims) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &header(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )?)
    }

    /// Check signature, issuer and the presence of `worker_id` and `iat`
    /// (and `nbf` if present), as Lightning does. There is no expiry.
    pub fn verify(token: &str, secret: &str) -> Result<WorkerClaims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.leeway = LEEWAY_SECONDS;
        v.set_issuer(&[WORKER_ISSUER]);
        v.required_spec_claims.insert("iss".to_string());
        let data = jsonwebtoken::decode::<WorkerClaims>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )?;
        if data.claims.worker_id.is_empty() {
            return Err(TokenError::MissingClaim("worker_id"));
        }
        Ok(data.claims)
    }
}

/// Claims of a run token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunClaims {
    pub iss: String,
    /// The run id.
    pub id: String,
    /// `run:<id>`; absent in kit's mock tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub nbf: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// gabbro extension: the worker the run was claimed by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// gabbro extension: the run's claim epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl RunClaims {
    /// Lightning's claims for `run_id`, valid from now for `ttl_seconds`
    /// (Lightning: run timeout + grace).
    pub fn new(run_id: &str, ttl_seconds: u64) -> RunClaims {
        let now = now_seconds();
        RunClaims {
            iss: RUN_ISSUER.to_string(),
            id: run_id.to_string(),
            sub: Some(format!("run:{run_id}")),
            nbf: now,
            exp: now + ttl_seconds,
            iat: None,
            worker_id: None,
            epoch: None,
        }
    }
}

/// How a run token is signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunTokenAlg {
    /// Lightning's: RSA, checkable by anyone with the public key.
    #[default]
    Rs256,
    /// gabbro's, on request: HMAC with a key only the orchestrator holds.
    Hs256,
}

impl RunTokenAlg {
    /// The name a worker puts in `run_token_alg` (JWT's `alg`).
    pub fn name(self) -> &'static str {
        match self {
            RunTokenAlg::Rs256 => "RS256",
            RunTokenAlg::Hs256 => "HS256",
        }
    }

    /// From a join's `run_token_alg`; anything but `HS256` is Lightning's.
    pub fn requested(name: Option<&str>) -> RunTokenAlg {
        match name {
            Some(n) if n.eq_ignore_ascii_case("HS256") => RunTokenAlg::Hs256,
            _ => RunTokenAlg::Rs256,
        }
    }
}

/// Signs run tokens with an RSA private key (RS256), or on request with an
/// HMAC key derived from it (HS256, see the module's documentation).
///
/// Signing uses *ring* (about ten times faster than the pure-Rust `rsa`
/// crate behind jsonwebtoken's `rust_crypto` backend; see docs/protocol.md);
/// the tokens are ordinary RS256 JWTs that any verifier accepts.
pub struct RunSigner {
    key: SigningKey,
    hmac: ring::hmac::Key,
    rng: ring::rand::SystemRandom,
    private_pem: String,
    public_pem: String,
}

/// The HS256 key of an RSA private key (PKCS#8 DER): an HMAC of a fixed
/// label under the key, so it is as secret as the key, the same on every
/// node that shares it, and never the key itself.
fn hmac_key_of(private_der: &[u8]) -> ring::hmac::Key {
    let outer = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, private_der);
    let derived = ring::hmac::sign(&outer, b"gabbro run tokens, HS256");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

enum SigningKey {
    Ring(Box<ring::signature::RsaKeyPair>),
    /// Keys *ring* refuses (under 2048 bits): jsonwebtoken's pure-Rust path.
    RustCrypto(EncodingKey),
}

impl RunSigner {
    /// From a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_private_pem(pem: &str) -> Result<RunSigner, TokenError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| TokenError::Key(format!("not an RSA private key in PEM: {e}")))?;
        Self::from_rsa(&private)
    }

    /// From base64 of a PEM, as Lightning's `WORKER_RUNS_PRIVATE_KEY`; a
    /// plain PEM is accepted too.
    pub fn from_env_value(value: &str) -> Result<RunSigner, TokenError> {
        Self::from_private_pem(&pem_or_base64(value)?)
    }

    /// A fresh key of `bits` bits (2048 is Lightning's; smaller keys, for
    /// tests, sign through the slower pure-Rust path).
    pub fn generate(bits: usize) -> Result<RunSigner, TokenError> {
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Self::from_rsa(&private)
    }

    fn from_rsa(private: &rsa::RsaPrivateKey) -> Result<RunSigner, TokenError> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?
            .to_string();
        let der = private
            .to_pkcs8_der()
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let key = match ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()) {
            Ok(k) => SigningKey::Ring(Box::new(k)),
            Err(_) => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let pkcs1 = private
                    .to_pkcs1_der()
                    .map_err(|e| TokenError::Key(e.to_string()))?;
                SigningKey::RustCrypto(EncodingKey::from_rsa_der(pkcs1.as_bytes()))
            }
        };
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(RunSigner {
            key,
            hmac: hmac_key_of(der.as_bytes()),
            rng: ring::rand::SystemRandom::new(),
            private_pem,
            public_pem,
        })
    }

    /// The public key (SPKI PEM) to give workers
    /// (`WORKER_LIGHTNING_PUBLIC_KEY` takes it base64-encoded).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// The private key (PKCS#8 PEM), e.g. to save a generated key.
    pub fn private_key_pem(&self) -> &str {
        &self.private_pem
    }

    /// The orchestrator's verifier: RS256 tokens, and the HS256 tokens this
    /// key's HMAC half signs.
    pub fn verifier(&self) -> Result<RunVerifier, TokenError> {
        let mut v = RunVerifier::from_public_pem(&self.public_pem)?;
        v.hmac = Some(self.hmac.clone());
        Ok(v)
    }

    /// A token signed as `alg` asks.
    pub fn sign_as(&self, claims: &RunClaims, alg: RunTokenAlg) -> Result<String, TokenError> {
        match alg {
            RunTokenAlg::Rs256 => self.sign(claims),
            RunTokenAlg::Hs256 => self.sign_hs256(claims),
        }
    }

    fn sign_hs256(&self, claims: &RunClaims) -> Result<String, TokenError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        // `{"alg":"HS256"}`.
        const HEADER: &str = "eyJhbGciOiJIUzI1NiJ9";
        let claims = serde_json::to_vec(claims).map_err(|e| TokenError::Key(e.to_string()))?;
        let mut token = String::with_capacity(HEADER.len() + 2 + claims.len() * 4 / 3 + 44);
        token.push_str(HEADER);
        token.push('.');
        B64.encode_string(&claims, &mut token);
        let tag = ring::hmac::sign(&self.hmac, token.as_bytes());
        token.push('.');
        B64.encode_string(tag.as_ref(), &mut token);
        Ok(token)
    }

    /// An RS256 token, as Lightning signs them.
    pub fn sign(&self, claims: &RunClaims) -> Result<String, TokenError> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let key = match &self.key {
            SigningKey::Ring(k) => k,
            SigningKey::RustCrypto(k) => {
                return Ok(jsonwebtoken::encode(&header(Algorithm::RS256), claims, k)?);
            }
        };
        // `{"alg":"RS256"}`, as Lightning's tokens have.
        const HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
        let claims = serde_json::to_vec(claims).map_err(|e| TokenError::Key(e.to_string()))?;
        let mut token = String::with_capacity(HEADER.len() + 2 + claims.len() * 4 / 3 + 350);
        token.push_str(HEADER);
        token.push('.');
        B64.encode_string(&claims, &mut token);
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &self.rng,
            token.as_bytes(),
            &mut sig,
        )
        .map_err(|_| TokenError::Key("RSA signing failed".into()))?;
        token.push('.');
        B64.encode_string(&sig, &mut token);
        Ok(token)
    }
}

/// Checks run tokens with the RSA public key.
///
/// Keys of 2048 bits or more are checked with *ring* (the pure-Rust `rsa`
/// path was 4% of the orchestrator's CPU while draining the queue: every
/// run channel join verifies a token); smaller keys with jsonwebtoken's.
#[derive(Clone)]
pub struct RunVerifier {
    key: DecodingKey,
    /// PKCS#1 DER of the public key, when *ring* accepts its size.
    ring_key: Option<Vec<u8>>,
    /// The orchestrator's own verifier also takes its HS256 tokens; a
    /// worker's (public key only) takes RS256 alone.
    hmac: Option<ring::hmac::Key>,
}

impl RunVerifier {
    /// From an SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`) PEM.
    pub fn from_public_pem(pem: &str) -> Result<RunVerifier, TokenError> {
        use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
        use rsa::pkcs8::DecodePublicKey;
        let public = rsa::RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|e| TokenError::Key(format!("not an RSA public key in PEM: {e}")))?;
        let der = public
            .to_pkcs1_der()
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let ring_key =
            (rsa::traits::PublicKeyParts::size(&public) >= 256).then(|| der.as_bytes().to_vec());
        Ok(RunVerifier {
            key: DecodingKey::from_rsa_der(der.as_bytes()),
            ring_key,
            hmac: None,
        })
    }

    /// From base64 of a PEM (as `WORKER_LIGHTNING_PUBLIC_KEY`) or a PEM.
    pub fn from_env_value(value: &str) -> Result<RunVerifier, TokenError> {
        Self::from_public_pem(&pem_or_base64(value)?)
    }

    /// Check signature, issuer, `nbf` and `exp` (5 s leeway) and, when
    /// given, that the token is for `run_id`.
    pub fn verify(&self, token: &str, run_id: Option<&str>) -> Result<RunClaims, TokenError> {
        self.check(token, run_id, true)
    }

    /// As [`verify`](Self::verify) but accepting an expired token: for a
    /// worker delivering a run's events after an outage outlived its token.
    pub fn verify_ignoring_expiry(
        &self,
        token: &str,
        run_id: Option<&str>,
    ) -> Result<RunClaims, TokenError> {
        self.check(token, run_id, false)
    }

    fn check(&self, token: &str, run_id: Option<&str>, exp: bool) -> Result<RunClaims, TokenError> {
        let alg = jsonwebtoken::decode_header(token)?.alg;
        let claims = match (&self.hmac, &self.ring_key) {
            (Some(key), _) if alg == Algorithm::HS256 => Self::check_hs256(key, token, exp)?,
            (_, Some(der)) => Self::check_with_ring(der, token, exp)?,
            (_, None) => self.check_with_jsonwebtoken(token, exp)?,
        };
        if let Some(expected) = run_id
            && claims.id != expected
        {
            return Err(TokenError::WrongRun {
                expected: expected.to_string(),
                actual: claims.id,
            });
        }
        Ok(claims)
    }

    /// The same checks as [`check_with_jsonwebtoken`](Self::check_with_jsonwebtoken),
    /// with the signature verified by *ring*.
    fn check_with_ring(der: &[u8], token: &str, exp: bool) -> Result<RunClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        if jsonwebtoken::decode_header(token)?.alg != Algorithm::RS256 {
            return Err(jsonwebtoken::errors::Error::from(ErrorKind::InvalidAlgorithm).into());
        }
        let (message, signature) = split_signature(token)?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der)
            .verify(message.as_bytes(), &signature)
            .map_err(|_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidSignature))?;
        Self::check_claims(token, exp)
    }

    /// An HS256 token of this orchestrator's key (the caller checked `alg`).
    fn check_hs256(key: &ring::hmac::Key, token: &str, exp: bool) -> Result<RunClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let (message, signature) = split_signature(token)?;
        ring::hmac::verify(key, message.as_bytes(), &signature)
            .map_err(|_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidSignature))?;
        Self::check_claims(token, exp)
    }

    /// Issuer, and unless waived `exp`/`nbf` with the leeway, of a token
    /// whose signature was checked.
    fn check_claims(token: &str, exp: bool) -> Result<RunClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims: RunClaims = jsonwebtoken::dangerous::insecure_decode_claims(token)?;
        if claims.iss != RUN_ISSUER {
            return Err(jsonwebtoken::errors::Error::from(ErrorKind::InvalidIssuer).into());
        }
        if exp {
            let now = now_seconds();
            if claims.exp.saturating_add(LEEWAY_SECONDS) < now {
                return Err(jsonwebtoken::errors::Error::from(ErrorKind::ExpiredSignature).into());
            }
            if claims.nbf > now.saturating_add(LEEWAY_SECONDS) {
                return Err(jsonwebtoken::errors::Error::from(ErrorKind::ImmatureSignature).into());
            }
        }
        Ok(claims)
    }

    fn check_with_jsonwebtoken(&self, token: &str, exp: bool) -> Result<RunClaims, TokenError> {
        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECONDS;
        v.validate_exp = exp;
        v.validate_nbf = exp;
        v.validate_aud = false;
        v.set_issuer(&[RUN_ISSUER]);
        v.required_spec_claims.clear();
        v.required_spec_claims.insert("iss".to_string());
        if exp {
            v.required_spec_claims.insert("exp".to_string());
        }
        Ok(jsonwebtoken::decode::<RunClaims>(token, &self.key, &v)?.claims)
    }
}

/// A compact JWT's signed part and its decoded signature.
fn split_signature(token: &str) -> Result<(&str, Vec<u8>), TokenError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::errors::ErrorKind;
    let (message, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| jsonwebtoken::errors::Error::from(ErrorKind::InvalidToken))?;
    let signature = B64
        .decode(signature)
        .map_err(|_| jsonwebtoken::errors::Error::from(ErrorKind::InvalidSignature))?;
    Ok((message, signature))
}

fn pem_or_base64(value: &str) -> Result<String, TokenError> {
    let v = value.trim();
    if v.starts_with("-----BEGIN") {
        return Ok(v.to_string());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.split_whitespace().collect::<String>())
        .map_err(|e| TokenError::Key(format!("neither PEM nor base64 PEM: {e}")))?;
    String::from_utf8(bytes).map_err(|_| TokenError::Key("base64 value is not a PEM".into()))
}
