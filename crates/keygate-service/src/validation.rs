//! Live validation: one cheap authenticated call to the provider. A 401/403 (or what
//! the catalog lists for the provider) means the key is invalid; a timeout, a 5xx, a 429
//! or a network error means "could not tell": unverified, never invalid. Each outcome
//! carries a detail that tells the user what to do. Response bodies are never quoted
//! (some providers echo the key in them), except the one short message field a catalog
//! entry names (`probe.invalid_message`), scrubbed of the key and of anything key-shaped.

use keygate_core::catalog::{CredentialKind, Injection, Provider};
use keygate_core::Validity;
use keygate_vault::SecretText;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use std::collections::BTreeMap;

/// The longest provider message a verdict quotes.
const MAX_MESSAGE_CHARS: usize = 200;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub validity: Validity,
    pub detail: String,
}

impl Outcome {
    fn valid(provider: &Provider) -> Self {
        Self { validity: Validity::Valid, detail: format!("{} accepted the key", provider.name) }
    }

    fn invalid(provider: &Provider, status: u16) -> Self {
        let fresh = provider.key_url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default();
        Self {
            validity: Validity::Invalid,
            detail: format!(
                "{} rejected the key (HTTP {status}): it may have been rotated or revoked, copied incompletely, \
                 or lack API access. Generate a fresh key{fresh} and replace this one.",
                provider.name
            ),
        }
    }

    fn unverified(detail: String) -> Self {
        Self { validity: Validity::Unverified, detail }
    }
}

/// A refusal's detail with the provider's own message quoted (`GitHub rejected the key
/// (HTTP 401: Bad credentials)`), scrubbed of every form of `key` and of anything
/// key-shaped, and cut short.
fn quoted(mut outcome: Outcome, message: &str, key: &str) -> Outcome {
    let scrubbed = match keygate_vault::echo::EchoScrubber::new(&[key]) {
        Some(echo) => String::from_utf8_lossy(&echo.scrub(message.as_bytes())).into_owned(),
        None => message.to_owned(),
    };
    let scrubbed = keygate_vault::redact::scrub(&scrubbed).into_owned();
    let mut short: String = scrubbed.chars().filter(|c| !c.is_control()).take(MAX_MESSAGE_CHARS).collect();
    if short.trim().is_empty() {
        return outcome;
    }
    if scrubbed.chars().count() > MAX_MESSAGE_CHARS {
        short.push('…');
    }
    outcome.detail = outcome.detail.replacen("):", &format!(": {}):", short.trim()), 1);
    outcome
}

/// The string at `pointer` in a JSON answer, if it has one (at most 64 KiB are read).
async fn provider_message(response: reqwest::Response, pointer: &str) -> Option<String> {
    let mut response = response;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 << 10 {
            return None;
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value.pointer(pointer)?.as_str().map(str::to_owned)
}

/// The fields of a stored credential: one `api_key`, or a JSON object of named fields.
pub fn fields(provider: &Provider, secret: &SecretText) -> Option<BTreeMap<String, SecretText>> {
    match provider.credential {
        CredentialKind::ApiKey => Some(BTreeMap::from([("api_key".to_owned(), secret.clone())])),
        _ => {
            let map: BTreeMap<String, String> = serde_json::from_str(secret.expose()).ok()?;
            Some(map.into_iter().map(|(k, v)| (k, SecretText::new(v))).collect())
        }
    }
}

/// Probes `provider` with `secret` (a plain key, or the JSON of a multi-field credential).
pub async fn probe(http: &reqwest::Client, provider: &Provider, secret: &SecretText) -> Outcome {
    let Some(fields) = fields(provider, secret) else {
        return Outcome::unverified("the stored credential could not be read as its provider's fields".into());
    };
    let field = |name: &str| fields.get(name).map(|s| s.expose().to_owned()).unwrap_or_default();
    match &provider.inject {
        Injection::Sigv4 { name } => sigv4_probe(http, provider, name, secret).await,
        Injection::Oauth2 { token_path } => {
            let url = format!("{}{token_path}", provider.base_url);
            let form = [
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", field("client_id")),
                ("client_secret", field("client_secret")),
            ];
            let result = http.post(&url).form(&form).send().await;
            judge(provider, result, &[400, 401, 403], None, &field("client_secret")).await
        }
        injection => {
            let Some(probe) = &provider.probe else {
                return Outcome::unverified(format!(
                    "{} has no validation call; the key was checked for format only",
                    provider.name
                ));
            };
            let key = field("api_key");
            let url = format!("{}{}", provider.base_url, probe.path);
            let method = reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap_or(reqwest::Method::GET);
            let mut request = http.request(method, &url);
            for (name, value) in &provider.headers {
                request = request.header(name, value);
            }
            request = match injection {
                Injection::Bearer => request.header(AUTHORIZATION, sensitive(&format!("Bearer {key}"))),
                Injection::Header { name } => match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(name) => request.header(name, sensitive(&key)),
                    Err(_) => {
                        return Outcome::unverified(format!(
                            "the catalog's header name for {} is invalid",
                            provider.name
                        ))
                    }
                },
                Injection::Query { name } => request.query(&[(name.as_str(), key.as_str())]),
                // reqwest marks the header it builds sensitive.
                Injection::Basic { username } => request.basic_auth(username, Some(&key)),
                Injection::Oauth2 { .. } | Injection::Sigv4 { .. } => request,
            };
            if let Some(body) = &probe.body {
                request = request.header("content-type", "application/json").body(body.clone());
            }
            judge(provider, request.send().await, &probe.invalid_status, probe.invalid_body.as_deref(), &key).await
        }
    }
}

