//! What every HTTP adapter shares: one client, the mapping of upstream answers to
//! [`ProviderError`]s (which ones are worth retrying), and fetching output files.

use base64::Engine;
use reqwest::{RequestBuilder, Response, StatusCode};
use runbase_domain::provider::ProviderError;
use serde_json::Value;
use std::time::Duration;

/// The largest output file Runbase copies from a provider.
pub const MAX_FILE_BYTES: usize = 512 << 20;

/// Longest upstream error text quoted in a run's `error`.
const MAX_QUOTED: usize = 500;

/// The HTTP client all adapters share (connection pools per host, timeouts).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("runbase/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends a request to `provider` and returns the JSON body of a 2xx answer. Connection
/// failures, 408, 429 and 5xx are transient; other statuses are final, with the upstream's own
/// message when it gave one.
pub async fn send_json(provider: &str, req: RequestBuilder) -> Result<Value, ProviderError> {
    let resp = send(provider, req).await?;
    read_json(provider, resp).await
}

/// Sends a request; any non-2xx status becomes an error as [`send_json`] describes.
pub async fn send(provider: &str, req: RequestBuilder) -> Result<Response, ProviderError> {
    let resp = req.send().await.map_err(|e| transport_error(provider, e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(&resp);
    let body = resp.bytes().await.unwrap_or_default();
    Err(status_error(provider, status, &body).with_retry_after(retry_after))
}

/// Reads a JSON body; anything else is the upstream's garbage.
pub async fn read_json(provider: &str, resp: Response) -> Result<Value, ProviderError> {
    let body = resp
        .bytes()
        .await
        .map_err(|e| transport_error(provider, e))?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::garbage(provider, format!("the body is not JSON ({e})")))
}

/// A failure to talk to the provider at all (never quotes the URL: it may carry a secret).
pub fn transport_error(provider: &str, e: reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "the request timed out"
    } else if e.is_connect() {
        "the connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response was cut off"
    } else {
        "the request failed"
    };
    ProviderError::transient(
        "upstream_unavailable",
        format!("Could not reach {provider}: {what}"),
    )
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// The error for a non-2xx answer.
pub fn status_error(provider: &str, status: StatusCode, body: &[u8]) -> ProviderError {
    let detail = upstream_message(body)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let code = status.as_u16();
    match code {
        429 => ProviderError::transient(
            "upstream_rate_limited",
            format!("{provider} is rate limiting requests (429){detail}"),
        ),
        408 | 500..=599 => ProviderError::transient(
            "upstream_error",
            format!("{provider} failed with status {code}{detail}"),
        ),
        401 | 403 => ProviderError::new(
            "upstream_auth",
            format!(
                "{provider} refused Runbase's credentials (status {code}); the operator must check them"
            ),
        ),
        _ => ProviderError::new(
            "upstream_rejected",
            format!("{provider} rejected the request (status {code}){detail}"),
        ),
    }
}

/// The human-readable message in a provider's error body, in the shapes the supported APIs use:
/// `{"error":{"message"}}` (OpenAI, Gemini), `{"detail": "..."}` or `{"detail":[{"msg"}]}`
/// (Replicate, fal), `{"title"}`, `{"message"}`, `{"error": "..."}`.
pub fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .or_else(|| v.get("error").and_then(Value::as_str))
        .or_else(|| v.get("detail").and_then(Value::as_str))
        .or_else(|| v.pointer("/detail/0/msg").and_then(Value::as_str))
        .or_else(|| v.get("title").and_then(Value::as_str))
        .or_else(|| v.get("message").and_then(Value::as_str))?;
    Some(truncate(text))
}

