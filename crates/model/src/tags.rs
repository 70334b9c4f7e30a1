//! Resource tags, validated as AWS validates them.

use crate::ecs::Tag;
use crate::error::EcsError;

/// At most this many tags on one resource.
pub const MAX_TAGS: usize = 50;

fn valid_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c))
}

/// Checks a list of tags: key 1–128 characters, value 0–256, the characters
/// AWS allows, no `aws:` prefix, no duplicate keys, at most 50 tags.
pub fn validate(tags: &[Tag]) -> Result<(), EcsError> {
    if tags.len() > MAX_TAGS {
        return Err(EcsError::invalid(format!(
            "Too many tags: {} were given and a resource can have at most {MAX_TAGS}.",
            tags.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in tags {
        let key = t.key.as_deref().unwrap_or("");
        let value = t.value.as_deref().unwrap_or("");
        if key.is_empty() || key.chars().count() > 128 || !valid_chars(key) {
            return Err(EcsError::invalid(format!(
                "Tag key '{key}' is invalid: it must be 1 to 128 characters of letters, numbers, spaces and + - = . _ : / @."
            )));
        }
        if value.chars().count() > 256 || !valid_chars(value) {
            return Err(EcsError::invalid(format!(
                "Tag value for key '{key}' is invalid: it must be at most 256 characters of letters, numbers, spaces and + - = . _ : / @."
            )));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(EcsError::invalid(format!(
                "Tag key '{key}' uses the reserved prefix 'aws:'."
            )));
        }
        if !seen.insert(key) {
            return Err(EcsError::invalid(format!(
                "Tag key '{key}' is given more than once."
            )));
        }
    }
    Ok(())
}

/// Merges `add` into `existing` (a new value replaces an old one), then checks the result.
pub fn merge(existing: &mut Vec<Tag>, add: &[Tag]) -> Result<(), EcsError> {
    validate(add)?;
    for t in add {
        match existing.iter_mut().find(|e| e.key == t.key) {
            Some(e) => e.value = t.value.clone(),
            None => existing.push(t.clone()),
        }
    }
    validate(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[test]
    fn rules() {
        assert!(validate(&[tag("team", "core"), tag("env", "")]).is_ok());
        assert!(validate(&[tag("", "x")]).is_err());
        assert!(validate(&[tag("aws:thing", "x")]).is_err());
        assert!(validate(&[tag("k", "x"), tag("k", "y")]).is_err());
        assert!(validate(&[tag(&"k".repeat(129), "x")]).is_err());
        assert!(validate(&[tag("k", &"v".repeat(257))]).is_err());
        assert!(validate(&[tag("k", "bad#char")]).is_err());
        let many: Vec<Tag> = (0..51).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(validate(&many).is_err());
        assert!(validate(&many[..50]).is_ok());
    }

    #[test]
    fn merge_replaces_and_limits() {
        let mut e = vec![tag("a", "1")];
        merge(&mut e, &[tag("a", "2"), tag("b", "3")]).expect("merge");
        assert_eq!(e, vec![tag("a", "2"), tag("b", "3")]);
        let mut full: Vec<Tag> = (0..50).map(|i| tag(&format!("k{i}"), "v")).collect();
        assert!(merge(&mut full, &[tag("one-more", "v")]).is_err());
    }
}
