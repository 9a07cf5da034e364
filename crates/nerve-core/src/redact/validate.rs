//! Validators: the checks that turn a pattern's candidate into a finding.
//!
//! A pattern only says what a value looks like; these say whether it can be
//! one (a card number passes Luhn, an IBAN passes mod-97, an SSN has a valid
//! area and group). Each works on the candidate text alone; where a value
//! sits in its haystack is checked in `detectors.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The decimal digits of `s` as values 0 to 9, separators skipped.
pub(crate) fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn (mod-10) checksum of payment card numbers.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Whether `digits` has the prefix (IIN) and length of a card network: Visa,
/// Mastercard, American Express, Discover, JCB, Diners Club, UnionPay, Maestro.
///
/// This is what keeps 13-digit millisecond timestamps (which start with 1)
/// from being taken for cards that happen to pass Luhn.
pub(crate) fn card_network(digits: &[u8]) -> bool {
    let n = digits.len();
    if !(13..=19).contains(&n) || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let prefix = |k: usize| {
        digits[..k]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    match digits[0] {
        // Visa.
        4 => matches!(n, 13 | 16 | 19),
        // Mastercard 2-series.
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        // Mastercard 51-55, Maestro 50 and 56-59.
        5 => {
            let p = prefix(2);
            ((51..=55).contains(&p) && n == 16) || p == 50 || (56..=59).contains(&p)
        }
        // Amex 34/37, JCB 3528-3589, Diners 300-305/36/38/39.
        3 => {
            let p2 = prefix(2);
            ((p2 == 34 || p2 == 37) && n == 15)
                || ((3528..=3589).contains(&prefix(4)) && n >= 16)
                || (((300..=305).contains(&prefix(3)) || matches!(p2, 36 | 38 | 39)) && n >= 14)
        }
        // Discover, UnionPay, Maestro: all of 6 is assigned.
        6 => n >= 16 || prefix(2) >= 60,
        _ => false,
    }
}

/// US Social Security Number rules: area not 000, 666 or 900-999; group not
/// 00; serial not 0000. `digits` are the nine digits.
pub(crate) fn ssn(digits: &[u8]) -> bool {
    if digits.len() != 9 {
        return false;
    }
    let number = |r: std::ops::Range<usize>| {
        digits[r]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let (area, group, serial) = (number(0..3), number(3..5), number(5..9));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A dotted-quad IPv4 address: four octets of at most 255, without leading
/// zeros.
pub(crate) fn ipv4(s: &str) -> bool {
    let mut octets = 0;
    for part in s.split('.') {
        octets += 1;
        let ok = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part.len() == 1 || !part.starts_with('0'))
            && part.parse::<u16>().is_ok_and(|v| v <= 255);
        if !ok {
            return false;
        }
    }
    octets == 4
}

/// An IPv6 address in any RFC 4291 text form, compressed and IPv4-embedded
/// included, that [identifies](ip_identifies) a host.
pub(crate) fn ipv6(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok() && ip_identifies(s)
}

/// Whether an IPv4 or IPv6 address could point at someone: the unspecified
/// (`0.0.0.0`, `::`) and loopback (`127.0.0.0/8`, `::1`) addresses, in
/// either family and IPv4-mapped (`::ffff:127.0.0.1`), identify no one and
/// are kept.
pub(crate) fn ip_identifies(s: &str) -> bool {
    let local4 = |a: Ipv4Addr| a.is_loopback() || a.is_unspecified();
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => !local4(a),
        Ok(IpAddr::V6(a)) => {
            !a.is_loopback() && !a.is_unspecified() && !a.to_ipv4_mapped().is_some_and(local4)
        }
        Err(_) => false,
    }
}

/// The IBAN length of each country that issues IBANs (SWIFT registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// Whether `s` (spaces allowed) has an IBAN's shape: a known country and
/// its length.
pub(crate) fn iban_shape(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|&b| b != b' ').collect();
    compact.len() >= 15
        && IBAN_LENGTHS
            .iter()
            .any(|(code, len)| code[..] == compact[..2] && *len == compact.len())
}

/// An IBAN (spaces allowed): a known country, its length, and the ISO 7064
/// mod-97 check digits.
pub(crate) fn iban(s: &str) -> bool {
    if !iban_shape(s) {
        return false;
    }
    let compact: Vec<u8> = s.bytes().filter(|&b| b != b' ').collect();
    let mut remainder = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        remainder = match b {
            b'0'..=b'9' => (remainder * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(b - b'A' + 10)) % 97,
            _ => return false,
        };
    }
    remainder == 1
}

/// Decodes base64, standard or URL-safe alphabet, padding optional.
pub(crate) fn base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A JWT: the header decodes to a JSON object naming its algorithm, and the
/// payload to something shaped like a JSON object (it can be long, so it is
/// not parsed).
pub(crate) fn jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return false;
    };
    let header_ok = base64(header)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.get("alg").is_some());
    header_ok
        && base64(payload).is_some_and(|bytes| {
            let text = bytes.trim_ascii();
            text.starts_with(b"{") && text.ends_with(b"}")
        })
}

/// HTTP Basic credentials: base64 of printable `user:password`.
pub(crate) fn basic_credentials(s: &str) -> bool {
    base64(s)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|text| text.contains(':') && !text.chars().any(char::is_control))
}

