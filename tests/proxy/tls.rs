//! The TLS listener with certificates made at test time: HTTP/2 and HTTP/1.1 by ALPN, a
//! certificate renewed on disk (or announced with SIGHUP) without dropping a connection, and
//! `[upstream] ca_path` trusting a private CA (one proxy's TLS listener as another's upstream).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::tls::TestPki;
use lingua_proxy::hook::Passthrough;
use std::sync::Arc;

async fn tls_proxy(pki: &TestPki) -> common::Harness {
    let (cert, key) = (pki.cert_path.clone(), pki.key_path.clone());
    common::start_with(
        move |c| {
            c.tls.cert_path = Some(cert);
            c.tls.key_path = Some(key);
        },
        Arc::new(Passthrough),
    )
    .await
}

fn https(h: &common::Harness, path: &str) -> String {
    format!("https://localhost:{}{path}", h.proxy.addr.port())
}

#[tokio::test]
async fn https_serves_http2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "alpn");
    let h = tls_proxy(&pki).await;
    let body = serde_json::to_vec(&common::chat_body(false)).unwrap();

    let h2 = pki.client().build().unwrap();
    let r = h2
        .post(https(&h, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN offers h2 first");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].is_string());
    assert_eq!(h.mock.state.requests_to("/chat/completions").len(), 1);

    let h1 = pki.client().http1_only().build().unwrap();
    let r = h1.get(https(&h, "/healthz")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, http::Version::HTTP_11)
    );

    // Cleartext on the TLS port is not served, and a client that does not trust the CA fails.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", h.proxy.addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let other = TestPki::new(dir.path(), "other");
    let stranger = other.client().build().unwrap();
    assert!(stranger.get(https(&h, "/healthz")).send().await.is_err());
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestPki::new(dir.path(), "old");
    let new = TestPki::new(dir.path(), "new");
    let h = tls_proxy(&old).await;
    // One HTTP/2 connection, kept by the client's pool.
    let old_client = old.client().build().unwrap();
    let r = old_client.get(https(&h, "/healthz")).send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert!(
        new.client()
            .build()
            .unwrap()
            .get(https(&h, "/healthz"))
            .send()
            .await
            .is_err()
    );

    old.install_from(&new);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time: a new handshake.
        let fresh = new.client().build().unwrap();
        if fresh.get(https(&h, "/healthz")).send().await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old client trusts only the old CA: it can only succeed on the connection it had.
    let r = old_client.get(https(&h, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the open connection survived the reload");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let old = TestPki::new(dir.path(), "hup-old");
    let new = TestPki::new(dir.path(), "hup-new");
    let port = common::free_port();
    let config = dir.path().join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[upstream]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             [log]\nlevel = \"info\"\nformat = \"json\"\n[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            old.cert_path.display(),
            old.key_path.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lingua-proxy"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let url = format!("https://localhost:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    while old
        .client()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the TLS listener did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Same names, new contents; SIGHUP says so at once.
    old.install_from(&new);
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code, reason = "kill(2) on the child's pid")]
    let sent = unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert_eq!(sent, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reloaded = None;
    while reloaded.is_none() && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100))
            && line.contains("TLS certificate reloaded")
        {
            reloaded = Some(line);
        }
    }
    let line = reloaded.expect("a reload log line");
    assert!(
        line.contains("SIGHUP") || line.contains("files changed"),
        "{line}"
    );
    let r = new
        .client()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn upstream_ca_path_trusts_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "upstream");
    // Proxy B: TLS in front of the mock. Proxy A: cleartext, B as its upstream.
    let b = tls_proxy(&pki).await;
    let upstream = format!("https://localhost:{}/v1", b.proxy.addr.port());
    let ca = pki.ca_path.clone();
    let trusting = common::start_with(
        {
            let upstream = upstream.clone();
            move |c| {
                c.upstream.base_url = upstream;
                c.upstream.ca_path = Some(ca);
            }
        },
        Arc::new(Passthrough),
    )
    .await;
    let body = serde_json::to_vec(&common::chat_body(false)).unwrap();
    let r = trusting.post_chat(&body, &[]).await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    assert_eq!(b.mock.state.requests_to("/chat/completions").len(), 1);

    // Without the CA the upstream is not trusted: a gateway error, not a silent downgrade.
    let distrusting = common::start_with(
        move |c| c.upstream.base_url = upstream,
        Arc::new(Passthrough),
    )
    .await;
    let r = distrusting.post_chat(&body, &[]).await;
    assert_eq!(r.status(), 502);
    assert_eq!(b.mock.state.requests_to("/chat/completions").len(), 1);
}
