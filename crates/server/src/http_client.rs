//! Outgoing HTTP(S) requests (webhook deliveries, external issuers' JWKS):
//! hyper with rustls on the aws-lc-rs provider, passed explicitly so nothing
//! depends on a process-wide default provider.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A pooled client for `http://` and `https://` URLs.
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A client (redirects are not followed). With `https`, it trusts the
/// system's roots and `ca_file`'s certificates; without, it reads no roots.
pub fn client(https: bool, ca_file: Option<&Path>) -> Result<HttpClient, String> {
    let roots = if https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            for cert in read_ca_file(path)? {
                roots.add(cert).map_err(|e| format!("ca_file: {e}"))?;
            }
        }
        roots
    } else {
        rustls::RootCertStore::empty()
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// The certificates of a PEM file (at least one).
pub fn read_ca_file(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// GETs `url` and parses the body as JSON (a 2xx answer of at most 1 MiB).
pub async fn get_json(url: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().with_context(|| format!("URL {url:?}"))?;
    let http = client(uri.scheme_str() == Some("https"), None).map_err(anyhow::Error::msg)?;
    let req = hyper::Request::get(uri)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "switchboard")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let body = tokio::time::timeout(timeout, async {
        let resp = http.request(req).await?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "{url}: status {status}");
        let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        Ok(body.to_bytes())
    })
    .await
    .with_context(|| format!("{url}: timed out"))??;
    serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
}
