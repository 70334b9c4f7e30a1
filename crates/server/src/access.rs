//! Who may call what: the three roles and the level every operation needs.
//!
//! # Design
//!
//! An operation needs one of three levels; a role grants a set of them:
//!
//! | level | operations | viewer | operator | admin |
//! |---|---|:-:|:-:|:-:|
//! | read | `Describe*`, `List*`, `Get*`, `BerthV1.GetTaskLogs`, `BerthV1.DescribeFleet`, `BerthV1.GetCost` | ✓ | ✓ | ✓ |
//! | operate | every other ECS operation on workloads: task definitions, tasks (`RunTask`, `StartTask`, `StopTask`, `ExecuteCommand`, `UpdateTaskProtection`), services, task sets, deployments, daemons, express gateway services, attributes, `UpdateContainerInstancesState`, tags on those | | ✓ | ✓ |
//! | administer | clusters (`CreateCluster`, `UpdateCluster`, `UpdateClusterSettings`, `PutClusterCapacityProviders`, `DeleteCluster`), capacity providers (`Create/Update/DeleteCapacityProvider`), account settings (`PutAccountSetting`, `PutAccountSettingDefault`, `DeleteAccountSetting`), `DeregisterContainerInstance`, the agent-side operations (`RegisterContainerInstance`, `DiscoverPollEndpoint`, `Submit*StateChange`, `UpdateContainerAgent`), tags on clusters and capacity providers, and `BerthV1.` users, audit, `SetImageVersion`, `ReplaceInstances` | | | ✓ |
//!
//! The match in [`ecs_rule`] names every operation of the model, so a new one
//! is a compile error until it is classified. The root key is an admin.

use berth_model::arn::{Arn, Resource};
use berth_model::ecs::Operation;
use berth_model::{EcsError, ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A principal's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, users included.
    Admin,
    /// Reads, and every operation on workloads.
    Operator,
    /// Reads only.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    /// Whether this role may call an operation needing `level`.
    pub fn allows(self, level: Level) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => level != Level::Administer,
            Role::Viewer => level == Level::Read,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Read,
    Operate,
    Administer,
}

/// How an operation is checked and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub level: Level,
    /// Whether it changes anything: such calls leave an audit record.
    pub mutating: bool,
}

const READ: Rule = Rule {
    level: Level::Read,
    mutating: false,
};
const OPERATE: Rule = Rule {
    level: Level::Operate,
    mutating: true,
};
const ADMINISTER: Rule = Rule {
    level: Level::Administer,
    mutating: true,
};

/// The rule of an ECS operation. Tagging takes the level of the resource
/// tagged, so `body` is looked at for `TagResource` and `UntagResource` only.
pub fn ecs_rule(op: Operation, body: &[u8]) -> Rule {
    use Operation as O;
    match op {
        O::DescribeCapacityProviders
        | O::DescribeClusters
        | O::DescribeContainerInstances
        | O::DescribeDaemon
        | O::DescribeDaemonDeployments
        | O::DescribeDaemonRevisions
        | O::DescribeDaemonTaskDefinition
        | O::DescribeExpressGatewayService
        | O::DescribeServiceDeployments
        | O::DescribeServiceRevisions
        | O::DescribeServices
        | O::DescribeTaskDefinition
        | O::DescribeTaskSets
        | O::DescribeTasks
        | O::GetTaskProtection
        | O::ListAccountSettings
        | O::ListAttributes
        | O::ListClusters
        | O::ListContainerInstances
        | O::ListDaemonDeployments
        | O::ListDaemonTaskDefinitions
        | O::ListDaemons
        | O::ListServiceDeployments
        | O::ListServices
        | O::ListServicesByNamespace
        | O::ListTagsForResource
        | O::ListTaskDefinitionFamilies
        | O::ListTaskDefinitions
        | O::ListTasks => READ,
        O::RegisterTaskDefinition
        | O::DeregisterTaskDefinition
        | O::DeleteTaskDefinitions
        | O::RunTask
        | O::StartTask
        | O::StopTask
        | O::ExecuteCommand
        | O::UpdateTaskProtection
        | O::CreateService
        | O::UpdateService
        | O::DeleteService
        | O::ContinueServiceDeployment
        | O::StopServiceDeployment
        | O::CreateTaskSet
        | O::UpdateTaskSet
        | O::DeleteTaskSet
        | O::UpdateServicePrimaryTaskSet
        | O::CreateExpressGatewayService
        | O::UpdateExpressGatewayService
        | O::DeleteExpressGatewayService
        | O::RegisterDaemonTaskDefinition
        | O::DeleteDaemonTaskDefinition
        | O::CreateDaemon
        | O::UpdateDaemon
        | O::DeleteDaemon
        | O::PutAttributes
        | O::DeleteAttributes
        | O::UpdateContainerInstancesState => OPERATE,
        O::TagResource | O::UntagResource => {
            if tags_administered_resource(body) {
                ADMINISTER
            } else {
                OPERATE
            }
        }
        O::CreateCluster
        | O::UpdateCluster
        | O::UpdateClusterSettings
        | O::PutClusterCapacityProviders
        | O::DeleteCluster
        | O::CreateCapacityProvider
        | O::UpdateCapacityProvider
        | O::DeleteCapacityProvider
        | O::PutAccountSetting
        | O::PutAccountSettingDefault
        | O::DeleteAccountSetting
        | O::DeregisterContainerInstance
        | O::RegisterContainerInstance
        | O::DiscoverPollEndpoint
        | O::SubmitAttachmentStateChanges
        | O::SubmitContainerStateChange
        | O::SubmitTaskStateChange
        | O::UpdateContainerAgent => ADMINISTER,
    }
}

