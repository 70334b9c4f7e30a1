//! Helpers the generated shapes rely on.
use serde::{Deserialize, Deserializer};

/// A primitive member that AWS may send as `null` reads as its default.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Shapes that know which of their members the model requires.
pub trait Required {
    /// The path of the first required member that is absent, if any.
    fn missing(&self, path: &str) -> Option<String>;
}

/// Joins a member name onto a path (`a.b`).
pub fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}
