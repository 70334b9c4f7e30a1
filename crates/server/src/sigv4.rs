//! AWS Signature Version 4 (SigV4): signing requests and verifying them the way
//! an AWS service such as ECS does.
//!
//! [`sign`] adds `x-amz-date` and `authorization` to a request, [`presign`]
//! builds a presigned query string, and [`verify`] checks a request signed
//! either way and answers with the access key id or an [`AuthError`] whose
//! [`Display`](std::fmt::Display) text is the message AWS gives for the same
//! fault, so the HTTP edge can send `{"__type": code, "message": text}`.
//!
//! The canonical request follows the AWS rules for services other than S3, as
//! botocore (the signer of the AWS CLI and boto3) implements them:
//!
//! * the path has its `.`/`..` segments and repeated slashes removed and is then
//!   percent-encoded once more as received, so `%20` is signed as `%2520`;
//! * query parameters are percent-decoded, encoded again with the AWS rule
//!   (only `A-Z a-z 0-9 - _ . ~` stay as they are) and sorted by key then value.
//!   [`verify`] also accepts a signature over the parameters exactly as sent,
//!   which is what botocore signs when handed a URL it did not encode itself;
//! * header names are lowercased and sorted, values trimmed with inner runs of
//!   white space collapsed to one space, repeated headers joined with `,`;
//! * the payload hash is the hex SHA-256 of the body, or the value of the
//!   `x-amz-content-sha256` header when there is one.
//!
//! [`verify`] requires `host` among the signed headers, a credential scope
//! `DATE/REGION/SERVICE/aws4_request` naming the request date, the expected
//! region and service, and a request time within 15 minutes of now either way
//! (presigned: no later than 15 minutes ahead, and not past `X-Amz-Expires`).
//! Signatures are compared in constant time. Nothing here logs, and no error
//! text carries a secret key or a session token.
//!
//! # Limits
//!
//! * Only `AWS4-HMAC-SHA256`; no SigV4a, no S3 rules (single path encoding,
//!   `UNSIGNED-PAYLOAD`, chunked `STREAMING-*` payloads). An
//!   `x-amz-content-sha256` header must be the hash of the body actually
//!   received, else the request is refused.
//! * `x-amz-security-token` / `X-Amz-Security-Token` is accepted and signed
//!   like any other header or parameter, but is not checked against anything:
//!   berth has no temporary credentials.
//! * [`sign`] always uses `x-amz-date` (botocore switches to the `Date` header
//!   when the request already has one); [`verify`] accepts both.
//! * A query `+` is taken literally (RFC 3986), not as a space.

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, HOST};
use http::{Method, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The only signing algorithm supported.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request time may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(15);
/// The longest `X-Amz-Expires` a presigned request may ask for: one week.
pub const MAX_PRESIGN_EXPIRES: u32 = 604_800;

const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const DATE: &str = "date";

/// Headers [`sign`] leaves unsigned, as botocore does: hop-by-hop headers and
/// ones that proxies rewrite, plus `authorization` itself.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Query parameters of a presigned request.
const Q_ALGORITHM: &str = "X-Amz-Algorithm";
const Q_CREDENTIAL: &str = "X-Amz-Credential";
const Q_DATE: &str = "X-Amz-Date";
const Q_EXPIRES: &str = "X-Amz-Expires";
const Q_SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
const Q_SIGNATURE: &str = "X-Amz-Signature";
const Q_SECURITY_TOKEN: &str = "X-Amz-Security-Token";

const MSG_SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
     Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const MSG_HOST_NOT_SIGNED: &str = "'Host' must be a 'SignedHeader' in the AWS Authorization.";
const MSG_BOTH_AUTH_KINDS: &str =
    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.";
const MSG_CONTENT_SHA256_MISMATCH: &str =
    "The provided 'x-amz-content-sha256' header does not match what was computed.";

/// Everything but the unreserved characters `A-Z a-z 0-9 - _ . ~` is encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// As [`ENCODE`], keeping `/` (for paths).
const ENCODE_PATH: &AsciiSet = &ENCODE.remove(b'/');

type HmacSha256 = Hmac<Sha256>;

/// An access key pair. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The region and service a signature is scoped to, e.g. `us-east-1` and `ecs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
}

/// Why [`verify`] refused a request. `Display` gives the AWS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization: AWS4-…` header nor a presigned query.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,
    /// The `Authorization` header or presigned query is malformed or lacks a
    /// part, or the request date is missing or not in ISO 8601 basic format.
    #[error("{0}")]
    IncompleteSignature(String),
    /// The access key id is unknown.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    /// The signature does not match, is scoped to another date, region or
    /// service, does not sign `host`, or is too old / too early / expired.
    #[error("{0}")]
    InvalidSignature(String),
}

impl AuthError {
    /// The AWS error code, sent as `__type`.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature(_) => "IncompleteSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature(_) => "InvalidSignatureException",
        }
    }

    /// The HTTP status, per the AWS "Common Errors" reference: 400 for
    /// `IncompleteSignature`, 403 for the others.
    pub fn status(&self) -> u16 {
        match self {
            Self::IncompleteSignature(_) => 400,
            Self::MissingAuthenticationToken
            | Self::UnrecognizedClient
            | Self::InvalidSignature(_) => 403,
        }
    }
}