/// Cuts an upstream text to a length fit for a run's `error`.
pub fn truncate(text: &str) -> String {
    let text = text.trim();
    if text.len() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A downloaded file.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// Fetches an output file: a `data:` URI is decoded, an `http(s)` URL downloaded (without any
/// credentials) up to [`MAX_FILE_BYTES`].
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<Fetched, ProviderError> {
    if let Some(rest) = url.strip_prefix("data:") {
        return decode_data_uri(rest);
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ProviderError::new(
            "upstream_bad_response",
            "an output file has an unsupported URL scheme",
        ));
    }
    let mut resp = send("the file host", client.get(url)).await?;
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_FILE_BYTES as u64)
    {
        return Err(too_large());
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match read_capped(&mut resp, MAX_FILE_BYTES).await {
        Ok(b) => b,
        Err(Capped::TooLarge) => return Err(too_large()),
        Err(Capped::Read(e)) => return Err(transport_error("the file host", e)),
    };
    Ok(Fetched {
        bytes,
        content_type,
    })
}

/// Fetches a URL a *user* supplied (a reference image), which the server must not be tricked
/// into using against its own network: only `http(s)`, only hosts whose every address is
/// public (no loopback, private, link-local, carrier-grade NAT or metadata addresses), the
/// connection pinned to the checked address (no DNS rebinding), no redirects, at most
/// `max_bytes`, 30 s in all. The host's answer is never quoted back.
pub async fn fetch_user_url(url: &str, max_bytes: usize) -> Result<Fetched, String> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "not a valid URL".to_owned())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https URLs can be fetched".into());
    }
    let host = parsed
        .host_str()
        .ok_or("the URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| "the host could not be resolved".to_owned())?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
        return Err("the host is not on the public internet".into());
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .resolve(&host, addrs[0])
        .build()
        .map_err(|_| "the request could not be prepared".to_owned())?;
    let mut resp = client
        .get(parsed)
        .send()
        .await
        .map_err(|_| "the host could not be reached".to_owned())?;
    if !resp.status().is_success() {
        return Err(format!(
            "the host answered status {}",
            resp.status().as_u16()
        ));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_capped(&mut resp, max_bytes)
        .await
        .map_err(|e| match e {
            Capped::TooLarge => format!("the file is larger than {} MB", max_bytes >> 20),
            Capped::Read(_) => "the download was cut off".to_owned(),
        })?;
    Ok(Fetched {
        bytes,
        content_type,
    })
}

enum Capped {
    TooLarge,
    Read(reqwest::Error),
}

/// A response body, read up to `max` bytes.
async fn read_capped(resp: &mut Response, max: usize) -> Result<Vec<u8>, Capped> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Read)? {
        if bytes.len() + chunk.len() > max {
            return Err(Capped::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Whether an address is on the public internet.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let v4_at = |i: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[i] >> 8) as u8,
                    s[i] as u8,
                    (s[i + 1] >> 8) as u8,
                    s[i + 1] as u8,
                ))
            };
            // Addresses that carry an IPv4 address a gateway may route to: IPv4-compatible
            // (::a.b.c.d, deprecated), NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) and
            // 6to4 (2002::/16). They are public only when the IPv4 address is.
            if s[..6] == [0; 6] {
                return is_public(v4_at(6));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
            {
                return is_public(v4_at(6));
            }
            if s[0] == 0x2002 {
                return is_public(v4_at(1));
            }
            let first = s[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // Site-local (deprecated, still routed inside some networks).
                || (first & 0xffc0) == 0xfec0
                // Teredo (2001::/32) tunnels to an IPv4 address; documentation (2001:db8::/32).
                || first == 0x2001 && (s[1] == 0 || s[1] == 0x0db8))
        }
    }
}

fn too_large() -> ProviderError {
    ProviderError::new(
        "output_too_large",
        format!("an output file is larger than {} MiB", MAX_FILE_BYTES >> 20),
    )
}

