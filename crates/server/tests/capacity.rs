//! Managed capacity through the API: placement strategies and constraints on
//! running instances, the planner's launches for what fits nowhere, batching,
//! failed offerings, GPUs by id and scale-in of idle instances. A recording
//! launcher stands in for the instance provider; agents join by direct calls.

mod common;

use berth_control::agents;
use berth_protocol::{ServerMessage, TaskReport};
use common::sched::{join_all, scheduler, scheduler_with, Recorder};
use common::{provider, Harness};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

fn tick(s: &berth_control::scheduler::Scheduler) -> berth_control::scheduler::TickReport {
    tokio::task::block_in_place(|| s.tick()).expect("tick")
}

/// A cluster `c1` with capacity provider `mi` (2–8 vCPUs, ≥ 4 GiB, three
/// subnets in three zones, `scale_in_after` as given) and task definitions.
async fn cluster(h: &Harness, scale_in_after: Option<i64>) {
    h.ok("CreateCluster", json!({"clusterName": "c1"})).await;
    let mut p = provider("mi", "c1");
    p["managedInstancesProvider"]["instanceLaunchTemplate"]["networkConfiguration"]["subnets"] =
        json!(["subnet-0000000a", "subnet-0000000b", "subnet-0000000c"]);
    if let Some(after) = scale_in_after {
        p["managedInstancesProvider"]["infrastructureOptimization"] =
            json!({"scaleInAfter": after});
    }
    h.ok("CreateCapacityProvider", p).await;
    h.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "c1", "capacityProviders": ["mi"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "mi"}]}),
    )
    .await;
    td(h, "small", 256, 512, json!([])).await;
}

async fn td(h: &Harness, family: &str, cpu: u32, memory: u32, ports: Value) {
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": family, "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "networkMode": "host",
               "containerDefinitions": [{"name": "app", "image": "busybox", "cpu": cpu,
                                         "memory": memory, "portMappings": ports}]}),
    )
    .await;
}

