//! Amazon Resource Names as ECS writes them.
//!
//! berth writes the "long" ARN format AWS uses today:
//! `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`,
//! `…:task/CLUSTER/ID`, `…:container-instance/CLUSTER/ID`,
//! `…:task-definition/FAMILY:REVISION`, `…:capacity-provider/NAME`,
//! `…:service/CLUSTER/NAME`.

use crate::error::EcsError;
use std::fmt;

/// Where ARNs are minted: the partition's region and the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnContext {
    pub region: String,
    pub account: String,
}

/// The ECS resource an ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Cluster { name: String },
    CapacityProvider { name: String },
    TaskDefinition { family: String, revision: i32 },
    Task { cluster: String, id: String },
    ContainerInstance { cluster: String, id: String },
    Service { cluster: String, name: String },
    Daemon { cluster: String, name: String },
    DaemonTaskDefinition { family: String, revision: i32 },
}

/// A parsed ECS ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub resource: Resource,
}

impl Arn {
    /// Parses an ECS ARN. Only the `aws` partition and the `ecs` service are accepted.
    pub fn parse(s: &str) -> Result<Self, EcsError> {
        let bad = || EcsError::invalid(format!("Invalid ARN: '{s}'."));
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("ecs"), Some(region), Some(account), Some(rest)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if !partition.starts_with("aws") || region.is_empty() || account.is_empty() {
            return Err(bad());
        }
        let (kind, path) = rest.split_once('/').ok_or_else(bad)?;
        let segs: Vec<&str> = path.split('/').collect();
        let nonempty = |v: &[&str]| v.iter().all(|p| !p.is_empty());
        if !nonempty(&segs) {
            return Err(bad());
        }
        let resource = match (kind, segs.as_slice()) {
            ("cluster", [name]) => Resource::Cluster {
                name: name.to_string(),
            },
            ("capacity-provider", [name]) => Resource::CapacityProvider {
                name: name.to_string(),
            },
            ("task-definition", [fr]) | ("daemon-task-definition", [fr]) => {
                let (family, rev) = fr.rsplit_once(':').ok_or_else(bad)?;
                let revision = rev.parse::<i32>().map_err(|_| bad())?;
                if family.is_empty() || revision < 1 {
                    return Err(bad());
                }
                let family = family.to_string();
                if kind == "task-definition" {
                    Resource::TaskDefinition { family, revision }
                } else {
                    Resource::DaemonTaskDefinition { family, revision }
                }
            }
            ("task", [cluster, id]) => Resource::Task {
                cluster: cluster.to_string(),
                id: id.to_string(),
            },
            ("container-instance", [cluster, id]) => Resource::ContainerInstance {
                cluster: cluster.to_string(),
                id: id.to_string(),
            },
            ("service", [cluster, name]) => Resource::Service {
                cluster: cluster.to_string(),
                name: name.to_string(),
            },
            ("daemon", [cluster, name]) => Resource::Daemon {
                cluster: cluster.to_string(),
                name: name.to_string(),
            },
            _ => return Err(bad()),
        };
        Ok(Self {
            region: region.to_string(),
            account: account.to_string(),
            resource,
        })
    }

    pub fn new(ctx: &ArnContext, resource: Resource) -> Self {
        Self {
            region: ctx.region.clone(),
            account: ctx.account.clone(),
            resource,
        }
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arn:aws:ecs:{}:{}:", self.region, self.account)?;
        match &self.resource {
            Resource::Cluster { name } => write!(f, "cluster/{name}"),
            Resource::CapacityProvider { name } => write!(f, "capacity-provider/{name}"),
            Resource::TaskDefinition { family, revision } => {
                write!(f, "task-definition/{family}:{revision}")
            }
            Resource::Task { cluster, id } => write!(f, "task/{cluster}/{id}"),
            Resource::ContainerInstance { cluster, id } => {
                write!(f, "container-instance/{cluster}/{id}")
            }
            Resource::Service { cluster, name } => write!(f, "service/{cluster}/{name}"),
            Resource::Daemon { cluster, name } => write!(f, "daemon/{cluster}/{name}"),
            Resource::DaemonTaskDefinition { family, revision } => {
                write!(f, "daemon-task-definition/{family}:{revision}")
            }
        }
    }
}

impl ArnContext {
    pub fn cluster(&self, name: &str) -> String {
        Arn::new(self, Resource::Cluster { name: name.into() }).to_string()
    }
    pub fn capacity_provider(&self, name: &str) -> String {
        Arn::new(self, Resource::CapacityProvider { name: name.into() }).to_string()
    }
    pub fn task_definition(&self, family: &str, revision: i32) -> String {
        Arn::new(
            self,
            Resource::TaskDefinition {
                family: family.into(),
                revision,
            },
        )
        .to_string()
    }
    pub fn task(&self, cluster: &str, id: &str) -> String {
        Arn::new(
            self,
            Resource::Task {
                cluster: cluster.into(),
                id: id.into(),
            },
        )
        .to_string()
    }
    pub fn service(&self, cluster: &str, name: &str) -> String {
        Arn::new(
            self,
            Resource::Service {
                cluster: cluster.into(),
                name: name.into(),
            },
        )
        .to_string()
    }

