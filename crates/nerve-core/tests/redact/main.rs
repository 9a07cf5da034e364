//! Redaction: fixtures for every detector (at least five true and five false
//! positives each), values that must survive, and properties (idempotence,
//! JSON validity).

use std::sync::LazyLock;

mod classes;
mod cost;
mod shapes;

use nerve_core::redact::{Detector, Redactor};
use proptest::prelude::*;
use serde_json::{Value, json};

/// 48 base62 characters, for building provider tokens of a given length.
const BODY: &str = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v2W3x4";

fn body(len: usize) -> &'static str {
    &BODY[..len]
}

static ALL: LazyLock<Redactor> = LazyLock::new(Redactor::default);

/// Redacting `input` with `detector` alone gives `expected`.
#[track_caller]
fn check(detector: Detector, input: &str, expected: &str) {
    let redactor = Redactor::builder()
        .keys(Vec::<String>::new())
        .detectors([detector])
        .build()
        .unwrap();
    assert_eq!(
        redactor.redact_str(input),
        expected,
        "{detector} on {input:?}"
    );
    assert_eq!(
        redactor.redact_str(expected),
        expected,
        "{detector} is not idempotent on {expected:?}"
    );
}

/// `detector` finds nothing in any of `inputs`.
#[track_caller]
fn none(detector: Detector, inputs: &[&str]) {
    for input in inputs {
        check(detector, input, input);
    }
}

#[test]
fn email() {
    let d = Detector::Email;
    check(d, "alice@example.com", "[REDACTED_EMAIL]");
    check(
        d,
        "contact: bob.smith+tag@mail.example.co.uk.",
        "contact: [REDACTED_EMAIL].",
    );
    check(
        d,
        "mailto:carol_99@sub.example.org?subject=hi",
        "mailto:[REDACTED_EMAIL]?subject=hi",
    );
    check(d, "<dave@EXAMPLE.NET>", "<[REDACTED_EMAIL]>");
    check(
        d,
        "José <jose@exämple.com> jose@example.com",
        "José <[REDACTED_EMAIL]> [REDACTED_EMAIL]",
    );
    check(
        d,
        "https://example.com/?contact=alice@example.com",
        "https://example.com/?contact=[REDACTED_EMAIL]",
    );
    none(
        d,
        &[
            "user@localhost",
            "@alice mentioned it",
            "foo@bar",
            "pkg@1.2.3",
            "name@example.c",
            "postgres://app:s3cr3t@db.internal:5432/app",
            "git clone git@github.com:org/repo.git",
            "logo@2x.png",
        ],
    );
}

#[test]
fn credit_card() {
    let d = Detector::CreditCard;
    check(d, "4111 1111 1111 1111", "[REDACTED_CARD]");
    check(d, "card=5500-0000-0000-0004", "card=[REDACTED_CARD]");
    check(
        d,
        "amex 378282246310005 exp 12/29",
        "amex [REDACTED_CARD] exp 12/29",
    );
    check(d, "6011111111111117", "[REDACTED_CARD]");
    check(d, "jcb:3530111333300000", "jcb:[REDACTED_CARD]");
    check(d, "mc 2223003122003222.", "mc [REDACTED_CARD].");
    none(
        d,
        &[
            "4111 1111 1111 1112",
            "1732356000123",
            "order 0000 0000 0000 0000",
            "4111-1111 1111-1111",
            "9999 9999 9999 9995",
            "1234567812345678",
        ],
    );
}

#[test]
fn us_ssn() {
    let d = Detector::UsSsn;
    check(d, "123-45-6789", "[REDACTED_SSN]");
    check(d, "SSN: 078-05-1120", "SSN: [REDACTED_SSN]");
    check(d, "ssn 219 09 9999", "ssn [REDACTED_SSN]");
    check(d, "id=536-22-8726;", "id=[REDACTED_SSN];");
    check(d, "(001-01-0001)", "([REDACTED_SSN])");
    none(
        d,
        &[
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
            "2024-11-23",
            "123-45-6789-1",
        ],
    );
}