async fn run(h: &Harness, body: Value) -> Vec<String> {
    let mut body = body;
    body["cluster"] = json!("c1");
    let r = h.ok("RunTask", body).await;
    r["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["taskArn"].as_str().map(String::from))
        .collect()
}

async fn describe(h: &Harness, arns: &[String]) -> Vec<Value> {
    let mut out = vec![];
    for chunk in arns.chunks(100) {
        let r = h
            .ok("DescribeTasks", json!({"cluster": "c1", "tasks": chunk}))
            .await;
        out.extend(r["tasks"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// Container instance ARN of each task (None while unplaced).
async fn homes(h: &Harness, arns: &[String]) -> Vec<Option<String>> {
    describe(h, arns)
        .await
        .iter()
        .map(|t| t["containerInstanceArn"].as_str().map(String::from))
        .collect()
}

/// Launches one instance per run of `family` tasks in `count` and lets it join.
async fn fleet(h: &Harness, s: &berth_control::scheduler::Scheduler, rec: &Recorder, n: usize) {
    // One big enough task per instance launches `n` instances; they join and
    // the placeholder tasks are stopped, leaving `n` empty instances.
    td(h, "filler", 2048, 6000, json!([])).await;
    let arns = run(
        h,
        json!({"taskDefinition": "filler", "count": n, "group": "filler",
               "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    tick(s);
    assert_eq!(rec.launches.lock().expect("lock").len(), n);
    join_all(h, rec);
    tick(s);
    for a in &arns {
        h.ok(
            "StopTask",
            json!({"cluster": "c1", "task": a, "reason": "filler"}),
        )
        .await;
    }
    let ctx = h.state.ctx.clone();
    for (t, home) in arns.iter().zip(homes(h, &arns).await) {
        let home = home.expect("placed");
        let id = instance_of(h, &home).await;
        let report = TaskReport {
            task_arn: t.clone(),
            last_status: "STOPPED".into(),
            ..Default::default()
        };
        agents::report(&ctx, &id, &report).expect("report");
    }
}

async fn instance_of(h: &Harness, ci_arn: &str) -> String {
    let r = h
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c1", "containerInstances": [ci_arn]}),
        )
        .await;
    r["containerInstances"][0]["ec2InstanceId"]
        .as_str()
        .expect("an instance id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_and_constraints_choose_among_running_instances() {
    let h = Harness::new();
    cluster(&h, Some(-1)).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    fleet(&h, &s, &rec, 3).await;
    let launched = rec.launches.lock().expect("lock").len();

    // binpack on memory: every task on one instance.
    let a = run(
        &h,
        json!({"taskDefinition": "small", "count": 4,
               "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
    )
    .await;
    tick(&s);
    let on: BTreeSet<_> = homes(&h, &a).await.into_iter().collect();
    assert_eq!(on.len(), 1, "binpack packs one instance: {on:?}");
    let packed = on.into_iter().next().flatten();

    // spread on instanceId: three tasks of a new group go to three instances.
    let b = run(
        &h,
        json!({"taskDefinition": "small", "count": 3, "group": "spread",
               "placementStrategy": [{"type": "spread", "field": "instanceId"}]}),
    )
    .await;
    tick(&s);
    let on: BTreeSet<_> = homes(&h, &b).await.into_iter().collect();
    assert_eq!(on.len(), 3, "spread uses every instance: {on:?}");

    // spread over zones: the fleet's three instances are in three zones.
    let c = run(
        &h,
        json!({"taskDefinition": "small", "count": 3, "group": "zones",
               "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
    )
    .await;
    tick(&s);
    let zones: BTreeSet<_> = describe(&h, &c)
        .await
        .iter()
        .map(|t| t["availabilityZone"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(zones.len(), 3, "one task per zone: {zones:?}");

    // distinctInstance: four tasks of one group on three instances: the fourth waits
    // and capacity is planned for it.
    let d = run(
        &h,
        json!({"taskDefinition": "small", "count": 4, "group": "distinct",
               "placementConstraints": [{"type": "distinctInstance"}]}),
    )
    .await;
    tick(&s);
    let placed: Vec<_> = homes(&h, &d).await.into_iter().flatten().collect();
    assert_eq!(placed.len(), 3);
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(
        rec.launches.lock().expect("lock").len(),
        launched + 1,
        "one more instance for the fourth distinct task"
    );

    // memberOf a custom attribute (PutAttributes) on one instance (one with
    // room for two more: not the one binpack filled).
    let target = placed
        .iter()
        .find(|p| Some(*p) != packed.as_ref())
        .cloned()
        .expect("an instance other than the packed one");
    h.ok(
        "PutAttributes",
        json!({"cluster": "c1", "attributes": [{"name": "stack", "value": "prod",
               "targetType": "container-instance", "targetId": target}]}),
    )
    .await;
    let e = run(
        &h,
        json!({"taskDefinition": "small", "count": 2,
               "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack == prod"}]}),
    )
    .await;
    tick(&s);
    for home in homes(&h, &e).await {
        assert_eq!(home.as_deref(), Some(target.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_placement_is_refused_with_the_position() {
    let h = Harness::new();
    cluster(&h, None).await;
    let (status, body) = h
        .call(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "small",
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:a =="}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "InvalidParameterException");
    let msg = body["message"].as_str().unwrap_or("");
    assert!(msg.contains("placementConstraints[0]"), "{msg}");
    let (status, body) = h
        .call(
            "RunTask",
            json!({"cluster": "c1", "taskDefinition": "small",
                   "placementStrategy": [{"type": "binpack", "field": "disk"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = h
        .call(
            "RegisterTaskDefinition",
            json!({"family": "bad", "containerDefinitions": [{"name": "a", "image": "x", "memory": 8}],
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Nothing was stored.
    let r = h.ok("ListTasks", json!({"cluster": "c1"})).await;
    assert_eq!(r["taskArns"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_keep_tasks_apart() {
    let h = Harness::new();
    cluster(&h, Some(-1)).await;
    td(&h, "web80", 256, 256, json!([{"containerPort": 80}])).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    fleet(&h, &s, &rec, 2).await;
    let a = run(&h, json!({"taskDefinition": "web80", "count": 3})).await;
    tick(&s);
    let on: Vec<_> = homes(&h, &a).await;
    let placed: Vec<_> = on.iter().flatten().collect();
    assert_eq!(
        placed.len(),
        2,
        "port 80 is free on two instances only: {on:?}"
    );
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_of_tasks_launches_the_planned_fleet() {
    let h = Harness::new();
    cluster(&h, None).await;
    td(&h, "cpu", 2048, 1024, json!([])).await;
    td(&h, "mem", 256, 6144, json!([])).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let mut arns = run(&h, json!({"taskDefinition": "cpu", "count": 10})).await;
    arns.extend(run(&h, json!({"taskDefinition": "mem", "count": 10})).await);
    let r = tick(&s);
    assert_eq!(r.waiting, 20);
    // They wait in PROVISIONING, saying why.
    let t = &describe(&h, &arns[..1]).await[0];
    assert_eq!(t["lastStatus"], "PROVISIONING");
    let why = t["containers"][0]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(why.starts_with("Waiting for capacity"), "{t}");
    tick(&s);
    let t = &describe(&h, &arns[..1]).await[0];
    let why = t["containers"][0]["reason"].as_str().unwrap_or("");
    assert!(why.contains("is starting for this task"), "{why}");

    // The same planner, offline, over the same provider and tasks.
    let req = {
        let mut r = offline_request(vec![
            group("g0", 2048, 1024, 10),
            group("g1", 256, 6144, 10),
        ]);
        r.availability_zones = vec![
            "us-east-1a".into(),
            "us-east-1b".into(),
            "us-east-1c".into(),
        ];
        r
    };
    let plan = berth_scheduler::plan::plan(berth_catalog::Catalog::embedded(), &req).expect("plan");
    let mut planned: BTreeMap<String, usize> = BTreeMap::new();
    for i in &plan.instances {
        *planned.entry(i.instance_type.clone()).or_insert(0) += 1;
    }
    assert_eq!(rec.launched_types(), planned, "the launches are the plan");
    // Spread over the provider's zones.
    let zones: BTreeSet<String> = rec
        .launches
        .lock()
        .expect("lock")
        .iter()
        .map(|l| l.subnet.clone())
        .collect();
    assert_eq!(zones.len(), plan.instances.len().min(3));

    // Once they join, every task fits: nothing more is launched.
    join_all(&h, &rec);
    let r = tick(&s);
    assert_eq!(r.placed, 20, "{r:?}");
    assert!(r.launched.is_empty());
    assert!(homes(&h, &arns).await.iter().all(Option::is_some));
    for t in describe(&h, &arns).await {
        assert!(
            t["containers"][0].get("reason").is_none(),
            "placed: no waiting reason: {t}"
        );
    }
}

/// The planner's request for `groups` under the provider `cluster` creates
/// (2–8 vCPUs, at least 4 GiB), as the scheduler makes it.
fn offline_request(
    groups: Vec<berth_scheduler::plan::TaskGroup>,
) -> berth_scheduler::plan::PlanRequest {
    berth_scheduler::plan::PlanRequest::new(
        "us-east-1",
        berth_model::ecs::InstanceRequirementsRequest {
            v_cpu_count: Some(berth_model::ecs::VCpuCountRangeRequest {
                min: Some(2),
                max: Some(8),
            }),
            memory_mib: Some(berth_model::ecs::MemoryMiBRequest {
                min: Some(4096),
                max: None,
            }),
            ..Default::default()
        },
        groups,
    )
}

fn group(name: &str, cpu: u32, memory: u64, count: u32) -> berth_scheduler::plan::TaskGroup {
    berth_scheduler::plan::TaskGroup {
        name: name.into(),
        cpu,
        memory_mib: memory,
        gpu: 0,
        count,
        architecture: berth_model::ecs::CPUArchitecture::X8664,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tasks_are_batched_before_planning() {
    let h = Harness::new();
    cluster(&h, None).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler_with(&h, &rec, |c| {
        c.batch_idle = Duration::from_secs(1);
        c.batch_max = Duration::from_secs(5);
    });
    run(&h, json!({"taskDefinition": "small", "count": 2})).await;
    let r = tick(&s);
    assert!(r.launched.is_empty(), "the batch waits for more: {r:?}");
    assert!(r.next_tick.is_some_and(|n| n <= 1.0), "{r:?}");
    h.clock.advance(Duration::from_millis(600));
    run(&h, json!({"taskDefinition": "small", "count": 2})).await;
    assert!(
        tick(&s).launched.is_empty(),
        "a new task restarts the idle window"
    );
    h.clock.advance(Duration::from_millis(600));
    assert!(tick(&s).launched.is_empty());
    h.clock.advance(Duration::from_millis(500));
    let r = tick(&s);
    assert_eq!(r.launched.len(), 1, "one instance for the four: {r:?}");
    // A steady trickle (each task restarting the idle window) is planned
    // for once the first has waited batch_max.
    let mut launched = false;
    for i in 0..12 {
        h.clock.advance(Duration::from_millis(600));
        // distinctInstance: only the first of the group fits the instance on its way.
        run(
            &h,
            json!({"taskDefinition": "small", "count": 1, "group": "trickle",
                   "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
        if !tick(&s).launched.is_empty() {
            assert!(i >= 7, "launched after {i} steps, before batch_max");
            launched = true;
            break;
        }
    }
    assert!(launched, "batch_max caps the wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_launch_takes_the_type_out_for_a_while() {
    let h = Harness::new();
    cluster(&h, None).await;
    // What the planner picks for one small task, offline.
    let mut req = offline_request(vec![group("g0", 256, 512, 1)]);
    let first = berth_scheduler::plan::plan(berth_catalog::Catalog::embedded(), &req)
        .expect("plan")
        .instances[0]
        .instance_type
        .clone();
    let rec = Arc::new(Recorder::default());
    rec.failing.lock().expect("lock").push(first.clone());
    let s = scheduler(&h, &rec);
    run(&h, json!({"taskDefinition": "small", "count": 1})).await;
    let r = tick(&s);
    assert!(r.launched.is_empty(), "{first} fails: {r:?}");
    let r = tick(&s);
    assert_eq!(r.launched.len(), 1, "the next plan avoids {first}: {r:?}");
    let other = rec.launches.lock().expect("lock")[0].instance_type.clone();
    req.unavailable.insert(first.clone());
    let second = berth_scheduler::plan::plan(berth_catalog::Catalog::embedded(), &req)
        .expect("plan")
        .instances[0]
        .instance_type
        .clone();
    assert_eq!(other, second, "the planner's next best");
    // After unavailable_for, the type is planned with again.
    h.clock
        .advance(berth_control::scheduler::DEFAULT_UNAVAILABLE_FOR + Duration::from_secs(1));
    rec.failing.lock().expect("lock").clear();
    td(&h, "big", 2048, 7000, json!([])).await;
    run(
        &h,
        json!({"taskDefinition": "small", "count": 1, "group": "x",
                   "placementConstraints": [{"type": "memberOf",
                       "expression": format!("attribute:ecs.instance-type == {first}")}]}),
    )
    .await;
    tick(&s);
    let types = rec.launched_types();
    assert!(types.contains_key(&first), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_tasks_get_whole_gpus_by_id() {
    let h = Harness::new();
    h.ok("CreateCluster", json!({"clusterName": "c1"})).await;
    let mut p = provider("mi", "c1");
    p["managedInstancesProvider"]["instanceLaunchTemplate"]["instanceRequirements"] = json!({
        "vCpuCount": {"min": 4, "max": 64}, "memoryMiB": {"min": 16384},
        "acceleratorTypes": ["gpu"], "acceleratorManufacturers": ["nvidia"],
        "acceleratorCount": {"min": 1}
    });
    h.ok("CreateCapacityProvider", p).await;
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "train", "requiresCompatibilities": ["MANAGED_INSTANCES"], "networkMode": "host",
               "containerDefinitions": [{"name": "cuda", "image": "busybox", "memory": 1024,
                                         "resourceRequirements": [{"type": "GPU", "value": "1"}]}]}),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let arns = run(
        &h,
        json!({"taskDefinition": "train", "count": 2,
               "capacityProviderStrategy": [{"capacityProvider": "mi"}]}),
    )
    .await;
    tick(&s);
    let launches = rec.launches.lock().expect("lock").clone();
    assert!(!launches.is_empty());
    let gpus: u32 = launches.iter().map(|l| l.gpus).sum();
    assert!(gpus >= 2, "GPU instances for GPU tasks: {launches:?}");
    join_all(&h, &rec);
    tick(&s);
    let tasks = describe(&h, &arns).await;
    let mut held = BTreeSet::new();
    for t in &tasks {
        let ids = t["containers"][0]["gpuIds"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(ids.len(), 1, "{t}");
        let home = t["containerInstanceArn"].as_str().unwrap_or("").to_string();
        assert!(
            held.insert((home, ids[0].as_str().unwrap_or("").to_string())),
            "a GPU is given once"
        );
    }
    // The desired set carries them to the agent.
    let sent = rec.sent.lock().expect("lock").clone();
    let with_gpus = sent
        .iter()
        .filter_map(|(_, m)| match m {
            ServerMessage::Desired { tasks, .. } => Some(tasks),
            _ => None,
        })
        .flatten()
        .filter(|t| t.gpu_ids.get("cuda").is_some_and(|g| g.len() == 1))
        .count();
    assert!(with_gpus >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desired_set_carries_a_tasks_volumes_to_the_agent() {
    let h = Harness::new();
    cluster(&h, None).await;
    h.ok(
        "RegisterTaskDefinition",
        json!({"family": "shipper", "requiresCompatibilities": ["MANAGED_INSTANCES"],
               "volumes": [{"name": "logs", "host": {"sourcePath": "/var/log"}}, {"name": "scratch"}],
               "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64,
                   "mountPoints": [{"sourceVolume": "logs", "containerPath": "/logs", "readOnly": true}]}]}),
    )
    .await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    run(&h, json!({"taskDefinition": "shipper", "count": 1})).await;
    tick(&s);
    join_all(&h, &rec);
    tick(&s);
    let sent = rec.sent.lock().expect("lock").clone();
    let spec = sent
        .iter()
        .filter_map(|(_, m)| match m {
            ServerMessage::Desired { tasks, .. } => Some(tasks),
            _ => None,
        })
        .flatten()
        .find(|t| t.family == "shipper")
        .cloned()
        .expect("the task reached its agent");
    let volumes: Vec<(Option<String>, Option<String>)> = spec
        .volumes
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.host.as_ref().and_then(|h| h.source_path.clone()),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        vec![
            (Some("logs".into()), Some("/var/log".into())),
            (Some("scratch".into()), None)
        ]
    );
    assert_eq!(
        spec.containers[0].mount_points.as_ref().map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_scale_in_after_scale_in_after() {
    let h = Harness::new();
    cluster(&h, Some(60)).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    let arns = run(&h, json!({"taskDefinition": "small", "count": 1})).await;
    tick(&s);
    let ids = join_all(&h, &rec);
    let (id, ci) = ids
        .iter()
        .next()
        .map(|(a, b)| (a.clone(), b.clone()))
        .expect("one");
    tick(&s);
    // Busy: never scaled in.
    h.clock.advance(Duration::from_secs(600));
    assert!(tick(&s).terminated.is_empty());
    // Idle from now on.
    let report = TaskReport {
        task_arn: arns[0].clone(),
        last_status: "STOPPED".into(),
        ..Default::default()
    };
    agents::report(&h.state.ctx, &id, &report).expect("report");
    assert!(tick(&s).terminated.is_empty(), "idle, but not for 60 s yet");
    h.clock.advance(Duration::from_secs(30));
    assert!(tick(&s).terminated.is_empty());
    // A task arriving meanwhile cancels it.
    let again = run(&h, json!({"taskDefinition": "small", "count": 1})).await;
    tick(&s);
    h.clock.advance(Duration::from_secs(45));
    assert!(tick(&s).terminated.is_empty(), "busy again");
    let report = TaskReport {
        task_arn: again[0].clone(),
        last_status: "STOPPED".into(),
        ..Default::default()
    };
    agents::report(&h.state.ctx, &id, &report).expect("report");
    tick(&s);
    h.clock.advance(Duration::from_secs(59));
    assert!(tick(&s).terminated.is_empty(), "the idle time starts again");
    h.clock.advance(Duration::from_secs(2));
    let r = tick(&s);
    assert_eq!(r.terminated, vec![id.clone()]);
    assert_eq!(*rec.terminated.lock().expect("lock"), vec![id.clone()]);
    let d = h
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c1", "containerInstances": [ci]}),
        )
        .await;
    assert_eq!(d["containerInstances"][0]["status"], "INACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_can_be_turned_off() {
    let h = Harness::new();
    cluster(&h, Some(-1)).await;
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    fleet(&h, &s, &rec, 1).await;
    tick(&s);
    h.clock.advance(Duration::from_secs(100_000));
    assert!(tick(&s).terminated.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_plans_with_spot_capable_types_and_avoids_an_interrupted_offering() {
    let h = Harness::new();
    h.ok("CreateCluster", json!({"clusterName": "c1"})).await;
    let mut p = provider("mi", "c1");
    p["managedInstancesProvider"]["instanceLaunchTemplate"]["capacityOptionType"] = json!("SPOT");
    h.ok("CreateCapacityProvider", p).await;
    h.ok(
        "PutClusterCapacityProviders",
        json!({"cluster": "c1", "capacityProviders": ["mi"],
               "defaultCapacityProviderStrategy": [{"capacityProvider": "mi"}]}),
    )
    .await;
    td(&h, "small", 256, 512, json!([])).await;
    // What the planner picks for spot, offline.
    let mut req = offline_request(vec![group("g0", 256, 512, 1)]);
    req.capacity = berth_scheduler::plan::CapacityOption::Spot;
    let first = berth_scheduler::plan::plan(berth_catalog::Catalog::embedded(), &req)
        .expect("plan")
        .instances[0]
        .instance_type
        .clone();
    let catalog = berth_catalog::Catalog::embedded();
    assert!(
        catalog.get(&first).is_some_and(|t| t.spot_supported),
        "{first}"
    );
    // That spot offering was just interrupted: the scheduler avoids it.
    let rec = Arc::new(Recorder::default());
    let s = scheduler(&h, &rec);
    s.offering_unavailable(&first);
    run(&h, json!({"taskDefinition": "small", "count": 1})).await;
    tick(&s);
    let launched = rec.launches.lock().expect("lock")[0].instance_type.clone();
    assert_ne!(launched, first);
    assert!(
        catalog.get(&launched).is_some_and(|t| t.spot_supported),
        "{launched}"
    );
}