    /// `…:service-revision/CLUSTER/SERVICE/ID`: not a taggable resource, so
    /// not a [`Resource`]; ECS's ids are 19 decimal digits.
    pub fn service_revision(&self, cluster: &str, service: &str, id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:service-revision/{cluster}/{service}/{id}",
            self.region, self.account
        )
    }

    /// `…:service-deployment/CLUSTER/SERVICE/ID`, like [`Self::service_revision`].
    pub fn service_deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:service-deployment/{cluster}/{service}/{id}",
            self.region, self.account
        )
    }

    pub fn daemon(&self, cluster: &str, name: &str) -> String {
        Arn::new(
            self,
            Resource::Daemon {
                cluster: cluster.into(),
                name: name.into(),
            },
        )
        .to_string()
    }

    pub fn daemon_task_definition(&self, family: &str, revision: i32) -> String {
        Arn::new(
            self,
            Resource::DaemonTaskDefinition {
                family: family.into(),
                revision,
            },
        )
        .to_string()
    }

    /// `…:daemon-revision/CLUSTER/DAEMON/ID`, like [`Self::service_revision`].
    pub fn daemon_revision(&self, cluster: &str, daemon: &str, id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:daemon-revision/{cluster}/{daemon}/{id}",
            self.region, self.account
        )
    }

    /// `…:daemon-deployment/CLUSTER/DAEMON/ID`, like [`Self::service_revision`].
    pub fn daemon_deployment(&self, cluster: &str, daemon: &str, id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:daemon-deployment/{cluster}/{daemon}/{id}",
            self.region, self.account
        )
    }

    pub fn container_instance(&self, cluster: &str, id: &str) -> String {
        Arn::new(
            self,
            Resource::ContainerInstance {
                cluster: cluster.into(),
                id: id.into(),
            },
        )
        .to_string()
    }
}

/// Checks an IAM ARN of the given resource type (`role`, `instance-profile`):
/// `arn:aws:iam::ACCOUNT:TYPE/[PATH/]NAME`.
pub fn check_iam_arn(value: &str, resource_type: &str, member: &str) -> Result<(), EcsError> {
    let bad = || {
        EcsError::invalid(format!(
            "The {member} '{value}' is not a valid IAM {resource_type} ARN. Specify an ARN such as arn:aws:iam::123456789012:{resource_type}/name."
        ))
    };
    let mut parts = value.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(rest)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    if !partition.starts_with("aws")
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let Some(path) = rest
        .strip_prefix(resource_type)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Err(bad());
    };
    let name = path.rsplit('/').next().unwrap_or("");
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(ok) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> ArnContext {
        ArnContext {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        }
    }

    #[test]
    fn round_trips() {
        let c = ctx();
        for s in [
            c.cluster("default"),
            c.capacity_provider("mi"),
            c.task_definition("web", 12),
            c.task("default", "0123456789abcdef0123456789abcdef"),
            c.container_instance("prod", "abc"),
            "arn:aws:ecs:eu-west-1:123456789012:service/prod/web".to_string(),
            c.daemon("prod", "logs"),
            c.daemon_task_definition("shipper", 3),
        ] {
            let a = Arn::parse(&s).expect("parses");
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "arn:aws:ecs:us-east-1:000000000000",
            "arn:aws:s3:us-east-1:000000000000:cluster/x",
            "arn:aws:ecs:us-east-1:000000000000:cluster/",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:0",
            "arn:aws:ecs:us-east-1:000000000000:task-definition/web:x",
            "arn:aws:ecs:us-east-1:000000000000:widget/x",
            "arn:aws:ecs:us-east-1:000000000000:task/onlyid/",
        ] {
            assert!(Arn::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn iam_arns() {
        assert!(check_iam_arn(
            "arn:aws:iam::123456789012:role/ecsInfra",
            "role",
            "infrastructureRoleArn"
        )
        .is_ok());
        assert!(check_iam_arn("arn:aws:iam::123456789012:role/path/to/r", "role", "x").is_ok());
        assert!(check_iam_arn(
            "arn:aws:iam::123456789012:instance-profile/p",
            "instance-profile",
            "x"
        )
        .is_ok());
        assert!(
            check_iam_arn("arn:aws:iam::123456789012:instance-profile/p", "role", "x").is_err()
        );
        assert!(check_iam_arn("arn:aws:iam::12345:role/r", "role", "x").is_err());
        assert!(check_iam_arn("role/r", "role", "x").is_err());
        assert!(check_iam_arn("arn:aws:iam::123456789012:role/", "role", "x").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = Arn::parse(&s);
            let _ = check_iam_arn(&s, "role", "m");
        }

        #[test]
        fn task_definition_arns_round_trip(f in "[A-Za-z0-9_-]{1,40}", r in 1i32..100000) {
            let s = ctx().task_definition(&f, r);
            let a = Arn::parse(&s).expect("parses");
            prop_assert_eq!(a.resource, Resource::TaskDefinition { family: f, revision: r });
        }
    }
}
