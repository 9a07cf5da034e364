//! The token on non-loopback binds, and the host check without one.

use nerve_dashboard::{Dashboard, ServeError};
use nerve_router::Bus;

use crate::support::get;

/// Bound to every interface, the dashboard makes up a token and refuses
/// requests without it. (Requests here go to 127.0.0.1 only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_requires_a_generated_token() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "0.0.0.0:0").unwrap();
    assert!(d.token_generated());
    let token = d.token().unwrap().to_owned();
    assert!(token.len() >= 32, "a long random token");
    let base = format!("http://127.0.0.1:{}", d.local_addr().port());
    assert!(
        d.url().ends_with(&format!("/?token={token}")),
        "{}",
        d.url()
    );
    for path in [
        "/",
        "/app.js",
        "/api/summary",
        "/api/events",
        "/api/stream",
        "/nope",
    ] {
        let (status, body) = get(&format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("token"), "{body}");
        let (status, _) = get(&format!("{base}{path}"), Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = get(&format!("{base}/api/summary"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    // The link with ?token= sets a cookie and sends the browser to the page.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("{base}/?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let r = client
        .get(format!("{base}/api/summary"))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{base}/?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"nerve-dashboard\""
    );
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_is_required_on_loopback_too() {
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .token("s3cret-token")
        .start()
        .unwrap();
    assert!(!d.token_generated());
    let base = format!("http://{}", d.local_addr());
    assert_eq!(get(&format!("{base}/api/events"), None).await.0, 401);
    assert_eq!(
        get(&format!("{base}/api/events"), Some("s3cret-token"))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!("{base}/api/events"), Some("s3cret-tokex"))
            .await
            .0,
        401
    );
    d.shutdown();
}

#[test]
fn a_bad_token_or_threshold_is_refused_at_start() {
    let bad = Dashboard::builder()
        .bind("127.0.0.1:0")
        .token("a b")
        .start();
    assert!(matches!(bad, Err(ServeError::BadToken(_))), "{bad:?}");
    let bad = Dashboard::builder().bind("127.0.0.1:0").token("").start();
    assert!(matches!(bad, Err(ServeError::BadToken(_))), "{bad:?}");
    let bad = Dashboard::builder()
        .bind("127.0.0.1:0")
        .warning_threshold(1.5)
        .start();
    assert!(matches!(bad, Err(ServeError::Threshold { .. })), "{bad:?}");
    let bad = Dashboard::builder()
        .bind("127.0.0.1:0")
        .items("a..b", "*.failed")
        .start();
    assert!(matches!(bad, Err(ServeError::Pattern(_))), "{bad:?}");
    let taken = Dashboard::builder().bind("127.0.0.1:0").start().unwrap();
    let again = Dashboard::builder().bind(taken.local_addr()).start();
    assert!(matches!(again, Err(ServeError::Bind { .. })), "{again:?}");
}

/// Without a token, only requests naming a loopback host are answered: a
/// page elsewhere cannot read the dashboard through DNS rebinding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_host_names_are_answered() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    assert!(d.token().is_none());
    let url = format!("http://{}/api/summary", d.local_addr());
    let client = reqwest::Client::new();
    for (host, want) in [
        ("evil.example", 403),
        ("evil.example:8080", 403),
        ("localhost:8080", 200),
        ("127.0.0.1", 200),
        ("[::1]:80", 200),
    ] {
        let r = client.get(&url).header("host", host).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{host}");
    }
    d.shutdown();
}