/// Signs a request in place with the `Authorization` header.
///
/// Removes any `authorization`, sets `x-amz-date` to `now`, sets `host` from
/// `uri` if it is missing, and signs every header present except the
/// hop-by-hop ones, `user-agent` and `x-amzn-trace-id` (as botocore does).
/// If a credential holds a character that cannot go in a header, no
/// `authorization` header is set.
pub fn sign(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    creds: &Credentials,
    scope: Scope,
    now: OffsetDateTime,
) {
    let stamp = amz_date(now);
    let date = stamp.get(..8).unwrap_or_default().to_owned();
    headers.remove(AUTHORIZATION);
    if !headers.contains_key(HOST) {
        if let Some(host) = uri_host(uri).and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert(HOST, host);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        headers.insert(X_AMZ_DATE, v);
    }
    let mut names: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| !UNSIGNED_HEADERS.contains(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let signed_headers = names.join(";");
    let canonical = CanonicalRequest {
        method: method.as_str().to_owned(),
        uri: canonical_uri(uri.path()),
        query: canonical_query(
            uri.query().unwrap_or_default(),
            QueryForm::Normalized,
            false,
        ),
        headers: names
            .iter()
            .map(|n| (n.to_string(), header_values(headers, n, None)))
            .collect(),
        signed_headers: signed_headers.clone(),
        payload_hash: header_str(headers, X_AMZ_CONTENT_SHA256).unwrap_or_else(|| sha256_hex(body)),
    };
    let string_to_sign = string_to_sign(&stamp, &date, scope, &canonical.to_bytes());
    let Some(signature) = signature(&creds.secret_access_key, &date, scope, &string_to_sign) else {
        return;
    };
    let authorization = format!(
        "{ALGORITHM} Credential={}/{date}/{}/{}/{TERMINATOR}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id, scope.region, scope.service
    );
    if let Ok(v) = HeaderValue::from_str(&authorization) {
        headers.insert(AUTHORIZATION, v);
    }
}

/// Builds a presigned query string for `method` on `uri`, signing only the
/// `host` header (whose value is `host`) and an empty body.
///
/// The answer is the whole query to put after `?` in the URL: the query of
/// `uri` first, if any, then `X-Amz-Algorithm`, `X-Amz-Credential`,
/// `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders=host` and
/// `X-Amz-Signature`, in botocore's order. [`verify`] refuses an
/// `expires_secs` outside `1..=604800`.
pub fn presign(
    method: &Method,
    uri: &Uri,
    host: &str,
    creds: &Credentials,
    scope: Scope,
    now: OffsetDateTime,
    expires_secs: u32,
) -> String {
    let stamp = amz_date(now);
    let date = stamp.get(..8).unwrap_or_default().to_owned();
    let credential = format!(
        "{}/{date}/{}/{}/{TERMINATOR}",
        creds.access_key_id, scope.region, scope.service
    );
    let mut query = String::new();
    if let Some(q) = uri.query().filter(|q| !q.is_empty()) {
        query.push_str(q);
        query.push('&');
    }
    query.push_str(&format!(
        "{Q_ALGORITHM}={ALGORITHM}&{Q_CREDENTIAL}={}&{Q_DATE}={stamp}&{Q_EXPIRES}={expires_secs}&{Q_SIGNED_HEADERS}=host",
        encode(credential.as_bytes())
    ));
    let canonical = CanonicalRequest {
        method: method.as_str().to_owned(),
        uri: canonical_uri(uri.path()),
        query: canonical_query(&query, QueryForm::Normalized, true),
        headers: vec![("host".to_owned(), trim_all(host.as_bytes()))],
        signed_headers: "host".to_owned(),
        payload_hash: sha256_hex(b""),
    };
    let string_to_sign = string_to_sign(&stamp, &date, scope, &canonical.to_bytes());
    let signature =
        signature(&creds.secret_access_key, &date, scope, &string_to_sign).unwrap_or_default();
    query.push_str(&format!("&{Q_SIGNATURE}={signature}"));
    query
}

/// Verifies a request signed with an `Authorization` header or a presigned
/// query. `lookup` answers the secret for an access key id, or `None` if the
/// key is unknown. Answers the access key id.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    scope: Scope,
    now: OffsetDateTime,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, AuthError> {
    let now = utc(now);
    let query = uri.query().unwrap_or_default();
    let params = parse_query(query);
    let query_auth = params
        .iter()
        .any(|p| p.key == Q_ALGORITHM || p.key == Q_SIGNATURE);
    let auth = match (headers.get(AUTHORIZATION), query_auth) {
        (Some(_), true) => return Err(AuthError::InvalidSignature(MSG_BOTH_AUTH_KINDS.to_owned())),
        (None, false) => return Err(AuthError::MissingAuthenticationToken),
        (Some(header), false) => parse_authorization_header(header, headers, now)?,
        (None, true) => parse_presigned_query(&params, now)?,
    };

    if !auth
        .signed_headers
        .split(';')
        .any(|h| h.eq_ignore_ascii_case("host"))
    {
        return Err(AuthError::InvalidSignature(MSG_HOST_NOT_SIGNED.to_owned()));
    }
    if auth.algorithm != ALGORITHM {
        return Err(AuthError::IncompleteSignature(format!(
            "Unsupported AWS 'algorithm': '{}' (only {ALGORITHM} for now).",
            auth.algorithm
        )));
    }
    let credential = auth.credential.trim_end_matches('/');
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, cred_date, cred_region, cred_service, cred_terminator] = parts.as_slice() else {
        return Err(AuthError::IncompleteSignature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    };
    let request_date = auth.stamp.get(..8).unwrap_or_default();
    let mut scope_errors = Vec::new();
    if *cred_region != scope.region {
        scope_errors.push(format!(
            "Credential should be scoped to a valid region, not '{cred_region}'."
        ));
    }
    if *cred_service != scope.service {
        scope_errors.push(format!(
            "Credential should be scoped to correct service: '{}'.",
            scope.service
        ));
    }
    if *cred_terminator != TERMINATOR {
        scope_errors.push(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{cred_terminator}'."
        ));
    }
    if *cred_date != request_date {
        scope_errors.push(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '{cred_date}' != '{request_date}', from '{}'.",
            auth.stamp
        ));
    }
    if !scope_errors.is_empty() {
        return Err(AuthError::InvalidSignature(scope_errors.join(" ")));
    }
    let secret = lookup(key_id).ok_or(AuthError::UnrecognizedClient)?;
    let payload_hash = checked_payload_hash(headers, body)?;

    let signed: Vec<String> = auth
        .signed_headers
        .split(';')
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let authority = uri_host(uri);
    let mut canonical = CanonicalRequest {
        method: method.as_str().to_owned(),
        uri: canonical_uri(uri.path()),
        query: canonical_query(query, QueryForm::Normalized, auth.presigned),
        headers: signed
            .iter()
            .map(|n| (n.clone(), header_values(headers, n, authority.as_deref())))
            .collect(),
        signed_headers: signed.join(";"),
        payload_hash,
    };
    let expected_sts = string_to_sign(&auth.stamp, request_date, scope, &canonical.to_bytes());
    let expected = signature(&secret, request_date, scope, &expected_sts);
    if signatures_match(expected.as_deref(), &auth.signature) {
        return Ok((*key_id).to_owned());
    }
    let as_sent = canonical_query(query, QueryForm::AsSent, auth.presigned);
    if as_sent != canonical.query {
        let normalized = std::mem::replace(&mut canonical.query, as_sent);
        let sts = string_to_sign(&auth.stamp, request_date, scope, &canonical.to_bytes());
        if signatures_match(
            signature(&secret, request_date, scope, &sts).as_deref(),
            &auth.signature,
        ) {
            return Ok((*key_id).to_owned());
        }
        canonical.query = normalized;
    }
    Err(AuthError::InvalidSignature(format!(
        "{MSG_SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{}'\n\n\
         The String-to-Sign should have been\n'{expected_sts}'\n",
        canonical.redacted()
    )))
}

/// The signature fields of a request, from either form.
struct Auth {
    algorithm: String,
    credential: String,
    signed_headers: String,
    signature: String,
    /// The request time in ISO 8601 basic format, as signed.
    stamp: String,
    presigned: bool,
}

fn parse_authorization_header(
    header: &HeaderValue,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<Auth, AuthError> {
    let text = String::from_utf8_lossy(header.as_bytes());
    let text = text.trim();
    if !text.starts_with("AWS4-") {
        return Err(AuthError::MissingAuthenticationToken);
    }
    let (algorithm, rest) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((text, ""));
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
    {
        let Some((key, value)) = part.split_once('=') else {
            return Err(AuthError::IncompleteSignature(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{text}'."
            )));
        };
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let credential = credential.filter(|v| !v.is_empty());
    let signature = signature.filter(|v| !v.is_empty());
    let date = header_str(headers, X_AMZ_DATE)
        .map(|v| (v, true))
        .or_else(|| header_str(headers, DATE).map(|v| (v, false)));
    let mut missing = String::new();
    for (name, value) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if value.is_none() {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    if date.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    let (Some(credential), Some(signature), Some(signed_headers), Some((date, is_amz_date))) =
        (credential, signature, signed_headers, date)
    else {
        return Err(AuthError::IncompleteSignature(format!(
            "{missing}Authorization={text}"
        )));
    };
    let at = if is_amz_date {
        parse_amz_date(&date)
    } else {
        parse_amz_date(&date).or_else(|| parse_http_date(&date))
    };
    let at = at.ok_or_else(|| bad_date(&date))?;
    check_skew(at, now)?;
    Ok(Auth {
        algorithm: algorithm.to_owned(),
        credential: credential.to_owned(),
        signed_headers: signed_headers.to_owned(),
        signature: signature.to_owned(),
        stamp: amz_date(at),
        presigned: false,
    })
}

fn parse_presigned_query(params: &[QueryParam], now: OffsetDateTime) -> Result<Auth, AuthError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|p| p.key == name)
            .map(|p| p.value.as_str())
            .filter(|v| !v.is_empty())
    };
    let mut missing = String::new();
    for name in [
        Q_ALGORITHM,
        Q_CREDENTIAL,
        Q_SIGNATURE,
        Q_SIGNED_HEADERS,
        Q_DATE,
        Q_EXPIRES,
    ] {
        if get(name).is_none() {
            missing.push_str(&format!(
                "AWS query-string parameters must include '{name}'. "
            ));
        }
    }
    let (
        Some(algorithm),
        Some(credential),
        Some(signature),
        Some(signed_headers),
        Some(date),
        Some(expires),
    ) = (
        get(Q_ALGORITHM),
        get(Q_CREDENTIAL),
        get(Q_SIGNATURE),
        get(Q_SIGNED_HEADERS),
        get(Q_DATE),
        get(Q_EXPIRES),
    )
    else {
        return Err(AuthError::IncompleteSignature(format!(
            "{missing}Re-examine the query-string parameters."
        )));
    };
    let at = parse_amz_date(date).ok_or_else(|| bad_date(date))?;
    let expires = parse_expires(expires)?;
    let ahead = at - now;
    if ahead > MAX_CLOCK_SKEW {
        return Err(not_yet_current(at, now));
    }
    let age = now - at;
    if age > expires {
        return Err(AuthError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - {}.)",
            amz_date(at),
            shifted(now, -expires),
            amz_date(now),
            describe(expires)
        )));
    }
    Ok(Auth {
        algorithm: algorithm.to_owned(),
        credential: credential.to_owned(),
        signed_headers: signed_headers.to_owned(),
        signature: signature.to_owned(),
        stamp: amz_date(at),
        presigned: true,
    })
}

fn parse_expires(value: &str) -> Result<Duration, AuthError> {
    let secs: i64 = value.parse().map_err(|_| {
        AuthError::IncompleteSignature(format!("X-Amz-Expires should be a number, got '{value}'."))
    })?;
    if secs < 1 {
        return Err(AuthError::IncompleteSignature(format!(
            "X-Amz-Expires must be at least 1 second, got '{value}'."
        )));
    }
    if secs > i64::from(MAX_PRESIGN_EXPIRES) {
        return Err(AuthError::IncompleteSignature(format!(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be \
             less than {MAX_PRESIGN_EXPIRES} seconds, got '{value}'."
        )));
    }
    Ok(Duration::seconds(secs))
}