#[test]
fn phone() {
    let d = Detector::Phone;
    check(d, "+1 415 555 2671", "[REDACTED_PHONE]");
    check(d, "call +44 20 7946 0958 now", "call [REDACTED_PHONE] now");
    check(d, "+4915112345678", "[REDACTED_PHONE]");
    check(d, "(415) 555-2671", "[REDACTED_PHONE]");
    check(d, "tel: 415.555.2671", "tel: [REDACTED_PHONE]");
    check(d, "06 12 34 56 78", "[REDACTED_PHONE]");
    check(d, "office 020 7946 0958.", "office [REDACTED_PHONE].");
    none(
        d,
        &[
            "2026-11-23",
            "+1 2",
            "555-0123",
            "123-456-7890",
            "v10.0.1-beta.2",
            "01.02.2024",
            "01234567-0123-4567-8901-234567890123",
            "2026-11-23T09:01:32.123+10:00",
        ],
    );
}

#[test]
fn ipv4() {
    let d = Detector::Ipv4;
    check(d, "192.168.1.1", "[REDACTED_IPV4]");
    check(d, "client=10.0.0.254;", "client=[REDACTED_IPV4];");
    check(d, "from 203.0.113.9.", "from [REDACTED_IPV4].");
    check(d, "[8.8.8.8]:53", "[[REDACTED_IPV4]]:53");
    check(
        d,
        "x-forwarded-for: 172.16.254.1, 10.1.1.1",
        "x-forwarded-for: [REDACTED_IPV4], [REDACTED_IPV4]",
    );
    none(
        d,
        &[
            "1.2.3",
            "256.1.1.1",
            "1.2.3.4.5",
            "01.02.03.04",
            "v10.0.1-beta.2",
            "999.999.999.999",
        ],
    );
}

#[test]
fn ipv6() {
    let d = Detector::Ipv6;
    check(d, "2001:db8::1", "[REDACTED_IPV6]");
    check(
        d,
        "addr=fe80::1ff:fe23:4567:890a%eth0",
        "addr=[REDACTED_IPV6]%eth0",
    );
    check(
        d,
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "[REDACTED_IPV6]",
    );
    check(d, "::ffff:192.0.2.128", "[REDACTED_IPV6]");
    check(d, "[2001:db8::ff00:42:8329]:443", "[[REDACTED_IPV6]]:443");
    none(
        d,
        &[
            "12:30:45",
            "::1",
            "std::net::Ipv6Addr",
            "00:1a:2b:3c:4d:5e",
            "2026-11-23T09:01:32Z",
        ],
    );
}

#[test]
fn mac_address() {
    let d = Detector::MacAddress;
    check(d, "00:1a:2b:3c:4d:5e", "[REDACTED_MAC]");
    check(d, "mac=AA-BB-CC-DD-EE-01", "mac=[REDACTED_MAC]");
    check(d, "hw 001a.2b3c.4d5e", "hw [REDACTED_MAC]");
    check(d, "ether 3c:22:fb:12:34:56 brd", "ether [REDACTED_MAC] brd");
    check(d, "DE:AD:BE:EF:00:01", "[REDACTED_MAC]");
    none(
        d,
        &[
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "12:30:45",
            "01:23:45:67:89",
            "01:23:45:67:89:ab:cd",
            "aa:bb:cc:dd:ee:gg",
        ],
    );
}

#[test]
fn iban() {
    let d = Detector::Iban;
    check(d, "DE89370400440532013000", "[REDACTED_IBAN]");
    check(d, "GB82 WEST 1234 5698 7654 32", "[REDACTED_IBAN]");
    check(
        d,
        "iban: FR1420041010050500013M02606",
        "iban: [REDACTED_IBAN]",
    );
    check(d, "to NL91ABNA0417164300.", "to [REDACTED_IBAN].");
    check(d, "CH9300762011623852957", "[REDACTED_IBAN]");
    none(
        d,
        &[
            "DE89370400440532013001",
            "ZZ89370400440532013000",
            "GB82 WEST 1234 5698 7654 3",
            "AB12CDEF",
            "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
        ],
    );
}

#[test]
fn date_of_birth() {
    let d = Detector::DateOfBirth;
    check(d, "dob: 1990-05-17", "dob: [REDACTED_DOB]");
    check(
        d,
        r#""date_of_birth":"17/05/1990""#,
        r#""date_of_birth":"[REDACTED_DOB]""#,
    );
    check(d, "born on 05/17/1990", "born on [REDACTED_DOB]");
    check(d, "birthDate=1985/12/01", "birthDate=[REDACTED_DOB]");
    check(d, "DOB 3.7.1962", "DOB [REDACTED_DOB]");
    none(
        d,
        &[
            "dob: unknown",
            "created: 1990-05-17",
            "date of birth: 1990-13-45",
            "born on 31/02/1990",
            "birthday: 1850-01-01",
            "dob_verified=true",
        ],
    );
}

