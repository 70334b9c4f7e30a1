//! The service layer: every rule of every operation, in one place.
//!
//! Each operation is a function from its typed request to its typed response
//! over a [`Ctx`]. A write is one store transaction: validation happens first,
//! then the transaction reads what it needs and writes, and the answer is sent
//! only after the commit.

mod attributes;
mod capacity_providers;
mod clusters;
mod container_instances;
mod daemons;
pub mod exec;
mod protection;
mod services;
mod settings;
mod tags;
mod task_definitions;
mod tasks;

use base64::Engine as _;
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::{Cluster, Operation};
use berth_model::wire::Required;
use berth_model::{EcsError, ErrorKind};
use berth_store::{Tx, Versioned};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use berth_control::Ctx;

/// Who is calling: the access key id the request was signed with.
pub type Principal = str;

pub type OpResult<T> = Result<T, EcsError>;

/// Parses a request body into its shape, with the AWS JSON protocol's errors.
pub fn parse<T: DeserializeOwned + Required>(body: &[u8]) -> OpResult<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    let value: T = serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("unknown variant") {
            EcsError::invalid(format!("Invalid value in request: {msg}"))
        } else {
            EcsError::new(
                ErrorKind::Serialization,
                format!("Cannot read the request body: {msg}"),
            )
        }
    })?;
    if let Some(path) = value.missing("") {
        return Err(EcsError::invalid(format!(
            "Missing required parameter in input: \"{path}\""
        )));
    }
    Ok(value)
}

fn render<T: Serialize>(value: &T) -> OpResult<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| EcsError::server(format!("cannot render the answer: {e}")))
}

/// Routes an operation to its handler, without exec sessions (ExecuteCommand
/// answers UnsupportedFeature): see [`dispatch_with`].
pub fn dispatch(ctx: &Ctx, op: Operation, principal: &Principal, body: &[u8]) -> OpResult<Vec<u8>> {
    dispatch_with(ctx, None, op, principal, body)
}

/// Routes an operation to its handler. Every operation of the model is named
/// here, so a new one in the model is a compile error until it is decided.
/// `exec` is what ExecuteCommand needs beyond the store (the agents'
/// connections, the sessions, the stream URL).
pub fn dispatch_with(
    ctx: &Ctx,
    exec: Option<&dyn exec::ExecEnv>,
    op: Operation,
    principal: &Principal,
    body: &[u8],
) -> OpResult<Vec<u8>> {
    macro_rules! call {
        ($f:path) => {
            render(&$f(ctx, parse(body)?)?)
        };
        ($f:path, principal) => {
            render(&$f(ctx, principal, parse(body)?)?)
        };
    }
    use Operation as O;
    match op {
        O::CreateCluster => call!(clusters::create),
        O::DescribeClusters => call!(clusters::describe),
        O::ListClusters => call!(clusters::list),
        O::UpdateCluster => call!(clusters::update),
        O::UpdateClusterSettings => call!(clusters::update_settings),
        O::PutClusterCapacityProviders => call!(clusters::put_capacity_providers),
        O::DeleteCluster => call!(clusters::delete),
        O::CreateCapacityProvider => call!(capacity_providers::create),
        O::DescribeCapacityProviders => call!(capacity_providers::describe),
        O::UpdateCapacityProvider => call!(capacity_providers::update),
        O::DeleteCapacityProvider => call!(capacity_providers::delete),
        O::RegisterTaskDefinition => call!(task_definitions::register),
        O::DescribeTaskDefinition => call!(task_definitions::describe),
        O::ListTaskDefinitions => call!(task_definitions::list),
        O::ListTaskDefinitionFamilies => call!(task_definitions::list_families),
        O::DeregisterTaskDefinition => call!(task_definitions::deregister),
        O::DeleteTaskDefinitions => call!(task_definitions::delete),
        O::RunTask => call!(tasks::run),
        O::StopTask => call!(tasks::stop),
        O::DescribeTasks => call!(tasks::describe),
        O::ListTasks => call!(tasks::list),
        O::UpdateTaskProtection => call!(protection::update),
        O::GetTaskProtection => call!(protection::get),
        O::ListContainerInstances => call!(container_instances::list),
        O::DescribeContainerInstances => call!(container_instances::describe),
        O::UpdateContainerInstancesState => call!(container_instances::update_state),
        O::DeregisterContainerInstance => call!(container_instances::deregister),
        O::PutAttributes => call!(attributes::put),
        O::DeleteAttributes => call!(attributes::delete),
        O::ListAttributes => call!(attributes::list),
        O::TagResource => call!(tags::tag),
        O::UntagResource => call!(tags::untag),
        O::ListTagsForResource => call!(tags::list),
        O::ListAccountSettings => call!(settings::list, principal),
        O::PutAccountSetting => call!(settings::put, principal),
        O::PutAccountSettingDefault => call!(settings::put_default),
        O::DeleteAccountSetting => call!(settings::delete, principal),
        O::CreateService => call!(services::create),
        O::UpdateService => call!(services::update),
        O::DeleteService => call!(services::delete),
        O::DescribeServices => call!(services::describe),
        O::ListServices => call!(services::list),
        O::DescribeServiceDeployments => call!(services::describe_deployments),
        O::ListServiceDeployments => call!(services::list_deployments),
        O::DescribeServiceRevisions => call!(services::describe_revisions),
        O::RegisterDaemonTaskDefinition => call!(daemons::register_task_definition),
        O::DescribeDaemonTaskDefinition => call!(daemons::describe_task_definition),
        O::ListDaemonTaskDefinitions => call!(daemons::list_task_definitions),
        O::DeleteDaemonTaskDefinition => call!(daemons::delete_task_definition),
        O::CreateDaemon => call!(daemons::create),
        O::UpdateDaemon => call!(daemons::update),
        O::DeleteDaemon => call!(daemons::delete),
        O::DescribeDaemon => call!(daemons::describe),
        O::ListDaemons => call!(daemons::list),
        O::DescribeDaemonDeployments => call!(daemons::describe_deployments),
        O::ListDaemonDeployments => call!(daemons::list_deployments),
        O::DescribeDaemonRevisions => call!(daemons::describe_revisions),
        O::ExecuteCommand => match exec {
            Some(env) => render(&exec::execute_command(ctx, env, principal, parse(body)?)?),
            None => Err(EcsError::new(
                ErrorKind::UnsupportedFeature,
                "ExecuteCommand needs a server with its agent gateway.",
            )),
        },
        O::ContinueServiceDeployment
        | O::CreateExpressGatewayService
        | O::CreateTaskSet
        | O::DeleteExpressGatewayService
        | O::DeleteTaskSet
        | O::DescribeExpressGatewayService
        | O::DescribeTaskSets
        | O::DiscoverPollEndpoint
        | O::ListServicesByNamespace
        | O::RegisterContainerInstance
        | O::StartTask
        | O::StopServiceDeployment
        | O::SubmitAttachmentStateChanges
        | O::SubmitContainerStateChange
        | O::SubmitTaskStateChange
        | O::UpdateContainerAgent
        | O::UpdateExpressGatewayService
        | O::UpdateServicePrimaryTaskSet
        | O::UpdateTaskSet => Err(EcsError::new(
            ErrorKind::UnsupportedFeature,
            format!("berth does not support {} yet.", op.name()),
        )),
    }
}

