//! The scheduler and the agent state machine end to end at the unit level:
//! a recording launcher instead of an instance provider, direct calls instead
//! of an agent's WebSocket, the API through the router.

mod common;

use berth_control::agents::{self, Admission};
use berth_protocol::{ContainerReport, ServerMessage, TaskReport};
use common::sched::{hello, scheduler, Recorder};
use common::{setup, Harness};
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_launched_for_placed_run_and_stopped_with_its_exit_code() {
    let h = Harness::new();
    setup(&h).await;
    let run = h
        .ok(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "web", "count": 2,
                              "capacityProviderStrategy": [{"capacityProvider": "mi"}]}),
        )
        .await;
    let arns: Vec<String> = run["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(String::from))
        .collect();
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);

    // Nothing runs anywhere: one instance of the cheapest fitting type is launched, once.
    let r = tokio::task::block_in_place(|| s.tick()).expect("tick");
    assert_eq!(r.launched.len(), 1, "{r:?}");
    let again = tokio::task::block_in_place(|| s.tick()).expect("tick");
    assert!(
        again.launched.is_empty(),
        "capacity on its way is not launched twice: {again:?}"
    );
    let launch = rec.launches.lock().expect("lock")[0].clone();
    let t = h
        .state
        .ctx
        .catalog
        .get(&launch.instance_type)
        .expect("a catalog type");
    assert!(
        t.vcpus >= 2 && t.memory_mib >= 4096,
        "the provider's requirements hold: {}",
        t.name
    );
    let token = launch
        .agent_env
        .iter()
        .find(|(k, _)| k == "BERTH_JOIN_TOKEN")
        .map(|(_, v)| v.clone())
        .expect("a join token");
    let ci_list = h
        .ok(
            "ListContainerInstances",
            json!({"cluster": "c1", "status": "REGISTERING"}),
        )
        .await;
    assert_eq!(
        ci_list["containerInstanceArns"].as_array().map(Vec::len),
        Some(1)
    );

    // The agent joins: the token works once, then only the credential does.
    let ctx = h.state.ctx.clone();
    let id = launch.instance_id.clone();
    let admission = agents::admit(&ctx, &id, &token).expect("join");
    let Admission::Joined { credential } = admission else {
        panic!("expected a credential")
    };
    assert!(
        agents::admit(&ctx, &id, &token).is_err(),
        "a join token works once"
    );
    assert_eq!(
        agents::admit(&ctx, &id, &credential).ok(),
        Some(Admission::Known)
    );
    let (ci_arn, _, desired) =
        agents::hello(&ctx, &hello(&id, t.cpu_units(), 3840)).expect("hello");
    assert!(desired.is_empty());

    // Both tasks are placed on it and sent as its desired set.
    tokio::task::block_in_place(|| s.tick()).expect("tick");
    let described = h
        .ok("DescribeTasks", json!({"cluster": "c1", "tasks": arns}))
        .await;
    for t in described["tasks"].as_array().into_iter().flatten() {
        assert_eq!(t["lastStatus"], "PENDING");
        assert_eq!(t["containerInstanceArn"], ci_arn.as_str());
        assert_eq!(t["availabilityZone"], "us-east-1a");
    }
    let sent = rec.sent.lock().expect("lock").clone();
    let Some((_, ServerMessage::Desired { tasks, .. })) = sent.last() else {
        panic!("nothing sent")
    };
    assert_eq!(tasks.len(), 2);
    let ci = h
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c1", "containerInstances": [ci_arn]}),
        )
        .await;
    let ci = &ci["containerInstances"][0];
    assert_eq!(ci["status"], "ACTIVE");
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["pendingTasksCount"], 2);
    let remaining_mem = ci["remainingResources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "MEMORY")
        .and_then(|r| r["integerValue"].as_i64());
    assert_eq!(
        remaining_mem,
        Some(3840 - 2 * 64),
        "two tasks of 64 MiB reserved"
    );

    // The agent reports: running, then the essential container exits 3.
    let report = |status: &str, exit: Option<i32>| TaskReport {
        task_arn: arns[0].clone(),
        last_status: status.into(),
        started_at: Some(1.0),
        stop_code: exit.map(|_| "EssentialContainerExited".into()),
        stopped_reason: exit.map(|_| "Essential container in task exited".into()),
        containers: vec![ContainerReport {
            name: "app".into(),
            runtime_id: Some("rt-1".into()),
            last_status: if exit.is_some() {
                "STOPPED".into()
            } else {
                "RUNNING".into()
            },
            exit_code: exit,
            ..Default::default()
        }],
        ..Default::default()
    };
    agents::report(&ctx, &id, &report("RUNNING", None)).expect("report");
    let t0 = h
        .ok(
            "DescribeTasks",
            json!({"cluster": "c1", "tasks": [arns[0].clone()]}),
        )
        .await;
    assert_eq!(t0["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(t0["tasks"][0]["containers"][0]["runtimeId"], "rt-1");
    agents::report(&ctx, &id, &report("STOPPED", Some(3))).expect("report");
    let t0 = h
        .ok(
            "DescribeTasks",
            json!({"cluster": "c1", "tasks": [arns[0].clone()]}),
        )
        .await;
    let t0 = &t0["tasks"][0];
    assert_eq!(t0["lastStatus"], "STOPPED");
    assert_eq!(t0["desiredStatus"], "STOPPED");
    assert_eq!(t0["stopCode"], "EssentialContainerExited");
    assert_eq!(t0["containers"][0]["exitCode"], 3);
    assert!(t0["stoppedAt"].is_number());

    // StopTask on the other, placed task: it stays until the agent confirms.
    let stopped = h
        .ok(
            "StopTask",
            json!({"cluster": "c1", "task": arns[1].clone(), "reason": "maintenance"}),
        )
        .await;
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    assert_eq!(stopped["task"]["lastStatus"], "PENDING");
    tokio::task::block_in_place(|| s.tick()).expect("tick");
    let sent = rec.sent.lock().expect("lock").clone();
    let Some((_, ServerMessage::Desired { tasks, .. })) = sent.last() else {
        panic!("nothing sent")
    };
    assert!(
        tasks.is_empty(),
        "a task to stop leaves the set (the agent stops what the set leaves out): {tasks:?}"
    );
    let mut r1 = report("STOPPED", Some(143));
    r1.task_arn = arns[1].clone();
    r1.stop_code = None;
    agents::report(&ctx, &id, &r1).expect("report");
    let t1 = h
        .ok(
            "DescribeTasks",
            json!({"cluster": "c1", "tasks": [arns[1].clone()]}),
        )
        .await;
    assert_eq!(t1["tasks"][0]["stopCode"], "UserInitiated");
    assert_eq!(t1["tasks"][0]["stoppedReason"], "maintenance");
    assert_eq!(t1["tasks"][0]["lastStatus"], "STOPPED");

    // The agent goes away: the instance stays, disconnected.
    agents::disconnected(&ctx, &id).expect("disconnect");
    let ci = h
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c1", "containerInstances": [id.clone()]}),
        )
        .await;
    assert_eq!(
        ci["failures"].as_array().map(Vec::len),
        Some(1),
        "ids are container instance ids, not EC2 ids"
    );
}
