//! The classes of data an independent corpus showed the redactor missed or
//! mangled, each with fixtures of its own (several strings per class),
//! through the default redactor (every detector at once, as in production).

use serde_json::{Value, json};

use super::ALL;

/// The default redactor turns every `(input, expected)` pair into
/// `expected`, and leaves `expected` alone (idempotence).
#[track_caller]
fn redacts(cases: &[(&str, &str)]) {
    for (input, expected) in cases {
        assert_eq!(ALL.redact_str(input), *expected, "on {input:?}");
        assert_eq!(ALL.redact_str(expected), *expected, "again on {expected:?}");
    }
}

/// The default redactor leaves every input alone.
#[track_caller]
fn keeps(inputs: &[&str]) {
    for input in inputs {
        assert_eq!(ALL.redact_str(input), *input, "on {input:?}");
    }
}

/// A realistic AWS STS session token: base64 with `/` and `+`, hundreds of
/// characters.
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEJr//////////wEaDHm5gKz6Ql8nQm3xTiKoAa7Dq1\
    Zp9Xk3Lw2Vt+Rb6Yc8Nf0Hj4Gd2Se7Ua5Ri1Om9Kq3Lp6Xw8Vt0Nb2Mc4Hd6Jf8Gs1Ya3Ue5Ri7Ow9Kq1Lp3\
    Xw5Vt7Nb9Mc2Hd4Jf6Gs8Ya0Ue1Ri3Ow5Kq7Lp9Xw2Vt4Nb6Mc8Hd0Jf2Gs4Ya6Ue8Ri0Ow2Kq4Lp6Xw8==";

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[test]
fn secret_values_with_spaces_are_redacted_whole() {
    redacts(&[
        (
            "password: correct horse battery staple",
            "password: [REDACTED_SECRET]",
        ),
        (
            r#""password": "my dog has fleas""#,
            r#""password": "[REDACTED_SECRET]""#,
        ),
        (
            "client_secret='two words here'",
            "client_secret='[REDACTED_SECRET]'",
        ),
        (
            "passphrase=open sesame now user=bob",
            "passphrase=[REDACTED_SECRET] user=bob",
        ),
        (
            "api_key: ab cd ef, region: eu-west-1",
            "api_key: [REDACTED_SECRET], region: eu-west-1",
        ),
        (
            r#"{"note":"secret: the eagle lands at dawn","n":1}"#,
            r#"{"note":"secret: [REDACTED_SECRET]","n":1}"#,
        ),
        (
            "DB_PASSWORD=\"pass with spaces\" DB_USER=app",
            "DB_PASSWORD=\"[REDACTED_SECRET]\" DB_USER=app",
        ),
    ]);
}

#[test]
fn secret_keys_inside_serialized_json_text_are_found() {
    let cases = [
        (
            r#"{"body":"{\"password\":\"hunter2 two\"}"}"#,
            r#"{"body":"{\"password\":\"[REDACTED_SECRET]\"}"}"#,
        ),
        (
            r#"{"msg":"{\"api_key\":\"abc123def\",\"n\":1}"}"#,
            r#"{"msg":"{\"api_key\":\"[REDACTED_SECRET]\",\"n\":1}"}"#,
        ),
        (
            r#"{"payload":"{\"client_secret\": \"s3 cr3t\"}"}"#,
            r#"{"payload":"{\"client_secret\": \"[REDACTED_SECRET]\"}"}"#,
        ),
        (
            r#"{"log":"{\"access_token\":\"ya29.a0AfH6SMBx\",\"ok\":true}"}"#,
            r#"{"log":"{\"access_token\":\"[REDACTED_SECRET]\",\"ok\":true}"}"#,
        ),
        (
            r#"{"raw":"{\"ssn\":\"219099999\",\"dob\":\"17 May 1990\"}"}"#,
            r#"{"raw":"{\"ssn\":\"[REDACTED_SSN]\",\"dob\":\"[REDACTED_DOB]\"}"}"#,
        ),
    ];
    redacts(&cases);
    for (_, out) in cases {
        // Still JSON, and the inner text too.
        let outer: Value = serde_json::from_str(out).unwrap();
        let inner = outer.as_object().unwrap().values().next().unwrap();
        serde_json::from_str::<Value>(inner.as_str().unwrap()).unwrap();
    }
    // The same inner text as a string value (unescaped once parsed).
    let mut value = json!({"body": "{\"password\":\"hunter2 two\",\"user\":\"bob\"}"});
    assert_eq!(ALL.redact_value(&mut value), 1);
    assert_eq!(
        value,
        json!({"body": "{\"password\":\"[REDACTED_SECRET]\",\"user\":\"bob\"}"})
    );
}