/// A signed AWS probe (Bedrock: a one-token Converse, see `providers.toml`). A 403 means
/// the signature or the key was refused, except `AccessDeniedException`: AWS
/// authenticated the key, but its IAM identity may not call the probe's model.
async fn sigv4_probe(http: &reqwest::Client, provider: &Provider, service: &str, secret: &SecretText) -> Outcome {
    let Some(aws) = crate::aws::AwsCredential::of(provider, secret) else {
        return Outcome::unverified("the stored credential could not be read as its provider's fields".into());
    };
    let Some(probe) = &provider.probe else {
        return Outcome::unverified(format!(
            "{} has no validation call; the key was checked for format only",
            provider.name
        ));
    };
    let Ok(mut url) = reqwest::Url::parse(&format!("{}{}", provider.base_url, probe.path)) else {
        return Outcome::unverified(format!("the catalog's validation call for {} is not a URL", provider.name));
    };
    crate::aws::regional(&mut url, aws.region.expose());
    let body = probe.body.clone().unwrap_or_default();
    let mut headers = reqwest::header::HeaderMap::new();
    if !body.is_empty() {
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    crate::aws::sign(&aws, service, &probe.method, &url, &mut headers, body.as_bytes());
    let method = reqwest::Method::from_bytes(probe.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let result = http.request(method, url).headers(headers).body(body).send().await;
    if let Ok(response) = &result {
        let error_type = response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()).unwrap_or("");
        if response.status().as_u16() == 403 && error_type.starts_with("AccessDeniedException") {
            return Outcome::unverified(format!(
                "{} accepted the credentials, but their IAM identity may not call the model keygate checks with \
                 ({}): grant it bedrock:InvokeModel and model access if calls fail",
                provider.name, probe.path
            ));
        }
    }
    judge(provider, result, &probe.invalid_status, probe.invalid_body.as_deref(), aws.secret_access_key.expose()).await
}

/// A header value the HTTP stack will never log or print.
fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

async fn judge(
    provider: &Provider,
    result: Result<reqwest::Response, reqwest::Error>,
    invalid_status: &[u16],
    invalid_body: Option<&str>,
    key: &str,
) -> Outcome {
    let response = match result {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Outcome::unverified(format!(
                "{} did not answer in time; the key is saved but not verified. Test it again later.",
                provider.name
            ))
        }
        Err(e) => {
            let why = if e.is_connect() { "could not connect" } else { "the request failed" };
            return Outcome::unverified(format!(
                "{why} to {}; the key is saved but not verified. If several keys fail at once, the problem is on the \
                 provider's or the platform's side, not your key.",
                provider.name
            ));
        }
    };
    let status = response.status().as_u16();
    if invalid_status.contains(&status) {
        let outcome = Outcome::invalid(provider, status);
        let pointer = provider.probe.as_ref().and_then(|p| p.invalid_message.as_deref());
        return match pointer {
            Some(pointer) => match provider_message(response, pointer).await {
                Some(message) => quoted(outcome, &message, key),
                None => outcome,
            },
            None => outcome,
        };
    }
    if response.status().is_success() {
        if let Some(marker) = invalid_body {
            match response.text().await {
                Ok(body) if body.contains(marker) => return Outcome::invalid(provider, status),
                Ok(_) => {}
                Err(_) => {
                    return Outcome::unverified(format!(
                        "{}'s answer could not be read; test the key again",
                        provider.name
                    ))
                }
            }
        }
        return Outcome::valid(provider);
    }
    let kind = match status {
        429 => "is rate limiting the check".to_owned(),
        500..=599 => format!("answered HTTP {status}, a problem on its side"),
        _ => format!("answered HTTP {status}, which does not say whether the key is valid"),
    };
    Outcome::unverified(format!("{} {kind}; the key is saved but not verified. Test it again later.", provider.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Outcome {
        let provider = keygate_core::catalog::Catalog::builtin().unwrap().get("github").unwrap().clone();
        Outcome::invalid(&provider, 401)
    }

    #[test]
    fn a_providers_message_is_quoted_without_the_key() {
        let key = "github_pat_11CANARY0123456789abcdefghijklmnopqrstuvwxyz";
        let plain = quoted_detail("Bad credentials", key);
        assert!(plain.starts_with("GitHub rejected the key (HTTP 401: Bad credentials): "), "{plain}");
        let echoed = quoted_detail(&format!("token {key} is revoked"), key);
        assert!(!echoed.contains("CANARY") && echoed.contains("[REDACTED]"), "{echoed}");
        let shape = quoted_detail("someone else's ghp_CANARYabcdefghijklmnopqrstuvwxyz0123 too", key);
        assert!(!shape.contains("CANARY"), "any key shape goes: {shape}");
        let long = quoted_detail(&"x".repeat(1000), key);
        assert!(long.contains(&format!("{}…", "x".repeat(MAX_MESSAGE_CHARS))) && !long.contains(&"x".repeat(201)));
        assert_eq!(quoted(refused(), " \n", key).detail, refused().detail, "nothing to quote");
    }

    fn quoted_detail(message: &str, key: &str) -> String {
        quoted(refused(), message, key).detail
    }
}
