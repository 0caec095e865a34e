//! Worker and run tokens: sign, verify, and the refusals that matter.

use gabbro_protocol::TokenError;
use gabbro_protocol::token::{RunClaims, RunSigner, RunTokenAlg, WorkerClaims, WorkerToken};

const TEST_KEY: &str = include_str!("fixtures/run-token-test-key.pem");

#[test]
fn worker_token_round_trips_with_lightnings_claims_and_no_exp() {
    let token = WorkerToken::sign("abc123", "eager-wombats-know").unwrap();
    let header = token.split('.').next().unwrap();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    assert_eq!(header, br#"{"alg":"HS256"}"#);
    let claims = WorkerToken::verify(&token, "abc123").unwrap();
    assert_eq!(claims.worker_id, "eager-wombats-know");
    assert_eq!(claims.iss, "urn:openfn:worker");
    assert!(WorkerToken::verify(&token, "wrong").is_err());
}

#[test]
fn worker_token_with_another_issuer_is_refused() {
    let t = WorkerToken::sign_claims(
        "s",
        &WorkerClaims {
            worker_id: "w".into(),
            iat: 1,
            iss: "someone".into(),
        },
    )
    .unwrap();
    assert!(WorkerToken::verify(&t, "s").is_err());
}

#[test]
fn run_token_round_trips_and_is_bound_to_its_run() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let verifier = signer.verifier().unwrap();
    let token = signer.sign(&RunClaims::new("run-1", 310)).unwrap();
    let claims = verifier.verify(&token, Some("run-1")).unwrap();
    assert_eq!(claims.sub.as_deref(), Some("run:run-1"));
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert_eq!(header, br#"{"alg":"RS256"}"#);
    assert_eq!(claims.iss, "Lightning");
    assert!(matches!(
        verifier.verify(&token, Some("run-2")),
        Err(TokenError::WrongRun { .. })
    ));
}

#[test]
fn expired_run_token_is_refused_unless_expiry_is_waived() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let verifier = signer.verifier().unwrap();
    let mut claims = RunClaims::new("run-1", 0);
    claims.nbf -= 1000;
    claims.exp -= 1000;
    claims.epoch = Some(3);
    let token = signer.sign(&claims).unwrap();
    assert!(verifier.verify(&token, Some("run-1")).is_err());
    let c = verifier
        .verify_ignoring_expiry(&token, Some("run-1"))
        .unwrap();
    assert_eq!(c.epoch, Some(3));
}

#[test]
fn run_token_from_another_key_is_refused() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let token = signer.sign(&RunClaims::new("run-1", 60)).unwrap();
    let other = RunSigner::generate(1024).unwrap();
    // A small key signs too (through the pure-Rust path).
    let own = other.verifier().unwrap();
    own.verify(&other.sign(&RunClaims::new("x", 60)).unwrap(), Some("x"))
        .unwrap();
    let other = other.verifier().unwrap();
    assert!(other.verify(&token, None).is_err());
}

fn header_of(token: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap()
}

#[test]
fn hs256_run_tokens_are_taken_by_the_orchestrator_that_signed_them_only() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let own = signer.verifier().unwrap();
    let mut claims = RunClaims::new("run-1", 310);
    claims.epoch = Some(2);
    let token = signer.sign_as(&claims, RunTokenAlg::Hs256).unwrap();
    assert_eq!(header_of(&token), br#"{"alg":"HS256"}"#);
    let back = own.verify(&token, Some("run-1")).unwrap();
    assert_eq!(back, claims);
    assert!(matches!(
        own.verify(&token, Some("run-2")),
        Err(TokenError::WrongRun { .. })
    ));
    // Another node with the same key takes it (the key is derived, not random).
    let same_key = RunSigner::from_private_pem(signer.private_key_pem()).unwrap();
    same_key
        .verifier()
        .unwrap()
        .verify(&token, Some("run-1"))
        .unwrap();
    // A worker's verifier holds the public key only: HS256 is not for it.
    let public = gabbro_protocol::RunVerifier::from_public_pem(signer.public_key_pem()).unwrap();
    assert!(public.verify(&token, Some("run-1")).is_err());
    public
        .verify(
            &signer.sign_as(&claims, RunTokenAlg::Rs256).unwrap(),
            Some("run-1"),
        )
        .unwrap();
    // Another key's HS256 token, and a tampered one, are refused.
    let other = RunSigner::generate(1024).unwrap();
    let foreign = other.sign_as(&claims, RunTokenAlg::Hs256).unwrap();
    assert!(own.verify(&foreign, Some("run-1")).is_err());
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.rsplit_once('.').unwrap();
    use base64::Engine;
    let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"iss":"Lightning","id":"run-2","nbf":0,"exp":99999999999}"#);
    let forged = format!("{head}.{forged_claims}.{sig}");
    assert!(own.verify(&forged, Some("run-2")).is_err());
    // HMAC keyed with the public key (the classic RS256/HS256 confusion).
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(signer.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert!(own.verify(&confused, Some("run-1")).is_err());
}

