//! Names of ECS resources, parsed once at the edge.
//!
//! Each newtype can hold only a valid value, so code past the API edge never
//! re-checks a name.

use crate::error::EcsError;
use std::fmt;

fn check(kind: &str, value: &str, max: usize, extra: &[char]) -> Result<(), EcsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c);
    if value.is_empty() || value.len() > max || !value.chars().all(ok_char) {
        return Err(EcsError::invalid(format!(
            "{kind} name '{value}' is invalid: up to {max} letters (uppercase and lowercase), numbers, hyphens and underscores are allowed."
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $t:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $t(String);

        impl $t {
            pub fn parse(value: &str) -> Result<Self, EcsError> {
                check($what, value, $max, &[])?;
                Ok(Self(value.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A cluster name: up to 255 letters, numbers, hyphens and underscores.
    ClusterName, "Cluster", 255
);
name_type!(
    /// A task definition family: up to 255 letters, numbers, hyphens and underscores.
    Family, "Family", 255
);
name_type!(
    /// A service name: up to 255 letters, numbers, hyphens and underscores,
    /// unique among the non-INACTIVE services of a cluster.
    ServiceName, "Service", 255
);

name_type!(
    /// A container name within a task definition.
    ContainerName, "Container", 255
);

/// A capacity provider name: up to 255 letters, numbers, hyphens and
/// underscores, not starting with the reserved prefixes `aws`, `ecs` or `fargate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapacityProviderName(String);

impl CapacityProviderName {
    pub fn parse(value: &str) -> Result<Self, EcsError> {
        check("Capacity provider", value, 255, &[])?;
        let lower = value.to_ascii_lowercase();
        if ["aws", "ecs", "fargate"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Err(EcsError::invalid(
                "The capacity provider name cannot be prefixed with \"aws\", \"ecs\", or \"fargate\".",
            ));
        }
        Ok(Self(value.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CapacityProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cluster_names() {
        assert!(ClusterName::parse("default").is_ok());
        assert!(ClusterName::parse("a-b_C9").is_ok());
        assert!(ClusterName::parse("").is_err());
        assert!(ClusterName::parse("has space").is_err());
        assert!(ClusterName::parse("slash/no").is_err());
        assert!(ClusterName::parse(&"x".repeat(255)).is_ok());
        assert!(ClusterName::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn capacity_provider_prefixes() {
        assert!(CapacityProviderName::parse("mi-cp").is_ok());
        for bad in ["aws-x", "ECSthing", "fargate2", "FARGATE_SPOT"] {
            assert!(CapacityProviderName::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(s in "[A-Za-z0-9_-]{1,255}") {
            let n = ClusterName::parse(&s).expect("valid");
            prop_assert_eq!(n.as_str(), s.as_str());
        }

        #[test]
        fn any_other_char_is_refused(s in "[A-Za-z0-9]{0,10}[^A-Za-z0-9_-][A-Za-z0-9]{0,10}") {
            prop_assert!(Family::parse(&s).is_err());
        }
    }
}
