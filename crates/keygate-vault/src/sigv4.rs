//! AWS Signature Version 4 (header form), for Bedrock calls: the signature of the exact
//! request that goes on the wire (method, path and query as sent, the headers keygate
//! chooses to sign, the SHA-256 of the final body bytes).
//!
//! Follows AWS's "Create a canonical request" rules for services other than S3: the
//! canonical URI is the path *as sent* URI-encoded once more, segment by segment (so a
//! Bedrock model id `…-v1:0`, sent as `…-v1%3A0`, is canonicalised as `…-v1%253A0`);
//! the canonical query has names and values decoded, encoded again with the unreserved
//! set, and sorted by name then value; header values are trimmed with inner runs of
//! spaces collapsed. Tested against AWS's published SigV4 test suite
//! (`tests/fixtures/aws-sig-v4-test-suite/`).
//!
//! Only what keygate signs is signed: `host`, `x-amz-date`, `content-type` when sent,
//! `x-amz-content-sha256` when asked for and `x-amz-security-token` with temporary
//! credentials. A caller's own headers are never part of a signature.
//!
//! The secret access key and every key derived from it live in zeroized buffers.

use crate::secret::{hmac_sha256, sha256};
use zeroize::Zeroizing;

/// `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The credential a request is signed with.
#[derive(Clone, Copy)]
pub struct AwsKey<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    /// STS temporary credentials carry one; it is sent as `x-amz-security-token` and signed.
    pub session_token: Option<&'a str>,
}

impl std::fmt::Debug for AwsKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKey").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// The request to sign, as it will be sent.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `host` or `host:port`, exactly as the `Host` header will carry it.
    pub host: &'a str,
    /// The path as sent (already percent-encoded where it needs to be), with its leading `/`.
    pub path: &'a str,
    /// The query as sent, without `?`; empty for none.
    pub query: &'a str,
    /// The `Content-Type` sent, signed when present.
    pub content_type: Option<&'a str>,
    /// The body exactly as sent.
    pub body: &'a [u8],
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    /// Also send and sign `x-amz-content-sha256` (S3 needs it; other services accept it).
    pub content_sha256_header: bool,
}

/// Where a signature is valid: region and service.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// What signing produced: the headers to add to the request (lower-case names), and the
/// canonical request (for tests and diagnosis; it holds no secret).
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: Vec<(&'static str, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
}

impl Signed {
    /// The `Authorization` header's value.
    pub fn authorization(&self) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == "authorization").map(|(_, v)| v.as_str())
    }
}

