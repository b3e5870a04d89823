//! The official `openai` Python SDK connects to the TLS listener with a CA made at test time
//! (httpx verifying against it), non-streamed and streamed.

use std::sync::Arc;

use crate::common;
use common::tls::TestPki;
use lingua_proxy::hook::Passthrough;

#[tokio::test]
async fn the_openai_python_sdk_talks_https_to_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "sdk");
    let (cert, key) = (pki.cert_path.clone(), pki.key_path.clone());
    let h = common::start_with(
        move |c| {
            c.tls.cert_path = Some(cert);
            c.tls.key_path = Some(key);
        },
        Arc::new(Passthrough),
    )
    .await;
    let base = format!("https://localhost:{}/v1", h.proxy.addr.port());
    let out =
        common::sdk::run_python_json("openai_tls.py", &[&base, pki.ca_path.to_str().unwrap()])
            .await;
    assert_eq!(out["http_version"], "HTTP/1.1");
    assert!(out["answer"].as_str().unwrap().len() > 3, "{out}");
    assert_eq!(out["answer"], out["streamed"], "{out}");
    assert_eq!(h.mock.state.requests_to("/chat/completions").len(), 2);
}
