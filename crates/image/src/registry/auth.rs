//! `WWW-Authenticate` challenges and the pieces of a token request.

/// What a registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// Parses a `WWW-Authenticate` value. Several challenges may share one header; Bearer is preferred over Basic.
/// Unknown schemes (Negotiate, Digest, ...) are ignored.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut found = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let scheme_end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = rest[..scheme_end].to_ascii_lowercase();
        rest = rest[scheme_end..].trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let (params, after) = parse_params(rest);
        rest = after;
        match scheme.as_str() {
            "bearer" => {
                let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                    found.push(Challenge::Bearer {
                        realm,
                        service: get("service"),
                    });
                }
            }
            "basic" => found.push(Challenge::Basic),
            _ => {}
        }
    }
    let bearer = found.iter().position(|c| matches!(c, Challenge::Bearer { .. }));
    match bearer {
        Some(i) => Some(found.swap_remove(i)),
        None => found.into_iter().next(),
    }
}

/// Reads `name=value` / `name="quoted value"` pairs up to the start of the next challenge (a bare token not
/// followed by `=`). Returns the pairs (names lowercased) and the remaining input.
fn parse_params(mut input: &str) -> (Vec<(String, String)>, &str) {
    let mut params = Vec::new();
    loop {
        input = input.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let name_end = input
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(input.len());
        if name_end == 0 || !input[name_end..].trim_start().starts_with('=') {
            return (params, input);
        }
        let name = input[..name_end].to_ascii_lowercase();
        input = input[name_end..].trim_start()[1..].trim_start();
        let value;
        if let Some(quoted) = input.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => out.push(c),
                }
            }
            value = out;
            input = &quoted[end.min(quoted.len())..];
        } else {
            let end = input
                .find(|c: char| c == ',' || c.is_whitespace())
                .unwrap_or(input.len());
            value = input[..end].to_string();
            input = &input[end..];
        }
        params.push((name, value));
    }
}

/// The token endpoint's URL: realm plus `service` and one `scope` parameter per scope.
pub(crate) fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(sep);
        url.push_str("service=");
        url.push_str(&query_escape(service));
        sep = '&';
    }
    for scope in scopes {
        url.push(sep);
        url.push_str("scope=");
        url.push_str(&query_escape(scope));
        sep = '&';
    }
    url
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token from a token endpoint's JSON answer (`token`, or OAuth2's `access_token`).
pub(crate) fn token_from_json(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the token endpoint sent invalid JSON: {e}"))?;
    answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| "the token endpoint's answer has no token".to_string())
}

/// `Authorization: Basic ...` for a user name and password.
pub(crate) fn basic_header(username: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
    }

    #[test]
    fn parses_basic_and_prefers_bearer() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        let both = parse_challenge(r#"Basic realm="x", Bearer realm="https://a/t", service=s"#);
        assert_eq!(
            both,
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = parse_challenge(r#"Bearer realm="https://h/t?a=1,b=\"2\"",service="svc""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: r#"https://h/t?a=1,b="2""#.into(),
                service: Some("svc".into())
            })
        );
    }

    #[test]
    fn builds_token_url_with_escaped_scopes() {
        let url = token_url(
            "https://auth/token",
            Some("reg service"),
            &[
                "repository:a/b:pull,push".to_string(),
                "repository:c:pull".to_string(),
            ],
        );
        assert_eq!(
            url,
            "https://auth/token?service=reg%20service&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull"
        );
    }

    #[test]
    fn token_json() {
        assert_eq!(
            token_from_json(br#"{"token":"abc","expires_in":60}"#).unwrap(),
            "abc"
        );
        assert_eq!(token_from_json(br#"{"access_token":"xyz"}"#).unwrap(), "xyz");
        assert!(token_from_json(b"<html>").is_err());
        assert!(token_from_json(b"{}").is_err());
    }

    #[test]
    fn basic() {
        assert_eq!(
            basic_header("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