// ---------------------------------------------------------------------------
// Shared helpers.

/// Pagination tokens are opaque to clients: the operation and the last key,
/// base64url-encoded. A token from another operation is refused.
pub fn encode_token(op: Operation, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}\n{key}", op.name()))
}

pub fn decode_token(op: Operation, token: Option<&str>) -> OpResult<Option<String>> {
    let Some(token) = token else { return Ok(None) };
    let bad = || {
        EcsError::invalid("The nextToken is invalid: pass the nextToken exactly as a previous call of this operation returned it.")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (name, key) = text.split_once('\n').ok_or_else(bad)?;
    if name != op.name() || key.is_empty() {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Checks `maxResults` against the operation's bounds; `None` gives the default.
pub fn page_size(max_results: Option<i32>, max: i32, default: i32) -> OpResult<usize> {
    match max_results {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(EcsError::invalid(format!(
            "maxResults must be between 1 and {max}; {n} was given."
        ))),
    }
}

/// The cluster name a `cluster` parameter (name or ARN, default `default`) refers to.
pub fn cluster_name(ctx: &Ctx, cluster: Option<&str>) -> OpResult<String> {
    let given = cluster.unwrap_or("default");
    if given.starts_with("arn:") {
        let arn = Arn::parse(given).map_err(|_| EcsError::cluster_not_found())?;
        match arn.resource {
            Resource::Cluster { name }
                if arn.region == ctx.arns.region && arn.account == ctx.arns.account =>
            {
                Ok(name)
            }
            _ => Err(EcsError::cluster_not_found()),
        }
    } else {
        Ok(given.to_string())
    }
}

/// The ACTIVE cluster a `cluster` parameter names, or `ClusterNotFoundException`.
pub fn active_cluster(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster: Option<&str>,
) -> OpResult<Versioned<Cluster>> {
    let name = cluster_name(ctx, cluster)?;
    match tx.cluster(&name)? {
        Some(c) if c.value.status.as_deref() == Some("ACTIVE") => Ok(c),
        _ => Err(EcsError::cluster_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_operation() {
        let t = encode_token(Operation::ListTasks, "arn:aws:ecs:x");
        assert_eq!(
            decode_token(Operation::ListTasks, Some(&t))
                .ok()
                .flatten()
                .as_deref(),
            Some("arn:aws:ecs:x")
        );
        assert!(decode_token(Operation::ListClusters, Some(&t)).is_err());
        assert!(decode_token(Operation::ListTasks, Some("!!!")).is_err());
        assert_eq!(decode_token(Operation::ListTasks, None).ok(), Some(None));
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None, 100, 100).ok(), Some(100));
        assert_eq!(page_size(Some(5), 100, 100).ok(), Some(5));
        assert!(page_size(Some(0), 100, 100).is_err());
        assert!(page_size(Some(101), 100, 100).is_err());
    }

    proptest! {
        #[test]
        fn any_token_decodes_or_errors(s in ".{0,60}") {
            let _ = decode_token(Operation::ListTasks, Some(&s));
        }

        #[test]
        fn keys_round_trip(k in ".{1,80}") {
            let t = encode_token(Operation::ListClusters, &k);
            prop_assert_eq!(decode_token(Operation::ListClusters, Some(&t)).ok().flatten(), Some(k));
        }
    }
}