#[test]
fn aws_credentials_in_the_shapes_the_tools_print() {
    let sts = format!(
        r#"{{"Credentials":{{"AccessKeyId":"ASIAY34FZKBOKMUTVV7A","SecretAccessKey":"{AWS_SECRET}","SessionToken":"{SESSION_TOKEN}","Expiration":"2026-11-23T10:01:32Z"}}}}"#
    );
    let sts_out = r#"{"Credentials":{"AccessKeyId":"[REDACTED_AWS_KEY_ID]","SecretAccessKey":"[REDACTED_AWS_SECRET]","SessionToken":"[REDACTED_AWS_SECRET]","Expiration":"2026-11-23T10:01:32Z"}}"#;
    let pretty = format!(
        "{{\n    \"Credentials\": {{\n        \"AccessKeyId\": \"ASIAY34FZKBOKMUTVV7A\",\n        \"SecretAccessKey\": \"{AWS_SECRET}\",\n        \"SessionToken\": \"{SESSION_TOKEN}\"\n    }}\n}}"
    );
    let pretty_out = "{\n    \"Credentials\": {\n        \"AccessKeyId\": \"[REDACTED_AWS_KEY_ID]\",\n        \"SecretAccessKey\": \"[REDACTED_AWS_SECRET]\",\n        \"SessionToken\": \"[REDACTED_AWS_SECRET]\"\n    }\n}";
    let file = format!(
        "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {AWS_SECRET}\naws_session_token = {SESSION_TOKEN}\nregion = eu-west-1"
    );
    let file_out = "[default]\naws_access_key_id = [REDACTED_AWS_KEY_ID]\naws_secret_access_key = [REDACTED_AWS_SECRET]\naws_session_token = [REDACTED_AWS_SECRET]\nregion = eu-west-1";
    let configure = format!(
        "AWS Access Key ID [None]: AKIAIOSFODNN7EXAMPLE\nAWS Secret Access Key [None]: {AWS_SECRET}\nDefault region name [None]: us-east-1"
    );
    let configure_out = "AWS Access Key ID [None]: [REDACTED_AWS_KEY_ID]\nAWS Secret Access Key [None]: [REDACTED_AWS_SECRET]\nDefault region name [None]: us-east-1";
    let labelled = [
        (
            format!("aws secret key: {AWS_SECRET}"),
            "aws secret key: [REDACTED_AWS_SECRET]",
        ),
        (
            format!("AWS secret access key = {AWS_SECRET}"),
            "AWS secret access key = [REDACTED_AWS_SECRET]",
        ),
        (
            format!("export AWS_SESSION_TOKEN=\"{SESSION_TOKEN}\""),
            "export AWS_SESSION_TOKEN=\"[REDACTED_AWS_SECRET]\"",
        ),
        (
            format!("AWS Secret Access Key [****************EKEY]: {AWS_SECRET}"),
            "AWS Secret Access Key [****************EKEY]: [REDACTED_AWS_SECRET]",
        ),
    ];
    let mut cases = vec![
        (sts.as_str(), sts_out),
        (pretty.as_str(), pretty_out),
        (file.as_str(), file_out),
        (configure.as_str(), configure_out),
    ];
    cases.extend(labelled.iter().map(|(i, o)| (i.as_str(), *o)));
    redacts(&cases);
    serde_json::from_str::<Value>(&ALL.redact_str(&sts)).unwrap();
}

