//! The scheduler without an instance provider or agents: a recording
//! launcher, and agents that join and say hello by direct calls.

use super::Harness;
use berth_control::agents::{self, Admission};
use berth_control::scheduler::{LaunchRequest, Launcher, Scheduler, SchedulerConfig};
use berth_control::AgentLink;
use berth_protocol::{Hello, Resources, ServerMessage, VERSION};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Records launches, terminations and messages; launches of the types in
/// `failing` fail.
#[derive(Default)]
pub struct Recorder {
    pub launches: Mutex<Vec<LaunchRequest>>,
    pub sent: Mutex<Vec<(String, ServerMessage)>>,
    pub next: Mutex<u32>,
    pub terminated: Mutex<Vec<String>>,
    pub failing: Mutex<Vec<String>>,
}

impl Launcher for Recorder {
    fn launch(&self, request: &LaunchRequest) -> Result<(), String> {
        if self
            .failing
            .lock()
            .map_err(|e| e.to_string())?
            .contains(&request.instance_type)
        {
            return Err(format!(
                "InsufficientInstanceCapacity: no {} capacity",
                request.instance_type
            ));
        }
        self.launches
            .lock()
            .map_err(|e| e.to_string())?
            .push(request.clone());
        Ok(())
    }
    fn availability_zone(&self, subnet: &str) -> String {
        match subnet {
            "subnet-0000000b" => "us-east-1b".into(),
            "subnet-0000000c" => "us-east-1c".into(),
            _ => "us-east-1a".into(),
        }
    }
    fn new_instance_id(&self) -> String {
        let mut n = self.next.lock().expect("lock");
        *n += 1;
        format!("i-{:017x}", *n)
    }
    fn terminate(&self, instance_id: &str) -> Result<(), String> {
        self.terminated
            .lock()
            .map_err(|e| e.to_string())?
            .push(instance_id.to_string());
        Ok(())
    }
}

impl AgentLink for Recorder {
    fn send(&self, instance_id: &str, message: ServerMessage) -> bool {
        self.sent
            .lock()
            .expect("lock")
            .push((instance_id.to_string(), message));
        true
    }
}

impl Recorder {
    /// The instance types launched so far, with how many of each.
    pub fn launched_types(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for l in self.launches.lock().expect("lock").iter() {
            *out.entry(l.instance_type.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// A scheduler over the harness' store and clock that plans at once (no
/// batching window).
pub fn scheduler(h: &Harness, rec: &Arc<Recorder>) -> Scheduler {
    scheduler_with(h, rec, |_| {})
}

/// [`scheduler`] with its configuration changed by `f`.
pub fn scheduler_with(
    h: &Harness,
    rec: &Arc<Recorder>,
    f: impl FnOnce(&mut SchedulerConfig),
) -> Scheduler {
    let mut config = SchedulerConfig {
        architecture: Some(if cfg!(target_arch = "aarch64") {
            berth_catalog::Architecture::Arm64
        } else {
            berth_catalog::Architecture::X86_64
        }),
        // Plan at the first tick: batching is tested on its own.
        batch_idle: std::time::Duration::ZERO,
        ..SchedulerConfig::new(
            "http://127.0.0.1:1".into(),
            "/bin/true".into(),
            std::env::temp_dir(),
        )
    };
    f(&mut config);
    Scheduler::new(h.state.ctx.clone(), rec.clone(), rec.clone(), config)
}

/// An agent's hello.
pub fn hello(instance_id: &str, cpu: u32, memory_mib: u64) -> Hello {
    Hello {
        protocol: VERSION,
        instance_id: instance_id.into(),
        agent_version: "test".into(),
        runtime: "runc".into(),
        resources: Resources {
            cpu,
            memory_mib,
            gpus: vec![],
        },
        attributes: Default::default(),
        tasks: vec![],
        generation: 0,
    }
}

/// Every launched instance's agent joins and says hello with what its launch
/// asked for (its type's CPU units, memory less the reservation, its GPUs),
/// as `berth agent` does. Returns their container instance ARNs by instance id.
pub fn join_all(h: &Harness, rec: &Recorder) -> BTreeMap<String, String> {
    let ctx = h.state.ctx.clone();
    let mut out = BTreeMap::new();
    for l in rec.launches.lock().expect("lock").iter() {
        let token = l
            .agent_env
            .iter()
            .find(|(k, _)| k == "BERTH_JOIN_TOKEN")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        match agents::admit(&ctx, &l.instance_id, &token) {
            Ok(Admission::Joined { .. }) => {}
            _ => continue, // joined before
        }
        let arg = |flag: &str| -> String {
            let i = l.agent_args.iter().position(|a| a == flag).expect(flag);
            l.agent_args[i + 1].clone()
        };
        let mut hi = hello(
            &l.instance_id,
            arg("--cpu").parse().expect("cpu"),
            arg("--memory").parse().expect("memory"),
        );
        let gpus: u32 = arg("--gpus").parse().expect("gpus");
        hi.resources.gpus = (0..gpus).map(|i| i.to_string()).collect();
        hi.attributes
            .insert("ecs.instance-type".into(), l.instance_type.clone());
        hi.attributes
            .insert("ecs.availability-zone".into(), arg("--availability-zone"));
        hi.attributes.insert("ecs.os-type".into(), "linux".into());
        let (arn, _, _) = agents::hello(&ctx, &hi).expect("hello");
        out.insert(l.instance_id.clone(), arn);
    }
    out
}

/// Every task of cluster `c1` not yet STOPPED, as DescribeTasks shows it.
pub async fn live_tasks(h: &Harness) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut out = vec![];
    for desired in ["RUNNING", "STOPPED"] {
        let arns = h
            .ok(
                "ListTasks",
                json!({"cluster": "c1", "desiredStatus": desired, "maxResults": 100}),
            )
            .await["taskArns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for chunk in arns.chunks(100) {
            let d = h
                .ok("DescribeTasks", json!({"cluster": "c1", "tasks": chunk}))
                .await;
            out.extend(
                d["tasks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t["lastStatus"] != "STOPPED"),
            );
        }
    }
    out
}

/// The EC2 instance id of a container instance of cluster `c1`.
pub async fn instance_id(h: &Harness, ci: &str) -> String {
    let r = h
        .ok(
            "DescribeContainerInstances",
            serde_json::json!({"cluster": "c1", "containerInstances": [ci]}),
        )
        .await;
    r["containerInstances"][0]["ec2InstanceId"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Connected agents: placed tasks run, tasks to stop stop. `silent`
/// instances do nothing.
pub async fn agents_act(h: &Harness, silent: &[String]) {
    for t in live_tasks(h).await {
        let Some(ci) = t["containerInstanceArn"].as_str() else {
            continue;
        };
        let id = instance_id(h, ci).await;
        if silent.contains(&id) {
            continue;
        }
        let status = if t["desiredStatus"] == "STOPPED" {
            "STOPPED"
        } else {
            "RUNNING"
        };
        let r = berth_protocol::TaskReport {
            task_arn: t["taskArn"].as_str().unwrap_or("").into(),
            last_status: status.into(),
            started_at: Some(1.0),
            ..Default::default()
        };
        agents::report(&h.state.ctx, &id, &r).expect("report");
    }
}
