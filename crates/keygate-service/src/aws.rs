//! AWS credentials on their way out: a stored Bedrock credential
//! (`{"access_key_id", "secret_access_key", "region", "session_token"?}`) read for one
//! call, the URL pointed at the credential's region, and the request signed with SigV4
//! ([`keygate_vault::sigv4`]) over exactly the path, query and body that are sent.
//!
//! Used by the proxy (passthrough) and by validation (the probe), so both sign alike.

use keygate_core::catalog::{Injection, Provider};
use keygate_vault::sigv4::{self, AwsKey, Scope};
use keygate_vault::SecretText;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};

/// The fields of one AWS credential, opened for one call (zeroized when dropped).
#[derive(Debug)]
pub struct AwsCredential {
    pub access_key_id: SecretText,
    pub secret_access_key: SecretText,
    pub region: SecretText,
    pub session_token: Option<SecretText>,
}

impl AwsCredential {
    /// Reads the stored JSON of an AWS credential; `None` when a field is missing.
    pub fn of(provider: &Provider, secret: &SecretText) -> Option<Self> {
        let mut fields = crate::validation::fields(provider, secret)?;
        Some(Self {
            access_key_id: fields.remove("access_key_id")?,
            secret_access_key: fields.remove("secret_access_key")?,
            region: fields.remove("region")?,
            session_token: fields.remove("session_token").filter(|t| !t.expose().is_empty()),
        })
    }

    /// What an answer must be scrubbed of: the secret key (never sent) and the session
    /// token (sent, and signed). The access key id is not a secret: AWS puts it in the
    /// signature's `Credential=` for anyone on the path to read.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out = vec![self.secret_access_key.expose()];
        out.extend(self.session_token.as_ref().map(SecretText::expose));
        out
    }
}

/// The service a SigV4 provider signs for (`bedrock`).
pub fn service(provider: &Provider) -> Option<&str> {
    match &provider.inject {
        Injection::Sigv4 { name } => Some(name),
        _ => None,
    }
}

/// Points an AWS endpoint (`bedrock-runtime.us-east-1.amazonaws.com`) at the
/// credential's region; any other host (an overridden base URL: a proxy, a VPC
/// endpoint, the mock) is left as configured. The region was checked to be
/// `[a-z0-9-]` when the key was stored.
pub fn regional(url: &mut reqwest::Url, region: &str) {
    let Some(host) = url.host_str() else { return };
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() == 4 && host.ends_with(".amazonaws.com") && labels[1] != region {
        let valid =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            let regional = format!("{}.{region}.amazonaws.com", labels[0]);
            let _ = url.set_host(Some(&regional));
        }
    }
}

/// A decoded path (`model/anthropic.claude-3-haiku-20240307-v1:0/converse`) as AWS's
/// SDKs send it: each segment percent-encoded with the unreserved set, so a model id's
/// `:` goes out as `%3A`.
pub fn encode_path(decoded: &str) -> String {
    decoded.split('/').map(|s| sigv4::uri_encode(s.as_bytes())).collect::<Vec<_>>().join("/")
}

/// The `Host` header reqwest will send for `url` (`host`, or `host:port` off the default port).
fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// Signs a request to `url` with `method` and exactly `body`, adding `Host`, `X-Amz-Date`,
/// `X-Amz-Content-Sha256`, `X-Amz-Security-Token` (temporary credentials) and
/// `Authorization` to `headers`. Of the headers already there only `Content-Type` is
/// signed; the caller's other headers ride along unsigned, as AWS allows.
pub fn sign(
    credential: &AwsCredential,
    service: &str,
    method: &str,
    url: &reqwest::Url,
    headers: &mut HeaderMap,
    body: &[u8],
) {
    let host = host_header(url);
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = sigv4::Request {
        method,
        host: &host,
        path: url.path(),
        query: url.query().unwrap_or(""),
        content_type: content_type.as_deref(),
        body,
        amz_date: &amz_date,
        content_sha256_header: true,
    };
    let key = AwsKey {
        access_key_id: credential.access_key_id.expose(),
        secret_access_key: credential.secret_access_key.expose(),
        session_token: credential.session_token.as_ref().map(SecretText::expose),
    };
    let signed = sigv4::sign(&key, &Scope { region: credential.region.expose(), service }, &request);
    if let Ok(host) = HeaderValue::from_str(&host) {
        headers.insert(HOST, host);
    }
    for (name, value) in signed.headers {
        if let Ok(mut value) = HeaderValue::from_str(&value) {
            value.set_sensitive(matches!(name, "authorization" | "x-amz-security-token"));
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_hosts_follow_the_credentials_region_and_overrides_stay() {
        let mut url = reqwest::Url::parse("https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse").unwrap();
        regional(&mut url, "eu-west-3");
        assert_eq!(url.as_str(), "https://bedrock-runtime.eu-west-3.amazonaws.com/model/x/converse");
        let mut mock = reqwest::Url::parse("http://127.0.0.1:9999/model/x/converse").unwrap();
        regional(&mut mock, "eu-west-3");
        assert_eq!(mock.as_str(), "http://127.0.0.1:9999/model/x/converse");
        let mut odd = reqwest::Url::parse("https://bedrock-runtime.us-east-1.amazonaws.com/").unwrap();
        regional(&mut odd, "evil.com/");
        assert_eq!(odd.host_str(), Some("bedrock-runtime.us-east-1.amazonaws.com"));
        assert_eq!(host_header(&mock), "127.0.0.1:9999");
    }

    #[test]
    fn model_ids_go_out_encoded_as_the_sdks_send_them() {
        assert_eq!(
            encode_path("model/anthropic.claude-3-haiku-20240307-v1:0/converse"),
            "model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(encode_path("model/arn:aws:bedrock:x/invoke"), "model/arn%3Aaws%3Abedrock%3Ax/invoke");
    }
}