/// Whether a tagging request names a cluster or a capacity provider: their
/// tags steer the fleet (`berth:*` lifecycle tags), so only admins set them.
fn tags_administered_resource(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Tagging {
        resource_arn: Option<String>,
    }
    let Ok(Tagging {
        resource_arn: Some(arn),
    }) = serde_json::from_slice::<Tagging>(body)
    else {
        return false;
    };
    matches!(
        Arn::parse(&arn).map(|a| a.resource),
        Ok(Resource::Cluster { .. } | Resource::CapacityProvider { .. })
    )
}

/// The rule of a berth operation (`BerthV1.<name>`); `None` when unknown.
pub fn berth_rule(name: &str) -> Option<Rule> {
    Some(match name {
        "GetTaskLogs" | "DescribeFleet" | "GetCost" => READ,
        "ListUsers" | "ListAuditRecords" => Rule {
            level: Level::Administer,
            mutating: false,
        },
        "CreateUser" | "DeleteUser" | "SetImageVersion" | "ReplaceInstances" => ADMINISTER,
        _ => return None,
    })
}

/// The principal behind a verified signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    pub access_key_id: String,
    /// The user's name; `root` for the root key.
    pub user: String,
    pub role: Role,
}

/// Checks `caller` against `rule`; `operation` is named in the refusal
/// (`ecs:RunTask`, `berth:CreateUser`).
pub fn check(caller: &Caller, operation: &str, rule: Rule) -> Result<(), EcsError> {
    if caller.role.allows(rule.level) {
        return Ok(());
    }
    let allowed = match caller.role {
        Role::Viewer => "a viewer may only read (Describe*, List*, Get*)",
        _ => "an operator may not change clusters, capacity providers, account settings, users or the fleet",
    };
    Err(EcsError::new(
        ErrorKind::AccessDenied,
        format!(
            "User {} (role {}) is not authorized to perform: {operation}: {allowed}.",
            caller.user, caller.role
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            access_key_id: "AKIA".into(),
            user: "u".into(),
            role,
        }
    }

    #[test]
    fn reads_are_exactly_describe_list_get() {
        for op in Operation::ALL {
            let name = op.name();
            let read = ["Describe", "List", "Get"]
                .iter()
                .any(|p| name.starts_with(p));
            let rule = ecs_rule(*op, b"{}");
            assert_eq!(rule.level == Level::Read, read, "{name}");
            assert_eq!(rule.mutating, !read, "{name}");
        }
    }

    #[test]
    fn roles_nest() {
        for op in Operation::ALL {
            let rule = ecs_rule(*op, b"{}");
            let v = caller(Role::Viewer);
            let o = caller(Role::Operator);
            let a = caller(Role::Admin);
            assert!(check(&a, op.name(), rule).is_ok());
            if check(&v, op.name(), rule).is_ok() {
                assert!(check(&o, op.name(), rule).is_ok(), "{}", op.name());
            }
        }
    }

    #[test]
    fn operator_runs_stops_updates_and_execs() {
        let o = caller(Role::Operator);
        for op in [
            Operation::RunTask,
            Operation::StartTask,
            Operation::StopTask,
            Operation::UpdateService,
            Operation::CreateService,
            Operation::ExecuteCommand,
            Operation::UpdateTaskProtection,
            Operation::UpdateContainerInstancesState,
        ] {
            assert!(check(&o, op.name(), ecs_rule(op, b"{}")).is_ok(), "{op:?}");
        }
        for op in [
            Operation::CreateCluster,
            Operation::DeleteCluster,
            Operation::PutAccountSetting,
            Operation::DeleteCapacityProvider,
        ] {
            assert!(check(&o, op.name(), ecs_rule(op, b"{}")).is_err(), "{op:?}");
        }
    }

    #[test]
    fn tagging_takes_the_level_of_the_resource() {
        let cluster =
            br#"{"resourceArn":"arn:aws:ecs:us-east-1:000000000000:cluster/c1","tags":[]}"#;
        let cp = br#"{"resourceArn":"arn:aws:ecs:us-east-1:000000000000:capacity-provider/mi"}"#;
        let svc = br#"{"resourceArn":"arn:aws:ecs:us-east-1:000000000000:service/c1/web"}"#;
        assert_eq!(
            ecs_rule(Operation::TagResource, cluster).level,
            Level::Administer
        );
        assert_eq!(
            ecs_rule(Operation::UntagResource, cp).level,
            Level::Administer
        );
        assert_eq!(ecs_rule(Operation::TagResource, svc).level, Level::Operate);
        assert_eq!(
            ecs_rule(Operation::TagResource, b"not json").level,
            Level::Operate
        );
    }

    #[test]
    fn refusal_names_operation_and_role() {
        let e = check(&caller(Role::Viewer), "ecs:RunTask", OPERATE).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::AccessDenied);
        assert!(e.message.contains("ecs:RunTask"), "{}", e.message);
        assert!(e.message.contains("viewer"), "{}", e.message);
    }

    #[test]
    fn berth_operations() {
        assert_eq!(berth_rule("GetTaskLogs"), Some(READ));
        assert_eq!(berth_rule("CreateUser"), Some(ADMINISTER));
        assert!(!berth_rule("ListAuditRecords").is_some_and(|r| r.mutating));
        assert_eq!(berth_rule("Nope"), None);
        assert_eq!(Role::parse("viewer"), Some(Role::Viewer));
        assert_eq!(Role::parse("root"), None);
    }
}