/// Signs `request` with `key` for `scope`.
pub fn sign(key: &AwsKey<'_>, scope: &Scope<'_>, request: &Request<'_>) -> Signed {
    let payload_hash = hex::encode(sha256(request.body));
    let mut signed_headers: Vec<(&'static str, String)> = vec![("host", request.host.to_owned())];
    if let Some(ct) = request.content_type {
        signed_headers.push(("content-type", ct.to_owned()));
    }
    signed_headers.push(("x-amz-date", request.amz_date.to_owned()));
    if request.content_sha256_header {
        signed_headers.push(("x-amz-content-sha256", payload_hash.clone()));
    }
    if let Some(token) = key.session_token {
        signed_headers.push(("x-amz-security-token", token.to_owned()));
    }
    signed_headers.sort_by(|a, b| a.0.cmp(b.0));
    let names: Vec<&str> = signed_headers.iter().map(|(n, _)| *n).collect();
    let names = names.join(";");
    let canonical_headers: String =
        signed_headers.iter().map(|(n, v)| format!("{n}:{}\n", canonical_header_value(v))).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{names}\n{payload_hash}",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query),
    );
    let date = request.amz_date.get(..8).unwrap_or(request.amz_date);
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{credential_scope}\n{}",
        request.amz_date,
        hex::encode(sha256(canonical_request.as_bytes()))
    );
    let signing_key = signing_key(key.secret_access_key, date, scope);
    let signature = hex::encode(hmac_sha256(signing_key.as_ref(), string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{credential_scope}, SignedHeaders={names}, Signature={signature}",
        key.access_key_id
    );
    let mut headers: Vec<(&'static str, String)> =
        signed_headers.into_iter().filter(|(n, _)| !matches!(*n, "host" | "content-type")).collect();
    headers.push(("authorization", authorization));
    Signed { headers, canonical_request, string_to_sign, signature }
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
fn signing_key(secret: &str, date: &str, scope: &Scope<'_>) -> Zeroizing<[u8; 32]> {
    let mut seed = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.as_bytes());
    let k_date = Zeroizing::new(hmac_sha256(&seed, date.as_bytes()));
    let k_region = Zeroizing::new(hmac_sha256(k_date.as_ref(), scope.region.as_bytes()));
    let k_service = Zeroizing::new(hmac_sha256(k_region.as_ref(), scope.service.as_bytes()));
    Zeroizing::new(hmac_sha256(k_service.as_ref(), b"aws4_request"))
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - _ . ~`) as `%XX`, upper-case hex.
pub fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path as sent, each segment URI-encoded once more (`/` kept); `/` for an empty path.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/').map(|segment| uri_encode(segment.as_bytes())).collect::<Vec<_>>().join("/")
}

/// The query's pairs decoded, encoded with the unreserved set, sorted by name then value.
pub fn canonical_query(query: &str) -> String {
    let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.as_bytes().to_vec());
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k)), uri_encode(&decode(v)))
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A header value trimmed, with inner runs of spaces collapsed to one.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credential, scope and time every vector of AWS's SigV4 test suite uses.
    const SUITE_KEY: AwsKey<'static> = AwsKey {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };
    const SUITE_SCOPE: Scope<'static> = Scope { region: "us-east-1", service: "service" };

    /// One vector: its `.req` (the request, as the suite writes it: request line, then
    /// `Name:value` headers, then a blank line and the body) and its `.authz`.
    fn vector(req: &str, authz: &str) {
        let (head, body) = req.split_once("\n\n").unwrap_or((req, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.splitn(2, ' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default().trim_end_matches(" HTTP/1.1");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.to_owned())
            })
        };
        let token = header("x-amz-security-token");
        let key = AwsKey { session_token: token.as_deref(), ..SUITE_KEY };
        let host = header("host").unwrap_or_default();
        let content_type = header("content-type");
        let date = header("x-amz-date").unwrap_or_default();
        let request = Request {
            method,
            host: &host,
            path,
            query,
            content_type: content_type.as_deref(),
            body: body.as_bytes(),
            amz_date: &date,
            content_sha256_header: false,
        };
        let signed = sign(&key, &SUITE_SCOPE, &request);
        assert_eq!(signed.authorization(), Some(authz.trim()), "{request_line}\n{}", signed.canonical_request);
    }

    macro_rules! suite {
        ($($test:ident => $name:literal),* $(,)?) => {$(
            #[test]
            fn $test() {
                vector(
                    include_str!(concat!("../tests/fixtures/aws-sig-v4-test-suite/", $name, "/", $name, ".req")),
                    include_str!(concat!("../tests/fixtures/aws-sig-v4-test-suite/", $name, "/", $name, ".authz")),
                );
            }
        )*};
    }

    suite! {
        get_vanilla => "get-vanilla",
        post_vanilla => "post-vanilla",
        get_vanilla_query_order_key => "get-vanilla-query-order-key",
        get_vanilla_query_order_key_case => "get-vanilla-query-order-key-case",
        post_x_www_form_urlencoded => "post-x-www-form-urlencoded",
        post_sts_header_before => "post-sts-header-before",
        get_utf8 => "get-utf8",
        get_space => "get-space",
    }

    #[test]
    fn the_suites_intermediate_values_match_too() {
        // get-vanilla-query-order-key.creq and .sts.
        let request = Request {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: "Param1=value2&Param1=Value1",
            content_type: None,
            body: b"",
            amz_date: "20150830T123600Z",
            content_sha256_header: false,
        };
        let signed = sign(&SUITE_KEY, &SUITE_SCOPE, &request);
        assert_eq!(
            signed.canonical_request,
            "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            signed.string_to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89"
        );
    }

    #[test]
    fn a_bedrock_model_id_is_encoded_once_more_in_the_canonical_uri() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=%7E&a=1&c"), "a=1&a=~&b=2&c=");
    }

    #[test]
    fn only_keygates_headers_are_signed_and_the_body_hash_is_of_the_bytes_sent() {
        let key = AwsKey { session_token: Some("tok"), ..SUITE_KEY };
        let request = Request {
            method: "POST",
            host: "127.0.0.1:9999",
            path: "/model/m%3A0/converse",
            query: "",
            content_type: Some("application/json"),
            body: b"{}",
            amz_date: "20260101T000000Z",
            content_sha256_header: true,
        };
        let signed = sign(&key, &Scope { region: "eu-west-1", service: "bedrock" }, &request);
        let auth = signed.authorization().unwrap_or_default();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/eu-west-1/bedrock/aws4_request, "));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
        let names: Vec<&str> = signed.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["x-amz-content-sha256", "x-amz-date", "x-amz-security-token", "authorization"]);
        assert!(signed.canonical_request.ends_with(&hex::encode(sha256(b"{}"))));
        assert!(!format!("{signed:?}{key:?}").contains(SUITE_KEY.secret_access_key));
        let other =
            sign(&key, &Scope { region: "eu-west-1", service: "bedrock" }, &Request { body: b"{ }", ..request });
        assert_ne!(other.signature, signed.signature);
    }
}