#[test]
fn slack_tokens_of_every_documented_kind() {
    let t = "[REDACTED_SLACK_TOKEN]";
    let tokens = [
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-1234567890-1234567890-1234567890-abcdef1234567890",
        "xoxa-2-123456789012-AbCdEfGhIjKl",
        "xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OTAxMi0xMjM0NTY3ODkwMTIz",
        "xoxe-1-My0xLTEyMzQ1Njc4OTAxMi0xMjM0NTY3ODkwMTIzLTEyMw",
        "xoxo-123456789-AbCdEfGhIj",
        "xoxs-123456789-abcdefghij",
        "xoxr-987654321-refreshABCDEFGH",
        "xapp-1-A012B3C4D5E-1234567890123-0123456789abcdef",
    ];
    for token in tokens {
        redacts(&[
            (token, t),
            (&format!("token {token} end"), &format!("token {t} end")),
            (
                &format!(r#"{{"slack":"{token}"}}"#),
                &format!(r#"{{"slack":"{t}"}}"#),
            ),
        ]);
    }
}

#[test]
fn bearer_tokens_outside_an_authorization_header() {
    let t = "[REDACTED_BEARER_TOKEN]";
    redacts(&[
        (
            "Proxy-Authorization: Bearer abcdefghijklmnop",
            &format!("Proxy-Authorization: Bearer {t}"),
        ),
        (
            "proxy-authorization: bearer 0123456789abcdef0123",
            &format!("proxy-authorization: bearer {t}"),
        ),
        (
            "Authorization: Bearer opaqueTokenValue",
            &format!("Authorization: Bearer {t}"),
        ),
        (
            r#"{"headers":{"Proxy-Authorization":"Bearer letmeinplease"}}"#,
            &format!(r#"{{"headers":{{"Proxy-Authorization":"Bearer {t}"}}}}"#),
        ),
        (
            "/cb?auth=Bearer%20abcdef0123456789abcdef&x=1",
            &format!("/cb?auth=Bearer%20{t}&x=1"),
        ),
        (
            "/cb?auth=Bearer+abcdef0123456789abcdef",
            &format!("/cb?auth=Bearer+{t}"),
        ),
    ]);
    let s = "[REDACTED_SECRET]";
    redacts(&[
        (
            "GET /api?access_token=ya29.a0AfH6SMBx3kq9&x=1",
            &format!("GET /api?access_token={s}&x=1"),
        ),
        (
            "https://example.com/cb?token=abcdef0123456789",
            &format!("https://example.com/cb?token={s}"),
        ),
        (
            "next=%2Fcb%3Faccess_token%3Dya29.a0AfH6SMBx3kq9%26x%3D1",
            &format!("next=%2Fcb%3Faccess_token%3D{s}%26x%3D1"),
        ),
        (
            "redirect?token%3Ddeadbeefcafe0123",
            &format!("redirect?token%3D{s}"),
        ),
    ]);
    keeps(&[
        "the bearer of bad news",
        "Bearer abcdefghijklmnopqrstuvwxyz",
        "bearer_token_count=5",
    ]);
}

#[test]
fn phone_numbers_with_a_trunk_prefix_and_european_forms() {
    let t = "[REDACTED_PHONE]";
    let numbers = [
        // North American with the trunk prefix 1.
        "1-800-555-0199",
        "1 (800) 555-0199",
        "1 800 555 0199",
        "1.800.555.0199",
        "1(800)555-0199",
        // France.
        "06 12 34 56 78",
        "+33 (0)6 12 34 56 78",
        "+33 6 12 34 56 78",
        "01.23.45.67.89",
        // Germany.
        "0171 1234567",
        "+49 (0)30 123456",
        "030 1234567",
        "+49 171 1234567",
        // United Kingdom.
        "020 7946 0958",
        "07700 900123",
        "+44 (0)20 7946 0958",
    ];
    for n in numbers {
        redacts(&[
            (n, t),
            (&format!("call {n} today"), &format!("call {t} today")),
            (
                &format!(r#"{{"tel":"{n}"}}"#),
                &format!(r#"{{"tel":"{t}"}}"#),
            ),
        ]);
    }
    keeps(&["1-800-555", "1 (100) 555-0199", "build 1-800-555-01999"]);
}

#[test]
fn ssn_without_dashes_after_its_label() {
    let t = "[REDACTED_SSN]";
    redacts(&[
        ("SSN: 123456789", &format!("SSN: {t}")),
        ("ssn=078051120", &format!("ssn={t}")),
        (r#""ssn":"219099999""#, &format!(r#""ssn":"{t}""#)),
        (
            "Social Security Number: 536228726",
            &format!("Social Security Number: {t}"),
        ),
        (
            "social_security_no 123456789.",
            &format!("social_security_no {t}."),
        ),
        ("SSN #123456789", &format!("SSN #{t}")),
    ]);
    keeps(&[
        "order 123456789",
        "SSN: 000000000",
        "ssn: 666123456",
        "ssn: 1234567890",
        "classn: 123456789",
    ]);
}

#[test]
fn dates_of_birth_in_english_french_and_german() {
    let t = "[REDACTED_DOB]";
    redacts(&[
        ("DOB: 17 May 1990", &format!("DOB: {t}")),
        (
            "date of birth: May 17, 1990",
            &format!("date of birth: {t}"),
        ),
        ("born on 17th of May, 1990", &format!("born on {t}")),
        ("Birthday: Dec 3rd, 1962.", &format!("Birthday: {t}.")),
        (
            r#""birthDate":"Sept. 9, 2001""#,
            &format!(r#""birthDate":"{t}""#),
        ),
        ("né le 17/05/1990", &format!("né le {t}")),
        ("née le 3 mars 1985", &format!("née le {t}")),
        (
            "date de naissance : 17 mai 1990",
            &format!("date de naissance : {t}"),
        ),
        ("Né(e) le 1er août 1975", &format!("Né(e) le {t}")),
        ("geboren am 17.05.1990", &format!("geboren am {t}")),
        ("Geburtsdatum: 17. Mai 1990", &format!("Geburtsdatum: {t}")),
        ("geb. 03.07.1962", &format!("geb. {t}")),
        ("Geburtsdatum: 9. März 2001", &format!("Geburtsdatum: {t}")),
    ]);
    keeps(&[
        "created: 17 May 1990",
        "born in May 1990",
        "dob: 31 February 1990",
        "Geburtsdatum: 17. Maibaum 1990",
        "né le lundi",
    ]);
}

#[test]
fn internationalized_email_addresses_are_replaced_whole() {
    let t = "[REDACTED_EMAIL]";
    let addresses = [
        "josé.garcía@example.com",
        "用户@例子.广告",
        "Ñoño.Pérez@correo.es",
        "jürgen@müller.de",
        "иван@пример.рф",
        "δοκιμή@παράδειγμα.δοκιμή",
        "jose@xn--exmple-cua.com",
        "अजय@डाटा.भारत",
    ];
    for a in addresses {
        redacts(&[
            (a, t),
            (&format!("contact: {a}."), &format!("contact: {t}.")),
            (&format!("<{a}>"), &format!("<{t}>")),
            (
                &format!(r#"{{"email":"{a}"}}"#),
                &format!(r#"{{"email":"{t}"}}"#),
            ),
        ]);
    }
}

#[test]
fn a_rejected_card_or_iban_leaves_its_text_alone() {
    keeps(&[
        // Checksums off by one; a phone number fits each tail.
        "IBAN DE89 3704 0044 0532 0130 01",
        "iban: NL91 ABNA 0417 1643 01",
        "card 5500 0000 0000 0005",
        "card 6011 0009 9013 9425",
        "pay to GB82 WEST 1234 5698 7654 33 today",
    ]);
    // A valid number next to a rejected one is still found.
    redacts(&[(
        "card 6011 0009 9013 9425, call 06 12 34 56 78",
        "card 6011 0009 9013 9425, call [REDACTED_PHONE]",
    )]);
}

#[test]
fn asset_names_and_scp_remotes_are_not_email_addresses() {
    keeps(&[
        "logo@2x.png",
        "<img src=\"/img/icon@3x.webp\">",
        "sprite@1.5x.png",
        "avatar@dark.svg",
        "git@github.com:org/repo.git",
        "git clone git@gitlab.example.com:group/project.git",
        "deploy@host.example.com:/var/www",
    ]);
    redacts(&[(
        "mail alice@example.com: see logo@2x.png",
        "mail [REDACTED_EMAIL]: see logo@2x.png",
    )]);
}

#[test]
fn loopback_and_unspecified_addresses_are_kept_in_both_families() {
    keeps(&[
        "127.0.0.1",
        "listen 0.0.0.0:8080",
        "http://127.0.0.1:9000/health",
        "127.1.2.3",
        "::1",
        "::",
        "[::]:443",
        "::ffff:127.0.0.1",
        "::ffff:0.0.0.0",
    ]);
    redacts(&[
        ("10.0.0.1", "[REDACTED_IPV4]"),
        ("::ffff:10.0.0.1", "[REDACTED_IPV6]"),
        ("2001:db8::1", "[REDACTED_IPV6]"),
    ]);
}

#[test]
fn section_and_version_numbers_are_not_ipv4_addresses() {
    keeps(&[
        "section 4.2.1.3",
        "see Section 4.2.1.3 of the spec",
        "§ 4.2.1.3",
        "§4.2.1.3",
        "chapter 10.2.3.4",
        "version 1.2.3.4",
        "Ver. 2.0.0.1",
        "release 3.10.0.1",
        "4.2.1.3-beta",
        "1.2.3.4+build5",
        "v1.2.3.4",
    ]);
    redacts(&[
        ("from 4.2.1.3", "from [REDACTED_IPV4]"),
        (
            "hosts 10.0.0.1-10.0.0.9",
            "hosts [REDACTED_IPV4]-[REDACTED_IPV4]",
        ),
    ]);
}

#[test]
fn non_ascii_punctuation_around_an_address_is_kept() {
    redacts(&[
        ("«alice@example.com»", "«[REDACTED_EMAIL]»"),
        ("“josé@exämple.com”", "“[REDACTED_EMAIL]”"),
        (
            "mail:\u{a0}alice@example.com\u{a0}",
            "mail:\u{a0}[REDACTED_EMAIL]\u{a0}",
        ),
        ("用户@例子.广告。", "[REDACTED_EMAIL]。"),
    ]);
}
