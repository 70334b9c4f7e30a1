//! Repository names, tags and image references (`[host[:port]/]path[:tag|@digest]`).

use crate::{Digest, Error, Result};
use std::fmt;

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Checks a repository name against the distribution spec's grammar:
/// `/`-separated components of lowercase letters and digits joined by `.`,
/// `_`, `__` or runs of `-`, at most 255 characters. Such a name is safe as a
/// relative path (no `..`, no empty or absolute components).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || !name.split('/').all(valid_component) {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

/// A registry host as in references: `host[:port]`, host being DNS labels or
/// an IPv4 or bracketed IPv6 address.
pub fn valid_domain(d: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (
                !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                p,
            ),
            None => return false,
        }
    } else {
        let (h, p) = match d.find(':') {
            Some(i) => (&d[..i], &d[i..]),
            None => (d, ""),
        };
        let labels_ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        (labels_ok, p)
    };
    let port_ok = match port.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
        None => port.is_empty(),
    };
    host_ok && port_ok
}

/// A name in a local [`crate::BlobStore`]: a repository name as in
/// [`validate_name`], optionally prefixed by the registry domain it was
/// pulled from (`127.0.0.1:5000/team/app`).
pub fn validate_local_name(name: &str) -> Result<()> {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(':') || first == "localhost" => {
            if valid_domain(first) {
                validate_name(rest)
            } else {
                Err(Error::InvalidName(name.to_string()))
            }
        }
        _ => validate_name(name),
    }
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTag(tag.to_string()))
    }
}

/// What follows a repository name: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A digest if it looks like one (`algo:...`), a tag otherwise; both validated.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains(':') {
            Ok(Self::Digest(Digest::parse(s)?))
        } else {
            validate_tag(s)?;
            Ok(Self::Tag(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// An image reference: `name[:tag|@digest]` or `host[:port]/path[:tag|@digest]`.
///
/// The first component is a registry host when it contains `.` or `:` or is
/// `localhost` (the Docker rule); otherwise the reference names an image in
/// the default (built-in) registry. A missing tag means `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, or `None` for the default registry.
    pub registry: Option<String>,
    /// The repository path at that registry.
    pub repository: String,
    pub reference: Reference,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidReference(s.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|_| bad())?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_domain(first) {
                    return Err(bad());
                }
                (Some(first.to_string()), p)
            }
            _ => (None, rest),
        };
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => (&path[..last_slash + i], Some(&path[last_slash + i + 1..])),
            None => (path, None),
        };
        validate_name(repository).map_err(|_| bad())?;
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => {
                validate_tag(t).map_err(|_| bad())?;
                Reference::Tag(t.to_string())
            }
            (None, None) => Reference::Tag("latest".to_string()),
        };
        Ok(Self {
            registry,
            repository: repository.to_string(),
            reference,
        })
    }

    /// The name this image gets in a local store: the repository, prefixed
    /// with the registry host for images from another registry.
    pub fn local_name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        match &self.reference {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["busybox", "library/busybox", "a.b_c__d---e/f0", "a"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Busybox", "a//b", "/a", "a/", "..", "a/../b", "a..b", "a___b", "-a", "a-", "a:b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert!(validate_local_name("127.0.0.1:5000/team/app").is_ok());
        assert!(validate_local_name("localhost/app").is_ok());
        assert!(validate_local_name("../app").is_err());
        assert!(validate_tag("v1.2-rc_3").is_ok());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag(&"a".repeat(129)).is_err());
    }

    #[test]
    fn references() {
        let r = ImageRef::parse("busybox").ok();
        assert_eq!(
            r,
            Some(ImageRef {
                registry: None,
                repository: "busybox".into(),
                reference: Reference::Tag("latest".into())
            })
        );
        let r = ImageRef::parse("localhost:5000/team/app:v1").ok();
        assert_eq!(
            r.as_ref().and_then(|r| r.registry.clone()).as_deref(),
            Some("localhost:5000")
        );
        assert_eq!(r.as_ref().map(|r| r.repository.as_str()), Some("team/app"));
        assert_eq!(
            r.map(|r| r.to_string()).as_deref(),
            Some("localhost:5000/team/app:v1")
        );
        let d = Digest::of(b"x");
        let r = ImageRef::parse(&format!("library/busybox@{d}")).ok();
        assert_eq!(r.map(|r| r.reference), Some(Reference::Digest(d)));
        assert!(ImageRef::parse("Busybox").is_err());
        assert!(ImageRef::parse("busybox:").is_err());
        assert!(ImageRef::parse("busybox@sha256:12").is_err());
        let r = ImageRef::parse("registry.example.com/x").ok();
        assert_eq!(
            r.and_then(|r| r.registry).as_deref(),
            Some("registry.example.com")
        );
    }
}