fn check_skew(at: OffsetDateTime, now: OffsetDateTime) -> Result<(), AuthError> {
    if now - at > MAX_CLOCK_SKEW {
        return Err(AuthError::InvalidSignature(format!(
            "Signature expired: {} is now earlier than {} ({} - {}.)",
            amz_date(at),
            shifted(now, -MAX_CLOCK_SKEW),
            amz_date(now),
            describe(MAX_CLOCK_SKEW)
        )));
    }
    if at - now > MAX_CLOCK_SKEW {
        return Err(not_yet_current(at, now));
    }
    Ok(())
}

fn not_yet_current(at: OffsetDateTime, now: OffsetDateTime) -> AuthError {
    AuthError::InvalidSignature(format!(
        "Signature not yet current: {} is still later than {} ({} + {}.)",
        amz_date(at),
        shifted(now, MAX_CLOCK_SKEW),
        amz_date(now),
        describe(MAX_CLOCK_SKEW)
    ))
}

fn bad_date(value: &str) -> AuthError {
    AuthError::IncompleteSignature(format!(
        "Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

/// `15 min` or `90 sec`, as in AWS's expiry messages.
fn describe(d: Duration) -> String {
    let secs = d.whole_seconds();
    if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} sec")
    }
}

fn shifted(t: OffsetDateTime, by: Duration) -> String {
    amz_date(t.checked_add(by).unwrap_or(t))
}

/// The payload hash to sign: the `x-amz-content-sha256` header if present,
/// which must then be the hash of `body`, else the hash of `body`.
fn checked_payload_hash(headers: &HeaderMap, body: &[u8]) -> Result<String, AuthError> {
    let computed = sha256_hex(body);
    match header_str(headers, X_AMZ_CONTENT_SHA256) {
        None => Ok(computed),
        Some(sent) if sent.eq_ignore_ascii_case(&computed) => Ok(sent),
        Some(_) => Err(AuthError::InvalidSignature(
            MSG_CONTENT_SHA256_MISMATCH.to_owned(),
        )),
    }
}

fn signatures_match(expected: Option<&str>, provided: &str) -> bool {
    expected.is_some_and(|e| bool::from(e.as_bytes().ct_eq(provided.as_bytes())))
}

struct CanonicalRequest {
    method: String,
    uri: String,
    query: String,
    /// Lowercase name and canonical value, in signed order.
    headers: Vec<(String, Vec<u8>)>,
    signed_headers: String,
    payload_hash: String,
}

impl CanonicalRequest {
    fn to_bytes(&self) -> Vec<u8> {
        self.render(false)
    }

    /// The canonical request as text for an error message, session tokens hidden.
    fn redacted(&self) -> String {
        String::from_utf8_lossy(&self.render(true)).into_owned()
    }

    fn render(&self, redact: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.uri.as_bytes());
        out.push(b'\n');
        if redact {
            let pairs: Vec<&str> = self
                .query
                .split('&')
                .map(|p| {
                    if p.starts_with(&format!("{Q_SECURITY_TOKEN}=")) {
                        "X-Amz-Security-Token=<redacted>"
                    } else {
                        p
                    }
                })
                .collect();
            out.extend_from_slice(pairs.join("&").as_bytes());
        } else {
            out.extend_from_slice(self.query.as_bytes());
        }
        out.push(b'\n');
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            if redact && name == X_AMZ_SECURITY_TOKEN {
                out.extend_from_slice(b"<redacted>");
            } else {
                out.extend_from_slice(value);
            }
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(self.signed_headers.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(self.payload_hash.as_bytes());
        out
    }
}

fn string_to_sign(stamp: &str, date: &str, scope: Scope, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{stamp}\n{date}/{}/{}/{TERMINATOR}\n{}",
        scope.region,
        scope.service,
        hex::encode(Sha256::digest(canonical_request))
    )
}

/// The hex signature, `None` only if HMAC refused a key (it takes any length).
fn signature(secret: &str, date: &str, scope: Scope, string_to_sign: &str) -> Option<String> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes())?;
    let k_region = hmac(&k_date, scope.region.as_bytes())?;
    let k_service = hmac(&k_region, scope.service.as_bytes())?;
    let k_signing = hmac(&k_service, TERMINATOR.as_bytes())?;
    hmac(&k_signing, string_to_sign.as_bytes()).map(hex::encode)
}

fn hmac(key: &[u8], data: &[u8]) -> Option<[u8; 32]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().into())
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The path with dot segments and empty segments removed (as botocore does),
/// then percent-encoded again, `/` kept.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    if path.starts_with('/') {
        normalized.push('/');
    }
    normalized.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    utf8_percent_encode(&normalized, ENCODE_PATH).to_string()
}

struct QueryParam<'a> {
    raw_key: &'a str,
    raw_value: &'a str,
    /// Percent-decoded (lossy UTF-8), for finding parameters by name.
    key: String,
    value: String,
}

fn parse_query(query: &str) -> Vec<QueryParam<'_>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            QueryParam {
                raw_key,
                raw_value,
                key: percent_decode_str(raw_key).decode_utf8_lossy().into_owned(),
                value: percent_decode_str(raw_value)
                    .decode_utf8_lossy()
                    .into_owned(),
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum QueryForm {
    /// Decoded and encoded again with the AWS rule (what AWS specifies).
    Normalized,
    /// Exactly as sent (what botocore signs for a URL it did not build).
    AsSent,
}

/// The canonical query string, sorted by key then value; `presigned` leaves
/// out `X-Amz-Signature`.
fn canonical_query(query: &str, form: QueryForm, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = parse_query(query)
        .into_iter()
        .filter(|p| !(presigned && p.key == Q_SIGNATURE))
        .map(|p| match form {
            QueryForm::Normalized => (
                encode(&percent_decode_str(p.raw_key).collect::<Vec<u8>>()),
                encode(&percent_decode_str(p.raw_value).collect::<Vec<u8>>()),
            ),
            QueryForm::AsSent => (p.raw_key.to_owned(), p.raw_value.to_owned()),
        })
        .collect();
    pairs.sort_unstable();
    let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, ENCODE).to_string()
}

/// The canonical value of a header: every value trimmed, inner white space
/// collapsed, joined with `,`. `authority` stands in for a missing `host`
/// (HTTP/2 carries it in the URI).
fn header_values(headers: &HeaderMap, name: &str, authority: Option<&str>) -> Vec<u8> {
    let values: Vec<Vec<u8>> = headers
        .get_all(name)
        .iter()
        .map(|v| trim_all(v.as_bytes()))
        .collect();
    if values.is_empty() && name == "host" {
        return authority
            .map(|a| trim_all(a.as_bytes()))
            .unwrap_or_default();
    }
    values.join(&b',')
}

fn trim_all(value: &[u8]) -> Vec<u8> {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f);
    value
        .split(is_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(&b' ')
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// `host[:port]` of the URI, the port left out when it is the scheme's default.
fn uri_host(uri: &Uri) -> Option<String> {
    let authority = uri.authority()?;
    let host = authority.host();
    let default_port = match uri.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    Some(match authority.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    })
}

fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.checked_to_offset(UtcOffset::UTC).unwrap_or(t)
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
fn amz_date(t: OffsetDateTime) -> String {
    let t = utc(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'`.
fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u16> {
        b.get(from..to)?.iter().try_fold(0u16, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
        })
    };
    let month = Month::try_from(u8::try_from(num(4, 6)?).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::from(num(0, 4)?), month, u8::try_from(num(6, 8)?).ok()?)
            .ok()?;
    let time = Time::from_hms(
        u8::try_from(num(9, 11)?).ok()?,
        u8::try_from(num(11, 13)?).ok()?,
        u8::try_from(num(13, 15)?).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Parses an HTTP date such as `Thu, 01 Jan 2026 00:00:00 GMT` (RFC 1123), also
/// with a numeric zone (`-0000`, `+0100`) as Python's `formatdate` writes it.
fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let rest = s.split_once(',').map_or(s, |(_, rest)| rest);
    let mut fields = rest.split_ascii_whitespace();
    let day: u8 = fields.next()?.parse().ok()?;
    let month = match fields.next()?.to_ascii_lowercase().as_str() {
        "jan" => Month::January,
        "feb" => Month::February,
        "mar" => Month::March,
        "apr" => Month::April,
        "may" => Month::May,
        "jun" => Month::June,
        "jul" => Month::July,
        "aug" => Month::August,
        "sep" => Month::September,
        "oct" => Month::October,
        "nov" => Month::November,
        "dec" => Month::December,
        _ => return None,
    };
    let year: i32 = fields.next()?.parse().ok()?;
    let mut hms = fields.next()?.split(':');
    let (h, m, sec): (u8, u8, u8) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    let zone = fields.next()?;
    if hms.next().is_some() || fields.next().is_some() {
        return None;
    }
    let offset_secs = match zone {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        z => {
            let (sign, digits) = match z.as_bytes().first()? {
                b'+' => (1, z.get(1..)?),
                b'-' => (-1, z.get(1..)?),
                _ => return None,
            };
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let hours: i32 = digits.get(..2)?.parse().ok()?;
            let minutes: i32 = digits.get(2..)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let local = PrimitiveDateTime::new(
        Date::from_calendar_date(year, month, day).ok()?,
        Time::from_hms(h, m, sec).ok()?,
    );
    local
        .assume_offset(UtcOffset::from_whole_seconds(offset_secs).ok()?)
        .checked_to_offset(UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const ECS: Scope<'static> = Scope {
        region: "us-east-1",
        service: "ecs",
    };
    const HOST_NAME: &str = "ecs.us-east-1.amazonaws.com";

    fn creds() -> Credentials {
        Credentials::new(KEY_ID, SECRET)
    }

    fn lookup(id: &str) -> Option<String> {
        (id == KEY_ID).then(|| SECRET.to_owned())
    }

    fn t(stamp: &str) -> OffsetDateTime {
        parse_amz_date(stamp).unwrap()
    }

    fn now() -> OffsetDateTime {
        t("20260101T120000Z")
    }

    /// An ECS `ListClusters` request signed at `at`.
    fn signed_request(at: OffsetDateTime) -> (Method, Uri, HeaderMap, Vec<u8>) {
        let method = Method::POST;
        let uri: Uri = "/".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static(HOST_NAME));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("AmazonEC2ContainerServiceV20141113.ListClusters"),
        );
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        let body = b"{}".to_vec();
        sign(&method, &uri, &mut headers, &body, &creds(), ECS, at);
        (method, uri, headers, body)
    }

    fn check(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        at: OffsetDateTime,
    ) -> Result<String, AuthError> {
        verify(method, uri, headers, body, ECS, at, &lookup)
    }

    fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
        headers.insert(name, HeaderValue::from_str(value).unwrap());
    }

    fn incomplete(r: Result<String, AuthError>) -> String {
        match r {
            Err(AuthError::IncompleteSignature(m)) => m,
            other => panic!("expected IncompleteSignature, got {other:?}"),
        }
    }

    fn invalid(r: Result<String, AuthError>) -> String {
        match r {
            Err(AuthError::InvalidSignature(m)) => m,
            other => panic!("expected InvalidSignature, got {other:?}"),
        }
    }

    // ---- botocore vectors -------------------------------------------------

    struct Vector {
        name: String,
        v: serde_json::Value,
    }

    impl Vector {
        fn str(&self, path: &[&str]) -> &str {
            let mut v = &self.v;
            for p in path {
                v = &v[*p];
            }
            v.as_str()
                .unwrap_or_else(|| panic!("{}: missing {path:?}", self.name))
        }
        fn pairs(&self, path: &[&str]) -> Vec<(String, String)> {
            let mut v = &self.v;
            for p in path {
                v = &v[*p];
            }
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        }
        fn header_map(&self, path: &[&str]) -> HeaderMap {
            let mut map = HeaderMap::new();
            for (k, v) in self.pairs(path) {
                map.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            map
        }
        fn time(&self) -> OffsetDateTime {
            t(self.str(&["time"]))
        }
        fn scope(&self) -> Scope<'_> {
            Scope {
                region: self.str(&["region"]),
                service: self.str(&["service"]),
            }
        }
        fn creds(&self) -> Credentials {
            Credentials::new(
                self.str(&["access_key_id"]),
                self.str(&["secret_access_key"]),
            )
        }
        fn method(&self) -> Method {
            Method::from_bytes(self.str(&["method"]).as_bytes()).unwrap()
        }
        fn is_presign(&self) -> bool {
            self.str(&["kind"]) == "presign"
        }
        fn reproducible(&self) -> bool {
            self.v["sign_reproducible"].as_bool().unwrap()
        }
        fn body(&self) -> Vec<u8> {
            self.str(&["body"]).as_bytes().to_vec()
        }
        /// The URI the server sees: the request target with the authority.
        fn sent_uri(&self) -> Uri {
            let url = if self.is_presign() {
                self.str(&["expected", "url"])
            } else {
                self.str(&["url"])
            };
            url.parse().unwrap()
        }
        fn verify_with(
            &self,
            headers: &HeaderMap,
            body: &[u8],
            uri: &Uri,
            scope: Scope,
            at: OffsetDateTime,
        ) -> Result<String, AuthError> {
            let secret = self.str(&["secret_access_key"]).to_owned();
            let id = self.str(&["access_key_id"]).to_owned();
            verify(
                &self.method(),
                uri,
                headers,
                body,
                scope,
                at,
                &move |k: &str| (k == id).then(|| secret.clone()),
            )
        }
    }

    fn fixtures_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigv4")
    }

    fn vectors() -> Vec<Vector> {
        let mut out: Vec<Vector> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                Vector {
                    name: v["name"].as_str().unwrap().to_owned(),
                    v,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(
            out.len() >= 12,
            "expected the botocore vectors in {}",
            fixtures_dir().display()
        );
        out
    }

    #[test]
    fn vectors_sign_like_botocore() {
        let mut reproduced = 0;
        for v in vectors()
            .iter()
            .filter(|v| !v.is_presign() && v.reproducible())
        {
            let uri: Uri = v.str(&["url"]).parse().unwrap();
            // What botocore signed (its own additions such as X-Amz-Security-Token included),
            // less what signing adds.
            let mut headers = v.header_map(&["expected", "headers"]);
            headers.remove(AUTHORIZATION);
            headers.remove(X_AMZ_DATE);
            let body = v.body();
            sign(
                &v.method(),
                &uri,
                &mut headers,
                &body,
                &v.creds(),
                v.scope(),
                v.time(),
            );
            let expected = v.header_map(&["expected", "headers"]);
            assert_eq!(
                headers.get(AUTHORIZATION),
                expected.get(AUTHORIZATION),
                "{}: authorization",
                v.name
            );
            assert_eq!(
                headers.get(X_AMZ_DATE),
                expected.get(X_AMZ_DATE),
                "{}: x-amz-date",
                v.name
            );
            assert_eq!(headers, expected, "{}: every header", v.name);
            reproduced += 1;
        }
        assert!(reproduced >= 8);
    }

    #[test]
    fn vectors_canonical_request_and_string_to_sign_match_botocore() {
        for v in vectors().iter().filter(|v| v.reproducible()) {
            let uri: Uri = v.str(&["url"]).parse().unwrap();
            let headers = v.header_map(&["expected", "headers"]);
            let (query, canon_headers, signed, payload) = if v.is_presign() {
                let q = v.str(&["expected", "query"]);
                (
                    canonical_query(q, QueryForm::Normalized, true),
                    vec![("host".to_owned(), header_values(&headers, "host", None))],
                    "host".to_owned(),
                    sha256_hex(b""),
                )
            } else {
                let mut names: Vec<&str> = headers
                    .keys()
                    .map(|n| n.as_str())
                    .filter(|n| !UNSIGNED_HEADERS.contains(n))
                    .collect();
                names.sort_unstable();
                (
                    canonical_query(
                        uri.query().unwrap_or_default(),
                        QueryForm::Normalized,
                        false,
                    ),
                    names
                        .iter()
                        .map(|n| (n.to_string(), header_values(&headers, n, None)))
                        .collect(),
                    names.join(";"),
                    header_str(&headers, X_AMZ_CONTENT_SHA256)
                        .unwrap_or_else(|| sha256_hex(&v.body())),
                )
            };
            let canonical = CanonicalRequest {
                method: v.str(&["method"]).to_owned(),
                uri: canonical_uri(uri.path()),
                query,
                headers: canon_headers,
                signed_headers: signed,
                payload_hash: payload,
            };
            let text = String::from_utf8(canonical.to_bytes()).unwrap();
            assert_eq!(
                text,
                v.str(&["expected", "canonical_request"]),
                "{}: canonical request",
                v.name
            );
            let stamp = v.str(&["time"]);
            let sts = string_to_sign(stamp, &stamp[..8], v.scope(), &canonical.to_bytes());
            assert_eq!(
                sts,
                v.str(&["expected", "string_to_sign"]),
                "{}: string to sign",
                v.name
            );
            let sig =
                signature(v.str(&["secret_access_key"]), &stamp[..8], v.scope(), &sts).unwrap();
            assert_eq!(
                sig,
                v.str(&["expected", "signature"]),
                "{}: signature",
                v.name
            );
        }
    }

    #[test]
    fn vectors_presign_like_botocore() {
        let mut reproduced = 0;
        for v in vectors()
            .iter()
            .filter(|v| v.is_presign() && v.reproducible())
        {
            let uri: Uri = v.str(&["url"]).parse().unwrap();
            let host = uri_host(&uri).unwrap();
            let expires = u32::try_from(v.v["expires"].as_u64().unwrap()).unwrap();
            let query = presign(
                &v.method(),
                &uri,
                &host,
                &v.creds(),
                v.scope(),
                v.time(),
                expires,
            );
            assert_eq!(query, v.str(&["expected", "query"]), "{}", v.name);
            reproduced += 1;
        }
        assert!(reproduced >= 2);
    }

    #[test]
    fn vectors_verify_accepts_botocore_requests() {
        for v in vectors() {
            let headers = v.header_map(&["expected", "headers"]);
            let uri = v.sent_uri();
            let body = v.body();
            for offset in [-14, -1, 0, 1, 14] {
                let at = v.time() + Duration::minutes(offset);
                assert_eq!(
                    v.verify_with(&headers, &body, &uri, v.scope(), at),
                    Ok(KEY_ID.to_owned()),
                    "{} at {offset} min",
                    v.name
                );
            }
            // Only the path and query reach the server over HTTP/1.1.
            let origin_form: Uri = uri.path_and_query().unwrap().as_str().parse().unwrap();
            assert_eq!(
                v.verify_with(&headers, &body, &origin_form, v.scope(), v.time()),
                Ok(KEY_ID.to_owned())
            );
        }
    }

    #[test]
    fn vectors_verify_refuses_any_change() {
        for v in vectors() {
            let headers = v.header_map(&["expected", "headers"]);
            let uri = v.sent_uri();
            let body = v.body();
            let at = v.time();
            let name = &v.name;

            // One signed header value changed.
            let signed: Vec<String> = if v.is_presign() {
                vec!["host".to_owned()]
            } else {
                let auth = header_str(&headers, "authorization").unwrap();
                let list = auth
                    .split("SignedHeaders=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap();
                list.split(';').map(str::to_owned).collect()
            };
            for h in &signed {
                let mut changed = headers.clone();
                let old = header_str(&changed, h).unwrap();
                let new = match h.as_str() {
                    X_AMZ_DATE => amz_date(at + Duration::seconds(1)),
                    DATE => "Thu, 01 Jan 2026 00:00:01 GMT".to_owned(),
                    _ => format!("{old}x"),
                };
                changed.insert(
                    http::HeaderName::from_bytes(h.as_bytes()).unwrap(),
                    HeaderValue::from_str(&new).unwrap(),
                );
                let err = v
                    .verify_with(&changed, &body, &uri, v.scope(), at)
                    .unwrap_err();
                assert!(
                    matches!(err, AuthError::InvalidSignature(_)),
                    "{name}: changed {h}: {err:?}"
                );
            }

            // One body byte changed, or one added.
            let mut tampered = body.clone();
            match tampered.first_mut() {
                Some(b) => *b ^= 1,
                None => tampered.push(b'x'),
            }
            let err = v
                .verify_with(&headers, &tampered, &uri, v.scope(), at)
                .unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidSignature(_)),
                "{name}: body: {err:?}"
            );

            // Another path.
            let other: Uri = format!("{}x", uri.path()).parse().unwrap();
            let other: Uri = match uri.query() {
                Some(q) => format!("{}?{q}", other.path()).parse().unwrap(),
                None => other,
            };
            let err = v
                .verify_with(&headers, &body, &other, v.scope(), at)
                .unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidSignature(_)),
                "{name}: path: {err:?}"
            );

            // Another region or service.
            let scope = v.scope();
            let msg = invalid(v.verify_with(
                &headers,
                &body,
                &uri,
                Scope {
                    region: "us-west-2",
                    ..scope
                },
                at,
            ));
            assert_eq!(
                msg,
                format!(
                    "Credential should be scoped to a valid region, not '{}'.",
                    scope.region
                ),
                "{name}"
            );
            let msg = invalid(v.verify_with(
                &headers,
                &body,
                &uri,
                Scope {
                    service: "ecr",
                    ..scope
                },
                at,
            ));
            assert_eq!(
                msg, "Credential should be scoped to correct service: 'ecr'.",
                "{name}"
            );

            // Unknown key.
            let r = verify(&v.method(), &uri, &headers, &body, scope, at, &|_: &str| {
                None
            });
            assert_eq!(r, Err(AuthError::UnrecognizedClient), "{name}");

            // Wrong secret.
            let r = verify(&v.method(), &uri, &headers, &body, scope, at, &|_: &str| {
                Some("not the secret".to_owned())
            });
            let msg = invalid(r);
            assert!(msg.starts_with(MSG_SIGNATURE_MISMATCH), "{name}: {msg}");
            assert!(
                !msg.contains(v.str(&["secret_access_key"])),
                "{name}: secret in message"
            );

            if v.is_presign() {
                // A query parameter changed.
                let q = uri.query().unwrap().replace(
                    "X-Amz-SignedHeaders=host",
                    "X-Amz-SignedHeaders=host&extra=1",
                );
                let changed: Uri = format!("{}?{q}", uri.path()).parse().unwrap();
                invalid(v.verify_with(&headers, &body, &changed, scope, at));
                // Past its expiry.
                let expires = v.v["expires"].as_i64().unwrap();
                let late = at + Duration::seconds(expires + 1);
                let msg = invalid(v.verify_with(&headers, &body, &uri, scope, late));
                assert!(msg.starts_with("Signature expired: "), "{name}: {msg}");
                assert_eq!(
                    v.verify_with(&headers, &body, &uri, scope, late - Duration::seconds(1)),
                    Ok(KEY_ID.to_owned())
                );
            } else {
                // Sent a day later, re-dated: the scope date no longer matches.
                let mut redated = headers.clone();
                let next_day = at + Duration::days(1);
                redated.remove(DATE);
                set(&mut redated, X_AMZ_DATE, &amz_date(next_day));
                let msg = invalid(v.verify_with(&redated, &body, &uri, scope, next_day));
                assert!(
                    msg.starts_with("Date in Credential scope does not match YYYYMMDD"),
                    "{name}: {msg}"
                );
                // The same request 16 minutes later.
                let msg = invalid(v.verify_with(
                    &headers,
                    &body,
                    &uri,
                    scope,
                    at + Duration::minutes(16),
                ));
                assert!(msg.starts_with("Signature expired: "), "{name}: {msg}");
            }
        }
    }

    // ---- error paths --------------------------------------------------------

    #[test]
    fn round_trip() {
        let (m, u, h, b) = signed_request(now());
        assert_eq!(check(&m, &u, &h, &b, now()), Ok(KEY_ID.to_owned()));
        assert_eq!(h.get(X_AMZ_DATE).unwrap(), "20260101T120000Z");
        let auth = header_str(&h, "authorization").unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/ecs/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
        ));
    }

    #[test]
    fn missing_authentication() {
        let (m, u, mut h, b) = signed_request(now());
        h.remove(AUTHORIZATION);
        assert_eq!(
            check(&m, &u, &h, &b, now()),
            Err(AuthError::MissingAuthenticationToken)
        );
        for other in ["Bearer abc", "", "   ", "AWS abc:def"] {
            set(&mut h, "authorization", other);
            assert_eq!(
                check(&m, &u, &h, &b, now()),
                Err(AuthError::MissingAuthenticationToken),
                "{other:?}"
            );
        }
        let e = AuthError::MissingAuthenticationToken;
        assert_eq!(e.to_string(), "Missing Authentication Token");
        assert_eq!(
            (e.error_code(), e.status()),
            ("MissingAuthenticationTokenException", 403)
        );
    }

    #[test]
    fn unknown_access_key() {
        let (m, u, h, b) = signed_request(now());
        let r = verify(&m, &u, &h, &b, ECS, now(), &|_: &str| None);
        assert_eq!(r, Err(AuthError::UnrecognizedClient));
        let e = AuthError::UnrecognizedClient;
        assert_eq!(
            e.to_string(),
            "The security token included in the request is invalid."
        );
        assert_eq!(
            (e.error_code(), e.status()),
            ("UnrecognizedClientException", 403)
        );
    }

    #[test]
    fn wrong_secret() {
        let (m, u, h, b) = signed_request(now());
        let r = verify(&m, &u, &h, &b, ECS, now(), &|_: &str| {
            Some("other secret".to_owned())
        });
        let msg = invalid(r.clone());
        assert!(msg.starts_with(MSG_SIGNATURE_MISMATCH), "{msg}");
        assert!(msg.contains(
            "The Canonical String for this request should have been\n'POST\n/\n\ncontent-type:"
        ));
        assert!(msg.contains(
            "The String-to-Sign should have been\n'AWS4-HMAC-SHA256\n20260101T120000Z\n"
        ));
        assert!(!msg.contains("other secret") && !msg.contains(SECRET));
        let e = r.unwrap_err();
        assert_eq!(
            (e.error_code(), e.status()),
            ("InvalidSignatureException", 403)
        );
    }

    #[test]
    fn tampered_body_and_headers() {
        let (m, u, h, b) = signed_request(now());
        assert!(invalid(check(&m, &u, &h, b"{ }", now())).starts_with(MSG_SIGNATURE_MISMATCH));
        let mut h2 = h.clone();
        set(
            &mut h2,
            "x-amz-target",
            "AmazonEC2ContainerServiceV20141113.DeleteCluster",
        );
        assert!(invalid(check(&m, &u, &h2, &b, now())).starts_with(MSG_SIGNATURE_MISMATCH));
        // An unsigned header may change.
        let mut h3 = h.clone();
        set(&mut h3, "user-agent", "something else");
        assert_eq!(check(&m, &u, &h3, &b, now()), Ok(KEY_ID.to_owned()));
        // Another method.
        assert!(invalid(check(&Method::PUT, &u, &h, &b, now())).starts_with(MSG_SIGNATURE_MISMATCH));
    }

    #[test]
    fn content_sha256_header_must_hash_the_body() {
        let method = Method::POST;
        let uri: Uri = "/".parse().unwrap();
        let body = br#"{"cluster":"default"}"#;
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(HOST_NAME));
        set(&mut h, X_AMZ_CONTENT_SHA256, &sha256_hex(body));
        sign(&method, &uri, &mut h, body, &creds(), ECS, now());
        assert_eq!(check(&method, &uri, &h, body, now()), Ok(KEY_ID.to_owned()));
        // The body changes, the (signed) hash header does not.
        assert_eq!(
            invalid(check(&method, &uri, &h, b"{}", now())),
            MSG_CONTENT_SHA256_MISMATCH
        );
        // Payloads left unsigned are not accepted.
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(HOST_NAME));
        set(&mut h, X_AMZ_CONTENT_SHA256, "UNSIGNED-PAYLOAD");
        sign(&method, &uri, &mut h, body, &creds(), ECS, now());
        assert_eq!(
            invalid(check(&method, &uri, &h, body, now())),
            MSG_CONTENT_SHA256_MISMATCH
        );
    }

    /// Replaces one `Authorization` parameter.
    fn with_auth_param(h: &HeaderMap, key: &str, value: &str) -> HeaderMap {
        let auth = header_str(h, "authorization").unwrap();
        let rebuilt: Vec<String> = auth
            .split(", ")
            .map(|part| {
                let (alg, kv) = part.split_once(' ').unwrap_or(("", part));
                let (k, _) = kv.split_once('=').unwrap();
                let kv = if k == key {
                    format!("{k}={value}")
                } else {
                    kv.to_owned()
                };
                if alg.is_empty() {
                    kv
                } else {
                    format!("{alg} {kv}")
                }
            })
            .collect();
        let mut h = h.clone();
        set(&mut h, "authorization", &rebuilt.join(", "));
        h
    }

    #[test]
    fn host_must_be_signed() {
        let (m, u, h, b) = signed_request(now());
        let h = with_auth_param(&h, "SignedHeaders", "content-type;x-amz-date;x-amz-target");
        assert_eq!(
            invalid(check(&m, &u, &h, &b, now())),
            "'Host' must be a 'SignedHeader' in the AWS Authorization."
        );
        let h = with_auth_param(&h, "SignedHeaders", "");
        assert_eq!(invalid(check(&m, &u, &h, &b, now())), MSG_HOST_NOT_SIGNED);
    }

    #[test]
    fn scope_mismatches() {
        let (m, u, h, b) = signed_request(now());
        let r = verify(
            &m,
            &u,
            &h,
            &b,
            Scope {
                region: "eu-west-1",
                service: "ecs",
            },
            now(),
            &lookup,
        );
        assert_eq!(
            invalid(r),
            "Credential should be scoped to a valid region, not 'us-east-1'."
        );
        let r = verify(
            &m,
            &u,
            &h,
            &b,
            Scope {
                region: "us-east-1",
                service: "ecr",
            },
            now(),
            &lookup,
        );
        assert_eq!(
            invalid(r),
            "Credential should be scoped to correct service: 'ecr'."
        );

        let h2 = with_auth_param(
            &h,
            "Credential",
            "AKIDEXAMPLE/20251231/us-east-1/ecs/aws4_request",
        );
        assert_eq!(
            invalid(check(&m, &u, &h2, &b, now())),
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '20251231' != '20260101', from '20260101T120000Z'."
        );
        let h2 = with_auth_param(
            &h,
            "Credential",
            "AKIDEXAMPLE/2026/eu-central-1/sqs/aws5_request",
        );
        assert_eq!(
            invalid(check(&m, &u, &h2, &b, now())),
            "Credential should be scoped to a valid region, not 'eu-central-1'. \
             Credential should be scoped to correct service: 'ecs'. \
             Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'. \
             Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '2026' != '20260101', from '20260101T120000Z'."
        );
        // Trailing slashes are ignored, as by AWS.
        let h2 = with_auth_param(
            &h,
            "Credential",
            "AKIDEXAMPLE/20260101/us-east-1/ecs/aws4_request//",
        );
        assert_eq!(check(&m, &u, &h2, &b, now()), Ok(KEY_ID.to_owned()));
    }

    #[test]
    fn clock_skew() {
        let signed_at = now();
        let (m, u, h, b) = signed_request(signed_at);
        for minutes in [-15, -14, 0, 14, 15] {
            assert_eq!(
                check(&m, &u, &h, &b, signed_at + Duration::minutes(minutes)),
                Ok(KEY_ID.to_owned())
            );
        }
        let msg = invalid(check(&m, &u, &h, &b, signed_at + Duration::minutes(16)));
        assert_eq!(msg, "Signature expired: 20260101T120000Z is now earlier than 20260101T120100Z (20260101T121600Z - 15 min.)");
        let msg = invalid(check(&m, &u, &h, &b, signed_at - Duration::minutes(16)));
        assert_eq!(
            msg,
            "Signature not yet current: 20260101T120000Z is still later than 20260101T115900Z (20260101T114400Z + 15 min.)"
        );
        assert!(invalid(check(
            &m,
            &u,
            &h,
            &b,
            signed_at + Duration::seconds(15 * 60 + 1)
        ))
        .starts_with("Signature expired"));
        // `now` in another offset is the same instant.
        let east = (signed_at + Duration::minutes(14)).to_offset(time::macros::offset!(+9));
        assert_eq!(check(&m, &u, &h, &b, east), Ok(KEY_ID.to_owned()));
    }

    #[test]
    fn malformed_authorization_header() {
        let (m, u, h, b) = signed_request(now());
        let auth = header_str(&h, "authorization").unwrap();
        let with = |value: &str| {
            let mut h = h.clone();
            set(&mut h, "authorization", value);
            h
        };

        let msg = incomplete(check(&m, &u, &with("AWS4-HMAC-SHA256"), &b, now()));
        assert_eq!(
            msg,
            "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. \
             Authorization header requires 'SignedHeaders' parameter. Authorization=AWS4-HMAC-SHA256"
        );
        let no_sig = auth.split(", Signature=").next().unwrap().to_owned();
        let msg = incomplete(check(&m, &u, &with(&no_sig), &b, now()));
        assert_eq!(
            msg,
            format!("Authorization header requires 'Signature' parameter. Authorization={no_sig}")
        );

        let spaced = auth.replace("AKIDEXAMPLE/", "AKIDEXAMPLE /");
        let msg = incomplete(check(&m, &u, &with(&spaced), &b, now()));
        assert_eq!(
            msg,
            format!(
                "'/20260101/us-east-1/ecs/aws4_request' not a valid key=value pair (missing equal-sign) in \
                 Authorization header: '{spaced}'."
            )
        );

        let msg = incomplete(check(
            &m,
            &u,
            &with(&auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")),
            &b,
            now(),
        ));
        assert_eq!(
            msg,
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now)."
        );

        let short = with_auth_param(&h, "Credential", "AKIDEXAMPLE/20260101/us-east-1/ecs");
        let msg = incomplete(check(&m, &u, &short, &b, now()));
        assert_eq!(
            msg,
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, \
             got 'AKIDEXAMPLE/20260101/us-east-1/ecs'"
        );

        // Missing or malformed date.
        let mut no_date = h.clone();
        no_date.remove(X_AMZ_DATE);
        let msg = incomplete(check(&m, &u, &no_date, &b, now()));
        assert_eq!(
            msg,
            format!("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}")
        );
        for bad in [
            "201",
            "2026-01-01T12:00:00Z",
            "20260101T120000",
            "20261301T120000Z",
            "20260101T250000Z",
            "２０２６0101T120000Z",
        ] {
            let mut h2 = h.clone();
            set(&mut h2, X_AMZ_DATE, bad);
            let msg = incomplete(check(&m, &u, &h2, &b, now()));
            assert_eq!(msg, format!("Date must be in ISO-8601 'basic format'. Got '{bad}'. See http://en.wikipedia.org/wiki/ISO_8601"));
        }

        // Extra spaces and unknown parameters are tolerated.
        let loose = auth
            .replace(", ", " ,  ")
            .replace("AWS4-HMAC-SHA256 ", "  AWS4-HMAC-SHA256   Foo=bar, ");
        assert_eq!(
            check(&m, &u, &with(&loose), &b, now()),
            Ok(KEY_ID.to_owned())
        );

        let e = AuthError::IncompleteSignature(String::new());
        assert_eq!(
            (e.error_code(), e.status()),
            ("IncompleteSignatureException", 400)
        );
    }

    #[test]
    fn header_and_query_together() {
        let (m, _, h, b) = signed_request(now());
        let u: Uri = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256".parse().unwrap();
        assert_eq!(
            invalid(check(&m, &u, &h, &b, now())),
            "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
        );
    }

    #[test]
    fn date_header_instead_of_x_amz_date() {
        for (date, ok) in [
            ("Thu, 01 Jan 2026 12:00:00 GMT", true),
            ("Thu, 01 Jan 2026 12:00:00 -0000", true),
            ("Thu, 01 Jan 2026 13:00:00 +0100", true),
            ("01 Jan 2026 12:00:00 UTC", true),
            ("20260101T120000Z", true),
            ("Thu, 01 Foo 2026 12:00:00 GMT", false),
            ("Thu, 01 Jan 2026 12:00 GMT", false),
            ("Thu, 01 Jan 2026 12:00:00 +01", false),
        ] {
            let (m, u, mut h, b) = signed_request(now());
            h.remove(X_AMZ_DATE);
            set(&mut h, DATE, date);
            // The signature covers x-amz-date, now gone: only the date handling is under test.
            let r = check(&m, &u, &h, &b, now());
            if ok {
                assert!(invalid(r).starts_with(MSG_SIGNATURE_MISMATCH), "{date}");
            } else {
                assert_eq!(incomplete(r), format!("Date must be in ISO-8601 'basic format'. Got '{date}'. See http://en.wikipedia.org/wiki/ISO_8601"));
            }
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 2026 13:00:00 +0100"),
            Some(now())
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 2026 11:30:00 -0030"),
            Some(now())
        );
    }

    #[test]
    fn security_token_is_tolerated_and_signed() {
        let method = Method::POST;
        let uri: Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(HOST_NAME));
        set(&mut h, X_AMZ_SECURITY_TOKEN, "FwoGZXIvYXdzEXAMPLE");
        sign(&method, &uri, &mut h, b"{}", &creds(), ECS, now());
        assert!(header_str(&h, "authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
        assert_eq!(
            check(&method, &uri, &h, b"{}", now()),
            Ok(KEY_ID.to_owned())
        );
        // Changed after signing: refused, and the token is not echoed.
        set(&mut h, X_AMZ_SECURITY_TOKEN, "FwoGZXIvYXdzOTHER");
        let msg = invalid(check(&method, &uri, &h, b"{}", now()));
        assert!(msg.contains("x-amz-security-token:<redacted>\n"), "{msg}");
        assert!(!msg.contains("FwoGZXIvYXdz"), "{msg}");
    }

    #[test]
    fn host_from_the_uri_when_the_header_is_missing() {
        // HTTP/2 carries the host in `:authority`, which `http` puts in the URI.
        let method = Method::POST;
        let uri: Uri = "https://ecs.us-east-1.amazonaws.com:443/".parse().unwrap();
        let mut h = HeaderMap::new();
        sign(&method, &uri, &mut h, b"{}", &creds(), ECS, now());
        assert_eq!(h.get(HOST).unwrap(), HOST_NAME);
        h.remove(HOST);
        assert_eq!(
            check(&method, &uri, &h, b"{}", now()),
            Ok(KEY_ID.to_owned())
        );
        let local: Uri = "http://127.0.0.1:4566/".parse().unwrap();
        assert_eq!(uri_host(&local).as_deref(), Some("127.0.0.1:4566"));
    }

    #[test]
    fn presigned_requests() {
        let uri: Uri = "/v1/thing?b=2&a=1".parse().unwrap();
        let query = presign(&Method::GET, &uri, HOST_NAME, &creds(), ECS, now(), 600);
        assert!(query.starts_with("b=2&a=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fecs%2Faws4_request&X-Amz-Date=20260101T120000Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature="), "{query}");
        let signed: Uri = format!("/v1/thing?{query}").parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static(HOST_NAME));
        let at = |secs: i64| now() + Duration::seconds(secs);
        let go = |u: &Uri, when| verify(&Method::GET, u, &h, b"", ECS, when, &lookup);

        assert_eq!(go(&signed, at(0)), Ok(KEY_ID.to_owned()));
        assert_eq!(go(&signed, at(600)), Ok(KEY_ID.to_owned()));
        assert_eq!(go(&signed, at(-15 * 60)), Ok(KEY_ID.to_owned()));
        assert_eq!(
            invalid(go(&signed, at(601))),
            "Signature expired: 20260101T120000Z is now earlier than 20260101T120001Z (20260101T121001Z - 10 min.)"
        );
        assert!(invalid(go(&signed, at(-16 * 60)))
            .starts_with("Signature not yet current: 20260101T120000Z is still later than"));
        // Another method, another host.
        assert!(
            invalid(verify(&Method::POST, &signed, &h, b"", ECS, now(), &lookup))
                .starts_with(MSG_SIGNATURE_MISMATCH)
        );
        let mut other_host = h.clone();
        set(&mut other_host, "host", "evil.example");
        assert!(invalid(verify(
            &Method::GET,
            &signed,
            &other_host,
            b"",
            ECS,
            now(),
            &lookup
        ))
        .starts_with(MSG_SIGNATURE_MISMATCH));
        // Unknown key.
        assert_eq!(
            verify(&Method::GET, &signed, &h, b"", ECS, now(), &|_: &str| None),
            Err(AuthError::UnrecognizedClient)
        );

        // A week is the longest; odd values are malformed.
        let week = presign(
            &Method::GET,
            &uri,
            HOST_NAME,
            &creds(),
            ECS,
            now(),
            MAX_PRESIGN_EXPIRES,
        );
        let week: Uri = format!("/v1/thing?{week}").parse().unwrap();
        assert_eq!(go(&week, at(604_800)), Ok(KEY_ID.to_owned()));
        assert!(invalid(go(&week, at(604_801))).contains("(20260108T120001Z - 10080 min.)"));
        for (expires, msg) in [
            ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds, got '604801'."),
            ("0", "X-Amz-Expires must be at least 1 second, got '0'."),
            ("-5", "X-Amz-Expires must be at least 1 second, got '-5'."),
            ("soon", "X-Amz-Expires should be a number, got 'soon'."),
        ] {
            let q = query.replace("X-Amz-Expires=600", &format!("X-Amz-Expires={expires}"));
            let u: Uri = format!("/v1/thing?{q}").parse().unwrap();
            assert_eq!(incomplete(go(&u, at(0))), msg);
        }
        // Seconds-precise windows are described in seconds.
        let q = presign(&Method::GET, &uri, HOST_NAME, &creds(), ECS, now(), 90);
        let u: Uri = format!("/v1/thing?{q}").parse().unwrap();
        assert!(invalid(go(&u, at(91))).ends_with("(20260101T120131Z - 90 sec.)"));

        // Missing parameters.
        let u: Uri = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date="
            .parse()
            .unwrap();
        assert_eq!(
            incomplete(go(&u, at(0))),
            "AWS query-string parameters must include 'X-Amz-Credential'. \
             AWS query-string parameters must include 'X-Amz-Signature'. \
             AWS query-string parameters must include 'X-Amz-SignedHeaders'. \
             AWS query-string parameters must include 'X-Amz-Date'. \
             AWS query-string parameters must include 'X-Amz-Expires'. \
             Re-examine the query-string parameters."
        );
        // Host not signed; bad date.
        let q = query.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=x-amz-date");
        let u: Uri = format!("/v1/thing?{q}").parse().unwrap();
        assert_eq!(invalid(go(&u, at(0))), MSG_HOST_NOT_SIGNED);
        let q = query.replace("X-Amz-Date=20260101T120000Z", "X-Amz-Date=2026-01-01");
        let u: Uri = format!("/v1/thing?{q}").parse().unwrap();
        assert!(incomplete(go(&u, at(0)))
            .starts_with("Date must be in ISO-8601 'basic format'. Got '2026-01-01'."));
    }

    #[test]
    fn canonical_uri_rules() {
        for (path, want) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/a/./b/../c/", "/a/c/"),
            ("/a/b/../../..", "/"),
            ("/a%20b/%E2%98%95", "/a%2520b/%25E2%2598%2595"),
            ("/~a-b_c.d/*!'()", "/~a-b_c.d/%2A%21%27%28%29"),
            ("*", "%2A"),
        ] {
            assert_eq!(canonical_uri(path), want, "{path:?}");
        }
    }

    #[test]
    fn canonical_query_rules() {
        let q = "b=2&a=3&a=1&&A=0&c=x%20y&flag&d=%7e%2f*+";
        assert_eq!(
            canonical_query(q, QueryForm::Normalized, false),
            "A=0&a=1&a=3&b=2&c=x%20y&d=~%2F%2A%2B&flag="
        );
        assert_eq!(
            canonical_query(q, QueryForm::AsSent, false),
            "A=0&a=1&a=3&b=2&c=x%20y&d=%7e%2f*+&flag="
        );
        assert_eq!(
            canonical_query("X-Amz-Signature=abc&z=1", QueryForm::Normalized, true),
            "z=1"
        );
        assert_eq!(
            canonical_query("X-Amz-Signature=abc&z=1", QueryForm::Normalized, false),
            "X-Amz-Signature=abc&z=1"
        );
        assert_eq!(
            canonical_query("%zz=%E2%82&k=%", QueryForm::Normalized, false),
            "%25zz=%E2%82&k=%25"
        );
        assert_eq!(canonical_query("", QueryForm::Normalized, false), "");
    }

    #[test]
    fn header_value_rules() {
        assert_eq!(trim_all(b"  a   b \t c  "), b"a b c");
        assert_eq!(trim_all(b""), b"");
        assert_eq!(trim_all(b" \t "), b"");
        let mut h = HeaderMap::new();
        h.append("x-multi", HeaderValue::from_static(" one "));
        h.append("x-multi", HeaderValue::from_static("two  too"));
        assert_eq!(header_values(&h, "x-multi", None), b"one,two too");
        assert_eq!(header_values(&h, "Not A Header", None), b"");
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(now()), "20260101T120000Z");
        assert_eq!(
            amz_date(now().to_offset(time::macros::offset!(-5))),
            "20260101T120000Z"
        );
        assert_eq!(
            parse_amz_date("20240229T235959Z").map(amz_date).as_deref(),
            Some("20240229T235959Z")
        );
        assert_eq!(parse_amz_date("20230229T000000Z"), None);
        assert_eq!(parse_amz_date("20260101T120060Z"), None);
        assert_eq!(parse_amz_date("2026010aT120000Z"), None);
        assert_eq!(parse_amz_date("+2026101T120000Z"), None);
        assert_eq!(describe(Duration::minutes(15)), "15 min");
        assert_eq!(describe(Duration::seconds(61)), "61 sec");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = creds();
        let shown = format!("{c:?}");
        assert!(shown.contains(KEY_ID) && !shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn extreme_clocks_do_not_panic() {
        let (m, u, h, b) = signed_request(now());
        for at in [
            OffsetDateTime::UNIX_EPOCH,
            PrimitiveDateTime::MIN.assume_utc(),
            PrimitiveDateTime::MAX.assume_utc(),
            PrimitiveDateTime::MAX.assume_offset(time::macros::offset!(-23:59)),
            PrimitiveDateTime::MIN.assume_offset(time::macros::offset!(+23:59)),
        ] {
            let mut h2 = h.clone();
            sign(&m, &u, &mut h2, &b, &creds(), ECS, at);
            let _ = check(&m, &u, &h2, &b, at);
            let _ = check(&m, &u, &h, &b, at);
            let q = presign(&m, &u, HOST_NAME, &creds(), ECS, at, MAX_PRESIGN_EXPIRES);
            if let Ok(pu) = format!("/?{q}").parse::<Uri>() {
                let _ = check(&Method::GET, &pu, &h, b"", at);
            }
        }
        let mut h2 = h.clone();
        set(&mut h2, X_AMZ_DATE, "99991231T235959Z");
        let _ = check(&m, &u, &h2, &b, PrimitiveDateTime::MIN.assume_utc());
        set(&mut h2, X_AMZ_DATE, "00000101T000000Z");
        let _ = check(&m, &u, &h2, &b, PrimitiveDateTime::MAX.assume_utc());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        #[test]
        fn arbitrary_headers_never_panic(
            authorization in proptest::collection::vec(any::<u8>(), 0..200),
            amz_date in "\\PC{0,20}",
            date in "\\PC{0,40}",
            sha in "\\PC{0,70}",
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let uri: Uri = "/".parse().unwrap();
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static(HOST_NAME));
            if let Ok(v) = HeaderValue::from_bytes(&authorization) {
                h.insert(AUTHORIZATION, v);
            }
            for (name, value) in [(X_AMZ_DATE, &amz_date), (DATE, &date), (X_AMZ_CONTENT_SHA256, &sha)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            let _ = verify(&Method::POST, &uri, &h, &body, ECS, now(), &lookup);
        }

        #[test]
        fn arbitrary_authorization_fields_never_panic(
            alg in "(AWS4-HMAC-SHA256|AWS4-\\PC{0,8})",
            credential in "[A-Za-z0-9/=,; ._%-]{0,60}",
            signed in "[A-Za-z0-9;: ,=_-]{0,40}",
            sig in "[a-f0-9=, ]{0,70}",
            stamp in "(20260101T1[0-9]{5}Z|[0-9TZ]{0,17})",
        ) {
            let uri: Uri = "/".parse().unwrap();
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static(HOST_NAME));
            let auth = format!("{alg} Credential={credential}, SignedHeaders={signed}, Signature={sig}");
            if let Ok(v) = HeaderValue::from_str(&auth) {
                h.insert(AUTHORIZATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&stamp) {
                h.insert(X_AMZ_DATE, v);
            }
            let _ = verify(&Method::POST, &uri, &h, b"{}", ECS, now(), &lookup);
        }

        #[test]
        fn arbitrary_uris_never_panic(path in "/[ -~]{0,60}", query in "[ -~]{0,80}") {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static(HOST_NAME));
            for (i, target) in [format!("{path}?{query}"), format!("/?X-Amz-Algorithm=AWS4-HMAC-SHA256&{query}")].iter().enumerate() {
                if let Ok(uri) = target.parse::<Uri>() {
                    let _ = verify(&Method::GET, &uri, &h, b"", ECS, now(), &lookup);
                    if i > 0 || target.contains("X-Amz-") {
                        continue;
                    }
                    let mut signed = h.clone();
                    sign(&Method::GET, &uri, &mut signed, b"", &creds(), ECS, now());
                    prop_assert_eq!(verify(&Method::GET, &uri, &signed, b"", ECS, now(), &lookup), Ok(KEY_ID.to_owned()));
                    let q = presign(&Method::GET, &uri, HOST_NAME, &creds(), ECS, now(), 60);
                    if let Ok(presigned) = format!("{}?{q}", uri.path()).parse::<Uri>() {
                        prop_assert_eq!(verify(&Method::GET, &presigned, &h, b"", ECS, now(), &lookup), Ok(KEY_ID.to_owned()));
                    }
                }
            }
        }

        #[test]
        fn arbitrary_header_values_sign_and_verify(value in "[ -~\t]{0,40}", extra in "[ -~]{0,40}") {
            let uri: Uri = "/".parse().unwrap();
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_static(HOST_NAME));
            if let (Ok(v), Ok(e)) = (HeaderValue::from_str(&value), HeaderValue::from_str(&extra)) {
                h.insert("x-custom", v);
                h.append("x-custom", e);
                sign(&Method::POST, &uri, &mut h, b"{}", &creds(), ECS, now());
                prop_assert_eq!(verify(&Method::POST, &uri, &h, b"{}", ECS, now(), &lookup), Ok(KEY_ID.to_owned()));
            }
        }
    }
}