#[test]
fn expired_hs256_run_token_is_refused_unless_expiry_is_waived() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let verifier = signer.verifier().unwrap();
    let mut claims = RunClaims::new("run-1", 0);
    claims.nbf -= 1000;
    claims.exp -= 1000;
    let token = signer.sign_as(&claims, RunTokenAlg::Hs256).unwrap();
    assert!(verifier.verify(&token, Some("run-1")).is_err());
    verifier
        .verify_ignoring_expiry(&token, Some("run-1"))
        .unwrap();
}

#[test]
fn a_join_asks_for_hs256_by_name_and_anything_else_is_lightnings() {
    assert_eq!(RunTokenAlg::requested(Some("HS256")), RunTokenAlg::Hs256);
    assert_eq!(RunTokenAlg::requested(Some("hs256")), RunTokenAlg::Hs256);
    assert_eq!(RunTokenAlg::requested(Some("none")), RunTokenAlg::Rs256);
    assert_eq!(RunTokenAlg::requested(None), RunTokenAlg::Rs256);
}

#[test]
fn keys_load_from_base64_pem_as_lightnings_env_vars_hold_them() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(TEST_KEY);
    let signer = RunSigner::from_env_value(&b64).unwrap();
    let public_b64 = base64::engine::general_purpose::STANDARD.encode(signer.public_key_pem());
    let verifier = gabbro_protocol::RunVerifier::from_env_value(&public_b64).unwrap();
    let token = signer.sign(&RunClaims::new("r", 60)).unwrap();
    verifier.verify(&token, Some("r")).unwrap();
    // The saved private PEM loads again.
    RunSigner::from_private_pem(signer.private_key_pem()).unwrap();
}

/// Not an assertion of speed: prints the cost of RS256 signing so it can be
/// written down (`cargo test -p gabbro-protocol --release -- --ignored --nocapture`).
#[test]
#[ignore]
fn measure_run_token_signing() {
    let signer = RunSigner::from_private_pem(TEST_KEY).unwrap();
    let verifier = signer.verifier().unwrap();
    let n = 200;
    let t = std::time::Instant::now();
    let mut tok = String::new();
    for i in 0..n {
        tok = signer
            .sign(&RunClaims::new(&format!("run-{i}"), 310))
            .unwrap();
    }
    let sign = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        verifier.verify(&tok, None).unwrap();
    }
    let verify = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        WorkerToken::verify(&WorkerToken::sign("s", "w").unwrap(), "s").unwrap();
    }
    let hs = t.elapsed() / n;
    let t = std::time::Instant::now();
    for i in 0..n {
        let claims = RunClaims::new(&format!("run-{i}"), 310);
        let tok = signer.sign_as(&claims, RunTokenAlg::Hs256).unwrap();
        verifier.verify(&tok, None).unwrap();
    }
    let run_hs = t.elapsed() / n;
    // The same signature through jsonwebtoken's rust_crypto backend (the
    // pure-Rust `rsa` crate), for comparison.
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let der = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY)
        .unwrap()
        .to_pkcs1_der()
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let t = std::time::Instant::now();
    for i in 0..n {
        jsonwebtoken::encode(&header, &RunClaims::new(&format!("run-{i}"), 310), &key).unwrap();
    }
    let rust_crypto = t.elapsed() / n;
    println!(
        "RS256 sign (ring) {sign:?}, RS256 sign (rust_crypto) {rust_crypto:?}, RS256 verify {verify:?}, HS256 worker token sign+verify {hs:?}, HS256 run token sign+verify {run_hs:?}"
    );
}