/// A calendar date between 1900 and 2100, given as year-month-day, as
/// day/month/year or month/day/year (either reading may be valid), or with
/// an English, French or German month name (`17 May 1990`, `May 17, 1990`,
/// `17. Mai 1990`, `1er mai 1990`).
pub(crate) fn birth_date(s: &str) -> bool {
    let valid = |y: u32, m: u32, d: u32| {
        (1900..=2100).contains(&y)
            && i32::try_from(y)
                .ok()
                .and_then(|y| chrono::NaiveDate::from_ymd_opt(y, m, d))
                .is_some()
    };
    let mut numbers = Vec::with_capacity(3);
    let mut month = None;
    for word in s
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let digits = word.trim_end_matches(|c: char| c.is_alphabetic());
        if let Ok(n) = digits.parse::<u32>() {
            numbers.push(n);
        } else if let Some(m) = month_number(word) {
            month = Some(m);
        } else if !word.eq_ignore_ascii_case("of") {
            return false;
        }
    }
    match (month, &numbers[..]) {
        (Some(m), &[d, y]) => valid(y, m, d),
        (None, &[y, m, d]) if y >= 1000 => valid(y, m, d),
        (None, &[a, b, y]) => valid(y, b, a) || valid(y, a, b),
        _ => false,
    }
}

/// The month (1 to 12) an English, French or German month name or
/// abbreviation names.
fn month_number(word: &str) -> Option<u32> {
    const PREFIXES: [&[&str]; 12] = [
        &["jan", "jän"],
        &["feb", "fév", "fev"],
        &["mar", "mär"],
        &["apr", "avr"],
        &["may", "mai"],
        &["jun", "juin"],
        &["jul", "juil"],
        &["aug", "aoû", "aou"],
        &["sep"],
        &["oct", "okt"],
        &["nov"],
        &["dec", "déc", "dez"],
    ];
    let word = word.to_lowercase();
    // `juin` and `juil` share `ju`: the longer prefix decides first.
    (1..=12u32)
        .rev()
        .zip(PREFIXES.iter().rev())
        .find(|(_, prefixes)| prefixes.iter().any(|p| word.starts_with(p)))
        .map(|(m, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_rejects_one_digit_off() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(luhn(&digits("378282246310005")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(!luhn(&digits("378282246310006")));
    }

    #[test]
    fn card_networks_need_a_known_prefix_and_length() {
        assert!(card_network(&digits("4111111111111111")));
        assert!(card_network(&digits("2223003122003222")));
        assert!(card_network(&digits("378282246310005")));
        assert!(card_network(&digits("3530111333300000")));
        assert!(!card_network(&digits("1732356000123")), "ms timestamp");
        assert!(!card_network(&digits("37828224631000")), "amex is 15");
        assert!(!card_network(&digits("0000000000000000")));
        assert!(!card_network(&digits("9999999999999995")));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(&digits("123-45-6789")));
        assert!(!ssn(&digits("000-45-6789")));
        assert!(!ssn(&digits("666-45-6789")));
        assert!(!ssn(&digits("912-45-6789")));
        assert!(!ssn(&digits("123-00-6789")));
        assert!(!ssn(&digits("123-45-0000")));
    }

    #[test]
    fn ipv4_octets() {
        assert!(ipv4("192.168.1.1"));
        assert!(ipv4("0.0.0.0"));
        assert!(!ip_identifies("0.0.0.0"));
        assert!(!ip_identifies("127.0.0.1"));
        assert!(!ip_identifies("127.1.2.3"));
        assert!(!ip_identifies("::"));
        assert!(!ip_identifies("::ffff:127.0.0.1"));
        assert!(ip_identifies("10.0.0.1"));
        assert!(ip_identifies("::ffff:10.0.0.1"));
        assert!(!ipv4("256.1.1.1"));
        assert!(!ipv4("01.2.3.4"));
        assert!(!ipv4("1.2.3"));
    }

    #[test]
    fn ipv6_forms() {
        assert!(ipv6("2001:db8::1"));
        assert!(ipv6("::ffff:192.0.2.1"));
        assert!(ipv6("fe80:0000:0000:0000:0202:b3ff:fe1e:8329"));
        assert!(!ipv6("::1"));
        assert!(!ipv6("12:30:45"));
        assert!(!ipv6("00:1a:2b:3c:4d:5e"));
    }

    #[test]
    fn iban_mod_97() {
        assert!(iban("DE89370400440532013000"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban("DE89370400440532013001"));
        assert!(!iban("DE8937040044053201300"), "wrong length");
        assert!(!iban("ZZ89370400440532013000"), "unknown country");
    }

    #[test]
    fn base64_both_alphabets() {
        assert_eq!(base64("dXNlcjpwYXNz").as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(base64("dXNlcg==").as_deref(), Some(&b"user"[..]));
        assert_eq!(base64("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(base64("a"), None);
        assert_eq!(base64("ab!c"), None);
    }

    #[test]
    fn jwt_header_must_name_an_algorithm() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig";
        assert!(jwt(token));
        assert!(!jwt("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"));
        assert!(!jwt("eyJhbGciOi.eyJzdWIi.sig"));
        assert!(
            !jwt("eyJhbGciOiJIUzI1NiJ9.eyJub3QganNvbg.sig"),
            "payload not an object"
        );
    }

    #[test]
    fn birth_dates() {
        assert!(birth_date("1990-05-17"));
        assert!(birth_date("17/05/1990"));
        assert!(birth_date("05/17/1990"));
        assert!(!birth_date("1990-13-45"));
        assert!(!birth_date("31/02/1990"));
        assert!(!birth_date("1850-01-01"));
        assert!(birth_date("17 May 1990"));
        assert!(birth_date("May 17, 1990"));
        assert!(birth_date("17th of May, 1990"));
        assert!(birth_date("1er mai 1990"));
        assert!(birth_date("17 août 1990"));
        assert!(birth_date("17. März 1990"));
        assert!(birth_date("17 juin 1990"));
        assert!(birth_date("Dezember 3, 1962"));
        assert!(!birth_date("31 February 1990"));
        assert!(!birth_date("17 Foo 1990"));
    }
}
