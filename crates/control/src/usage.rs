//! What tasks reserve, and what an instance has left.

use berth_model::ecs::{ContainerInstance, Resource, Task};
use berth_store::TaskLoad;

/// CPU units and MiB a task reserves: the task-level values when set, else
/// the sum over its containers (memory, else memoryReservation).
pub fn task_needs(t: &Task) -> (u32, u64) {
    needs(
        t.cpu.as_deref(),
        t.memory.as_deref(),
        t.containers.iter().flatten().map(|c| {
            (
                c.cpu.as_deref(),
                c.memory.as_deref(),
                c.memory_reservation.as_deref(),
            )
        }),
    )
}

/// [`task_needs`] of a task as [`berth_store::Tx::task_loads`] reads it.
pub fn load_needs(t: &TaskLoad) -> (u32, u64) {
    needs(
        t.cpu.as_deref(),
        t.memory.as_deref(),
        t.containers.iter().flatten().map(|c| {
            (
                c.cpu.as_deref(),
                c.memory.as_deref(),
                c.memory_reservation.as_deref(),
            )
        }),
    )
}

/// The task-level CPU and memory when they parse, else the sums over the
/// containers' `(cpu, memory, memoryReservation)`.
fn needs<'a>(
    cpu: Option<&str>,
    memory: Option<&str>,
    containers: impl Iterator<Item = (Option<&'a str>, Option<&'a str>, Option<&'a str>)> + Clone,
) -> (u32, u64) {
    let cpu = cpu.and_then(|c| c.parse::<u32>().ok()).unwrap_or_else(|| {
        containers
            .clone()
            .filter_map(|(c, _, _)| c?.parse::<u32>().ok())
            .sum()
    });
    let memory = memory
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or_else(|| {
            containers
                .filter_map(|(_, m, r)| m.or(r).and_then(|m| m.parse::<u64>().ok()))
                .sum()
        });
    (cpu, memory)
}

fn integer(list: &[Resource], name: &str) -> i64 {
    list.iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map(|r| i64::from(r.integer_value))
        .unwrap_or(0)
}

/// An instance's registered CPU units and MiB.
pub fn registered(ci: &ContainerInstance) -> (i64, i64) {
    let list = ci.registered_resources.as_deref().unwrap_or_default();
    (integer(list, "CPU"), integer(list, "MEMORY"))
}

/// The ECS resource list for CPU, MEMORY, PORTS and PORTS_UDP (and GPU when present).
pub fn resource_list(cpu: i64, memory: i64, gpus: &[String]) -> Vec<Resource> {
    let int = |name: &str, v: i64| Resource {
        name: Some(name.into()),
        r#type: Some("INTEGER".into()),
        integer_value: v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        ..Default::default()
    };
    let set = |name: &str| Resource {
        name: Some(name.into()),
        r#type: Some("STRINGSET".into()),
        string_set_value: Some(vec![]),
        ..Default::default()
    };
    let mut out = vec![
        int("CPU", cpu),
        int("MEMORY", memory),
        set("PORTS"),
        set("PORTS_UDP"),
    ];
    if !gpus.is_empty() {
        out.push(Resource {
            name: Some("GPU".into()),
            r#type: Some("STRINGSET".into()),
            string_set_value: Some(gpus.to_vec()),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::ecs::Container;

    #[test]
    fn task_level_values_win_else_containers_add_up() {
        let c = |cpu: &str, mem: Option<&str>, res: Option<&str>| Container {
            cpu: Some(cpu.into()),
            memory: mem.map(String::from),
            memory_reservation: res.map(String::from),
            ..Default::default()
        };
        let mut t = Task {
            containers: Some(vec![c("128", Some("256"), None), c("0", None, Some("64"))]),
            ..Default::default()
        };
        assert_eq!(task_needs(&t), (128, 320));
        t.cpu = Some("1024".into());
        t.memory = Some("2048".into());
        assert_eq!(task_needs(&t), (1024, 2048));
    }

    #[test]
    fn resources_round_trip() {
        let ci = ContainerInstance {
            registered_resources: Some(resource_list(2048, 7680, &[])),
            ..Default::default()
        };
        assert_eq!(registered(&ci), (2048, 7680));
    }
}