#[test]
fn passport() {
    let d = Detector::Passport;
    check(d, "passport: X1234567", "passport: [REDACTED_PASSPORT]");
    check(
        d,
        "Passport No. 123456789",
        "Passport No. [REDACTED_PASSPORT]",
    );
    check(
        d,
        "passport_number=C01X00T47",
        "passport_number=[REDACTED_PASSPORT]",
    );
    check(d, "PASSPORT#L898902C", "PASSPORT#[REDACTED_PASSPORT]");
    check(
        d,
        r#""passport": "AB1234567""#,
        r#""passport": "[REDACTED_PASSPORT]""#,
    );
    none(
        d,
        &[
            "passport: expired",
            "passport photo attached",
            "passport_no=ABCDEFGH",
            "passport: 12345",
            "passport 1234567890",
        ],
    );
}

const JWT_HS256: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
    eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
    SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn jwt() {
    let d = Detector::Jwt;
    let rs256 =
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJzdWIiOiIxIn0.c2ln-bmF0_dXJl";
    let es256 = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJuZXJ2ZSIsImV4cCI6MTczMjM1NjAwMH0.MEUCIQ";
    check(d, JWT_HS256, "[REDACTED_JWT]");
    check(d, &format!("token={rs256}&x=1"), "token=[REDACTED_JWT]&x=1");
    check(d, "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "[REDACTED_JWT]");
    check(
        d,
        &format!(r#""id_token":"{es256}""#),
        r#""id_token":"[REDACTED_JWT]""#,
    );
    check(d, &format!("jwt {JWT_HS256} end"), "jwt [REDACTED_JWT] end");
    none(
        d,
        &[
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.sig",
            "eyJhbGciOi.eyJzdWIi.sig",
            "eyJhbGciOiJIUzI1NiJ9",
            "header.payload.signature",
            "eyJhbGciOiJIUzI1NiJ9.eyJub3QganNvbg.sig",
        ],
    );
}

#[test]
fn bearer_token() {
    let d = Detector::BearerToken;
    check(
        d,
        "Authorization: Bearer abcdef0123456789abcdef",
        "Authorization: Bearer [REDACTED_BEARER_TOKEN]",
    );
    check(
        d,
        "bearer 9f8e7d6c5b4a39281706f5e4",
        "bearer [REDACTED_BEARER_TOKEN]",
    );
    check(
        d,
        "BEARER tok_1234567890ABCDEFGH",
        "BEARER [REDACTED_BEARER_TOKEN]",
    );
    check(
        d,
        "Bearer ya29.a0AfH6SMBx3kq9Lr_example-token",
        "Bearer [REDACTED_BEARER_TOKEN]",
    );
    check(
        d,
        "Bearer dGhpcyBpcyBhIHRva2VuMTIz==",
        "Bearer [REDACTED_BEARER_TOKEN]",
    );
    none(
        d,
        &[
            "bearer of bad news",
            "Bearer abc123",
            "Bearer abcdefghijklmnopqrstuvwxyz",
            "Bearer [REDACTED_BEARER_TOKEN]",
            "bearer_token_count=5",
        ],
    );
}

#[test]
fn basic_auth() {
    let d = Detector::BasicAuth;
    check(
        d,
        "Authorization: Basic dXNlcjpwYXNz",
        "Authorization: Basic [REDACTED_BASIC_AUTH]",
    );
    check(
        d,
        "basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "basic [REDACTED_BASIC_AUTH]",
    );
    check(
        d,
        "Basic YWRtaW46c2VjcmV0MTIz",
        "Basic [REDACTED_BASIC_AUTH]",
    );
    check(d, "BASIC Ym9iOmh1bnRlcjI=", "BASIC [REDACTED_BASIC_AUTH]");
    check(
        d,
        "proxy: Basic am9objpkb2U=;",
        "proxy: Basic [REDACTED_BASIC_AUTH];",
    );
    none(
        d,
        &[
            "basic usage",
            "Basic dXNlcg==",
            "basic [REDACTED_BASIC_AUTH]",
            "Basic abc",
            "basic configuration",
        ],
    );
}

#[test]
fn aws_access_key_id() {
    let d = Detector::AwsAccessKeyId;
    check(d, "AKIAIOSFODNN7EXAMPLE", "[REDACTED_AWS_KEY_ID]");
    check(d, "key=AKIAI44QH8DHBEXAMPLE", "key=[REDACTED_AWS_KEY_ID]");
    check(d, "ASIAY34FZKBOKMUTVV7A.", "[REDACTED_AWS_KEY_ID].");
    check(
        d,
        r#""AccessKeyId": "AKIAZ5ZYTRXQUCNRDJ7V""#,
        r#""AccessKeyId": "[REDACTED_AWS_KEY_ID]""#,
    );
    check(d, "role AROAJQABLZS4A3QDU57Q", "role [REDACTED_AWS_KEY_ID]");
    none(
        d,
        &[
            "AKIA0000000000000000",
            "AKIAIOSFODNN7EXAMPL",
            "XAKIAIOSFODNN7EXAMPLE",
            "akiaiosfodnn7example",
            "AKIAIOSFODNN7EXAMPLEX",
        ],
    );
}

#[test]
fn aws_secret_access_key() {
    let d = Detector::AwsSecretAccessKey;
    check(
        d,
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key=[REDACTED_AWS_SECRET]",
    );
    check(
        d,
        r#"AWS_SECRET_ACCESS_KEY: "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY""#,
        r#"AWS_SECRET_ACCESS_KEY: "[REDACTED_AWS_SECRET]""#,
    );
    check(
        d,
        "aws.secretKey = Tz1Qm8Vr3Lk2Xw9Pb7Nc4Hd6Jf0Gs5Ya2Ue8Ri1O",
        "aws.secretKey = [REDACTED_AWS_SECRET]",
    );
    check(
        d,
        "awsSecretKey:abcdEFGH1234ijklMNOP5678qrstUVWX9012yzAB",
        "awsSecretKey:[REDACTED_AWS_SECRET]",
    );
    check(
        d,
        "aws_sk='wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'",
        "aws_sk='[REDACTED_AWS_SECRET]'",
    );
    none(
        d,
        &[
            "aws_secret_access_key=da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "aws_secret_access_key=short",
            "secret=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_region=us-east-1",
            "aws_secret_access_key=[REDACTED_AWS_SECRET]",
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX",
        ],
    );
}

#[test]
fn github_token() {
    let d = Detector::GithubToken;
    let t = "[REDACTED_GITHUB_TOKEN]";
    check(d, &format!("ghp_{}", body(36)), t);
    check(
        d,
        &format!("token gho_{} ok", body(36)),
        &format!("token {t} ok"),
    );
    check(d, &format!("ghs_{}.", body(40)), &format!("{t}."));
    check(d, &format!("ghu_{}", body(36)), t);
    check(d, &format!("github_pat_{}_{}", body(22), body(40)), t);
    none(
        d,
        &[
            "ghp_short",
            &format!("ghx_{}", body(36)),
            &format!("GHP_{}", body(36)),
            &format!("ghp_{}", body(35)),
            &format!("xghp_{}", body(36)),
        ],
    );
}

#[test]
fn gitlab_token() {
    let d = Detector::GitlabToken;
    let t = "[REDACTED_GITLAB_TOKEN]";
    check(d, &format!("glpat-{}", body(20)), t);
    check(d, "glpat-xYz12AbC34dEf56GhI78", t);
    check(
        d,
        &format!("PRIVATE-TOKEN: glpat-{}", body(26)),
        &format!("PRIVATE-TOKEN: {t}"),
    );
    check(d, "glpat-ab_cd-ef12gh34ij56kl", t);
    check(d, &format!("'glpat-{}'", body(20)), &format!("'{t}'"));
    none(
        d,
        &[
            "glpat-short",
            &format!("glpat-{}", body(19)),
            &format!("GLPAT-{}", body(20)),
            &format!("xglpat-{}", body(20)),
            &format!("glpat-{}{}", BODY, body(20)),
        ],
    );
}

#[test]
fn slack_token() {
    let d = Detector::SlackToken;
    let t = "[REDACTED_SLACK_TOKEN]";
    check(
        d,
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        t,
    );
    check(
        d,
        "SLACK_TOKEN=xoxp-1234567890-1234567890-1234567890-abcdef1234567890",
        &format!("SLACK_TOKEN={t}"),
    );
    check(d, "xoxs-123456789-abcdefghij", t);
    check(d, "xoxr-987654321-refreshABCDEFGH.", &format!("{t}."));
    check(
        d,
        "post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        &format!("post to {t}"),
    );
    none(
        d,
        &[
            "xoxb-",
            "xoxz-123456-abcdefghij",
            "xoxb-abc-defghijklm",
            "XOXB-123456789-abcdefghij",
            "https://hooks.slack.com/services/",
        ],
    );
}

#[test]
fn stripe_key() {
    let d = Detector::StripeKey;
    let t = "[REDACTED_STRIPE_KEY]";
    check(d, "sk_live_4eC39HqLyjWDarjtT1zdp7dc", t);
    check(d, "pk_test_TYooMQauvdEDq54NiTphI7jx", t);
    check(d, "rk_live_51H8abcdEFGHijklMNOPqrst", t);
    check(d, &format!("whsec_{}", body(32)), t);
    check(
        d,
        "STRIPE_KEY=sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        &format!("STRIPE_KEY={t}"),
    );
    none(
        d,
        &[
            "sk_live_short",
            "sk_prod_4eC39HqLyjWDarjtT1zdp7dc",
            "task_live_4eC39HqLyjWDarjtT1zdp7dc",
            "SK_LIVE_4eC39HqLyjWDarjtT1zdp7dc",
            "sk-live-4eC39HqLyjWDarjtT1zdp7dc",
        ],
    );
}

#[test]
fn google_api_key() {
    let d = Detector::GoogleApiKey;
    let t = "[REDACTED_GOOGLE_API_KEY]";
    check(d, "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", t);
    check(d, &format!("AIza{}", body(35)), t);
    check(
        d,
        &format!("key=AIza{}&q=1", body(35)),
        &format!("key={t}&q=1"),
    );
    check(d, &format!("\"AIza{}\"", body(35)), &format!("\"{t}\""));
    check(d, "AIza_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_", t);
    none(
        d,
        &[
            &format!("AIza{}", body(34)),
            &format!("aiza{}", body(35)),
            &format!("AIzb{}", body(35)),
            &format!("xAIza{}", body(35)),
            &format!("AIza{}", body(36)),
        ],
    );
}

#[test]
fn openai_key() {
    let d = Detector::OpenAiKey;
    let t = "[REDACTED_OPENAI_KEY]";
    check(d, &format!("sk-{}", body(48)), t);
    check(d, &format!("sk-proj-{}_{}", body(30), body(20)), t);
    check(
        d,
        &format!("OPENAI_API_KEY=sk-{}", body(48)),
        &format!("OPENAI_API_KEY={t}"),
    );
    check(d, &format!("sk-svcacct-{}", body(40)), t);
    check(
        d,
        &format!("key: sk-admin-{}.", body(24)),
        &format!("key: {t}."),
    );
    none(
        d,
        &[
            "sk-learn",
            "sk-abcdefghijklmnopqrstuvwxyz",
            "desk-1234567890abcdefghij",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "sk-ALLUPPER1234567890ABCD",
        ],
    );
}

#[test]
fn npm_token() {
    let d = Detector::NpmToken;
    let t = "[REDACTED_NPM_TOKEN]";
    check(d, &format!("npm_{}", body(36)), t);
    check(
        d,
        &format!("//registry.npmjs.org/:_authToken=npm_{}", body(36)),
        &format!("//registry.npmjs.org/:_authToken={t}"),
    );
    check(
        d,
        &format!("NPM_TOKEN=npm_{}", body(36)),
        &format!("NPM_TOKEN={t}"),
    );
    check(d, &format!("'npm_{}'", body(36)), &format!("'{t}'"));
    check(
        d,
        &format!("npm_{} npm_{}", body(36), body(36)),
        &format!("{t} {t}"),
    );
    none(
        d,
        &[
            "npm_config_cache",
            &format!("npm_{}", body(35)),
            "NPM_TOKEN",
            &format!("npm_{}", body(37)),
            &format!("xnpm_{}", body(36)),
        ],
    );
}

#[test]
fn private_key() {
    let d = Detector::PrivateKey;
    let t = "[REDACTED_PRIVATE_KEY]";
    check(
        d,
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
        t,
    );
    check(
        d,
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nrest",
        &format!("key:\n{t}\nrest"),
    );
    check(
        d,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\n-----END OPENSSH PRIVATE KEY-----",
        t,
    );
    check(
        d,
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
        t,
    );
    check(
        d,
        "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI",
        &format!("key: {t}"),
    );
    check(
        d,
        r#"{"pem":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"}"#,
        &format!(r#"{{"pem":"{t}"}}"#),
    );
    none(
        d,
        &[
            "-----BEGIN PUBLIC KEY-----\nMIIBIj\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "BEGIN PRIVATE KEY",
            "----- private key -----",
            "the private key is stored in vault",
        ],
    );
}

#[test]
fn url_password() {
    let d = Detector::UrlPassword;
    let t = "[REDACTED_PASSWORD]";
    check(
        d,
        "postgres://app:s3cr3t@db.internal:5432/app",
        &format!("postgres://app:{t}@db.internal:5432/app"),
    );
    check(
        d,
        "https://user:p%40ss@example.com/x",
        &format!("https://user:{t}@example.com/x"),
    );
    check(
        d,
        "redis://:hunter2@cache:6379",
        &format!("redis://:{t}@cache:6379"),
    );
    check(
        d,
        "amqp://guest:guest@localhost",
        &format!("amqp://guest:{t}@localhost"),
    );
    check(
        d,
        "DATABASE_URL=mysql://root:toor@127.0.0.1/db",
        &format!("DATABASE_URL=mysql://root:{t}@127.0.0.1/db"),
    );
    none(
        d,
        &[
            "https://example.com/path",
            "https://user@example.com",
            "https://example.com:8080/x",
            "mailto:alice@example.com",
            "postgres://app:[REDACTED_PASSWORD]@db",
        ],
    );
}

#[test]
fn secret_assignment() {
    let d = Detector::SecretAssignment;
    let t = "[REDACTED_SECRET]";
    check(d, "api_key=abc123def456", &format!("api_key={t}"));
    check(d, "password: hunter2", &format!("password: {t}"));
    check(
        d,
        r#"{"client_secret":"s3cr3t-value","n":1}"#,
        &format!(r#"{{"client_secret":"{t}","n":1}}"#),
    );
    check(d, "x-api-key: 0123456789abcdef", &format!("x-api-key: {t}"));
    check(
        d,
        "/cb?token=deadbeefcafe&page=2",
        &format!("/cb?token={t}&page=2"),
    );
    check(d, "DB_PASSWORD='correct'", &format!("DB_PASSWORD='{t}'"));
    none(
        d,
        &[
            "token_count=5",
            "password=",
            "secret: [REDACTED]",
            "password=****",
            "api_key = null",
            "password=${DB_PASSWORD}",
            "secretary=alice",
            r#"{"password":null,"token":12345678,"secret":{"a":1}}"#,
        ],
    );
}

#[test]
fn every_detector_has_fixtures() {
    // Adding a detector without adding its fixture test above fails here.
    assert_eq!(Detector::ALL.len(), 25);
}

/// Values that look like data but are not personal, and must survive every
/// detector at once.
const SURVIVORS: &[&str] = &[
    "1732356000123",
    "1732356000",
    "ts=1732356000123",
    "0b7a4f9e-4b2e-4f7c-9d1a-3c5e8f2a6b10",
    "01936d5e-8a3c-7b21-9f4e-2d6c8a1b3e57",
    "550E8400-E29B-41D4-A716-446655440000",
    "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "commit 8d56fef2a1b3c4d5e6f708192a3b4c5d6e7f8091",
    "2026-11-23T09:01:32Z",
    "2026-11-23T09:01:32.123456Z",
    "2026-11-23T09:01:32.123+01:00",
    "1990-05-17T23:59:59-08:00",
    "2026-11-23 09:01:32",
    "1.2.3",
    "v10.0.1-beta.2",
    "1.0.0-rc.1+build.5",
    "version 0.24.1",
    "nerve-core 0.1.0",
    "took 1234 ms",
    "order #12345 for 3 items",
    "http://localhost:8080/health",
    "user.login",
    "chat.message.sent",
];

#[test]
fn timestamps_uuids_hashes_times_and_versions_survive() {
    for text in SURVIVORS {
        assert_eq!(ALL.redact_str(text), *text);
    }
    let mut data = json!({
        "ts": 1_732_356_000_123_u64,
        "ids": SURVIVORS,
        "nested": {"at": "2026-11-23T09:01:32Z", "version": "v10.0.1-beta.2"},
    });
    let before = data.clone();
    assert_eq!(ALL.redact_value(&mut data), 0);
    assert_eq!(data, before);
}

#[test]
fn key_redaction_is_nested_and_case_insensitive() {
    let mut data = json!({
        "users": [
            {"name": "a", "Password": "p1", "profile": {"SSN": 123456789}},
            {"name": "b", "auth": [{"Api-Key": ["k1", "k2"]}, {"COOKIE": {"sid": 1}}]},
        ],
        "authorization": null,
        "count": 2,
    });
    assert_eq!(ALL.redact_value(&mut data), 5);
    assert_eq!(
        data,
        json!({
            "users": [
                {"name": "a", "Password": "[REDACTED]", "profile": {"SSN": "[REDACTED]"}},
                {"name": "b", "auth": [{"Api-Key": "[REDACTED]"}, {"COOKIE": "[REDACTED]"}]},
            ],
            "authorization": "[REDACTED]",
            "count": 2,
        })
    );
}

#[test]
fn a_realistic_line_is_redacted_everywhere() {
    let line = format!(
        "user alice@example.com paid with 4111 1111 1111 1111 from 203.0.113.9, \
         Authorization: Bearer {JWT_HS256}, db postgres://app:s3cr3t@db.internal:5432, \
         at 2026-11-23T09:01:32Z, request 0b7a4f9e-4b2e-4f7c-9d1a-3c5e8f2a6b10"
    );
    assert_eq!(
        ALL.redact_str(&line),
        "user [REDACTED_EMAIL] paid with [REDACTED_CARD] from [REDACTED_IPV4], \
         Authorization: Bearer [REDACTED_JWT], db postgres://app:[REDACTED_PASSWORD]@db.internal:5432, \
         at 2026-11-23T09:01:32Z, request 0b7a4f9e-4b2e-4f7c-9d1a-3c5e8f2a6b10"
    );
}

/// Text made of personal data, survivors, and noise.
fn fragment() -> impl Strategy<Value = String> {
    let pii = prop::sample::select(vec![
        "alice@example.com",
        "4111 1111 1111 1111",
        "378282246310005",
        "123-45-6789",
        "+1 415 555 2671",
        "(415) 555-2671",
        "192.168.1.1",
        "2001:db8::1",
        "00:1a:2b:3c:4d:5e",
        "DE89370400440532013000",
        "dob: 1990-05-17",
        "passport: X1234567",
        JWT_HS256,
        "Bearer abcdef0123456789abcdef",
        "Basic dXNlcjpwYXNz",
        "AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "glpat-A1b2C3d4E5f6G7h8I9j0",
        "xoxb-123456789012-AbCdEfGhIjKl",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        "sk-A1b2C3d4E5f6G7h8I9j0K1l2M3n4",
        "npm_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
        "https://u:pw@host",
        "password=hunter2",
        "[REDACTED]",
        "\\",
        "\"",
        "\\u0041",
    ])
    .prop_map(str::to_owned);
    let survivor = prop::sample::select(SURVIVORS.to_vec()).prop_map(str::to_owned);
    let noise = "[ -~]{0,12}";
    prop_oneof![3 => pii, 2 => survivor, 2 => noise]
}

fn text() -> impl Strategy<Value = String> {
    let separator = prop::sample::select(vec!["", " ", ", ", "=", ":", "\"", "/", "-", ".", "\n"]);
    prop::collection::vec((fragment(), separator), 0..8)
        .prop_map(|parts| parts.into_iter().map(|(f, s)| f + s).collect::<String>())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Bare numbers stay short: a card number in a number position of
        // JSON text is the documented exception to "JSON stays valid".
        (-1_000_000_i64..1_000_000).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec![
                "password",
                "Token",
                "user",
                "note",
                "x-api-key",
                "data"
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn redacting_text_is_idempotent(text in text()) {
        let once = ALL.redact_str(&text).into_owned();
        let twice = ALL.redact_str(&once);
        prop_assert_eq!(&*twice, &*once);
    }

    #[test]
    fn redacting_values_is_idempotent_and_keeps_json_valid(value in json_value()) {
        let mut once = value;
        ALL.redact_value(&mut once);
        let text = serde_json::to_string(&once).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&parsed, &once);
        let mut twice = once.clone();
        prop_assert_eq!(ALL.redact_value(&mut twice), 0);
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn redacting_json_text_keeps_it_valid(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let redacted = ALL.redact_str(&text);
        let parsed = serde_json::from_str::<Value>(&redacted);
        prop_assert!(parsed.is_ok(), "{} became {}", text, redacted);
    }
}