/// `mediatype;base64,DATA` (the part after `data:`).
fn decode_data_uri(rest: &str) -> Result<Fetched, ProviderError> {
    let bad = || ProviderError::garbage("the provider", "a malformed data: URI");
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let mut parts = meta.split(';');
    let media = parts.next().unwrap_or("").trim();
    let is_base64 = parts.any(|p| p.trim() == "base64");
    let bytes = if is_base64 {
        decode_base64(data).ok_or_else(bad)?
    } else {
        percent_decode(data)
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(Fetched {
        bytes,
        content_type: (!media.is_empty()).then(|| media.to_owned()),
    })
}

/// Standard or URL-safe base64, padded or not.
pub fn decode_base64(data: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let data = data.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(data).ok())
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A file name for the `n`th output of a run, from the URL's extension or the content type.
pub fn file_name(n: usize, url: Option<&str>, content_type: Option<&str>) -> String {
    let from_url = url
        .filter(|u| !u.starts_with("data:"))
        .and_then(|u| u.split(['?', '#']).next())
        .and_then(|u| u.rsplit('/').next())
        .and_then(|last| {
            last.rsplit_once('.')
                .map(|(_, ext)| ext.to_ascii_lowercase())
        })
        .filter(|ext| {
            (1..=5).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let ext = from_url.unwrap_or_else(|| extension_for(content_type.unwrap_or("")).to_owned());
    format!("output-{n}.{ext}")
}

/// The usual extension for a content type.
pub fn extension_for(content_type: &str) -> &'static str {
    match content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" => "mp3",
        "text/plain" => "txt",
        "application/json" => "json",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn internal_ipv6_forms_are_not_public() {
        for a in [
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fec0::1",
            "2001::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "fd00::1",
        ] {
            assert!(!super::is_public(a.parse().unwrap()), "{a}");
        }
        for a in [
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "1.1.1.1",
        ] {
            assert!(super::is_public(a.parse().unwrap()), "{a}");
        }
    }

    use super::*;

    #[test]
    fn error_bodies_of_every_supported_shape_are_quoted() {
        for (body, want) in [
            (
                r#"{"error":{"message":"bad size","type":"invalid_request_error"}}"#,
                "bad size",
            ),
            (
                r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
                "quota",
            ),
            (r#"{"detail":"Invalid version"}"#, "Invalid version"),
            (
                r#"{"detail":[{"loc":["body","prompt"],"msg":"field required"}]}"#,
                "field required",
            ),
            (
                r#"{"title":"Unauthenticated","status":401}"#,
                "Unauthenticated",
            ),
        ] {
            assert_eq!(upstream_message(body.as_bytes()).as_deref(), Some(want));
        }
        assert_eq!(upstream_message(b"<html>oops</html>"), None);
    }

    #[test]
    fn statuses_map_to_retryable_or_final_errors() {
        assert!(status_error("x", StatusCode::TOO_MANY_REQUESTS, b"").is_retryable());
        assert!(status_error("x", StatusCode::BAD_GATEWAY, b"").is_retryable());
        assert!(!status_error("x", StatusCode::BAD_REQUEST, b"").is_retryable());
        let e = status_error("x", StatusCode::UNAUTHORIZED, b"{\"detail\":\"sk-secret\"}");
        assert!(!e.message.contains("sk-secret"), "{}", e.message);
    }

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn user_urls_to_this_machine_are_refused() {
        let e = fetch_user_url("http://127.0.0.1:9/x.png", 1 << 20)
            .await
            .unwrap_err();
        assert!(e.contains("not on the public internet"), "{e}");
        let e = fetch_user_url("http://localhost/x.png", 1 << 20)
            .await
            .unwrap_err();
        assert!(e.contains("not on the public internet"), "{e}");
        assert!(fetch_user_url("file:///etc/passwd", 1 << 20).await.is_err());
    }

    #[test]
    fn data_uris_decode() {
        let f = decode_data_uri("image/png;base64,iVBORw==").unwrap();
        assert_eq!(f.bytes, [0x89, b'P', b'N', b'G']);
        assert_eq!(f.content_type.as_deref(), Some("image/png"));
        assert_eq!(decode_data_uri("text/plain,a%20b").unwrap().bytes, b"a b");
        assert!(decode_data_uri("image/png;base64,***").is_err());
    }

    #[test]
    fn file_names_take_the_extension_from_the_url_or_the_type() {
        assert_eq!(
            file_name(0, Some("https://x/y/out.webp?sig=1"), None),
            "output-0.webp"
        );
        assert_eq!(
            file_name(2, Some("data:image/png;base64,AA"), Some("image/png")),
            "output-2.png"
        );
        assert_eq!(file_name(1, None, Some("video/mp4")), "output-1.mp4");
        assert_eq!(file_name(1, Some("https://x/noext"), None), "output-1.bin");
    }
}
