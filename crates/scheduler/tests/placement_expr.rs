//! The cluster query language: every subject and operator, and the error messages.
#![allow(clippy::unwrap_used)]

use berth_scheduler::placement::{parse_expression, AgentVersion, Facts, MAX_EXPRESSION_CHARS};

struct Inst {
    attrs: Vec<(&'static str, Option<&'static str>)>,
    id: &'static str,
    connected: bool,
    version: Option<&'static str>,
    registered: i64,
    groups: Vec<&'static str>,
}

impl Facts for Inst {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    fn ec2_instance_id(&self) -> &str {
        self.id
    }
    fn agent_connected(&self) -> bool {
        self.connected
    }
    fn agent_version(&self) -> Option<AgentVersion> {
        self.version.and_then(AgentVersion::parse)
    }
    fn registered_at(&self) -> i64 {
        self.registered
    }
    fn running_tasks_count(&self) -> u32 {
        self.groups.len() as u32
    }
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.groups.iter().any(|g| f(g))
    }
}

fn inst() -> Inst {
    Inst {
        attrs: vec![
            ("ecs.instance-type", Some("t2.small")),
            ("ecs.availability-zone", Some("us-east-1a")),
            ("ecs.os-type", Some("linux")),
            ("stack", Some("prod")),
            ("gpu-ready", None),
        ],
        id: "i-abcd1234",
        connected: true,
        version: Some("1.14.5"),
        // 2018-06-18T22:28:28Z
        registered: 1_529_360_908,
        groups: vec!["service:production", "family:web", "family:web"],
    }
}

fn eval(src: &str) -> bool {
    parse_expression(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .matches(&inst())
}

#[test]
fn attribute_operators() {
    assert!(eval("attribute:ecs.instance-type == t2.small"));
    assert!(eval("attribute:ecs.instance-type equals t2.small"));
    assert!(!eval("attribute:ecs.instance-type == t2.medium"));
    assert!(eval("attribute:ecs.instance-type != t2.medium"));
    assert!(eval("attribute:ecs.instance-type not_equals t2.medium"));
    assert!(eval(
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
    ));
    assert!(eval(
        "attribute:ecs.availability-zone in (us-east-1b, us-east-1a)"
    ));
    assert!(!eval(
        "attribute:ecs.availability-zone not_in [us-east-1a, us-east-1b]"
    ));
    assert!(eval("attribute:ecs.availability-zone !in [us-east-1c]"));
    assert!(eval("attribute:ecs.instance-type =~ t2.*"));
    assert!(eval("attribute:ecs.instance-type matches t2.*"));
    assert!(!eval("attribute:ecs.instance-type =~ g2.*"));
    assert!(eval("attribute:ecs.instance-type !~ g2.*"));
    assert!(eval("attribute:ecs.instance-type not_matches g2.*"));
    assert!(eval("attribute:stack exists"));
    assert!(eval("attribute:gpu-ready exists"));
    assert!(!eval("attribute:nope exists"));
    assert!(eval("attribute:nope !exists"));
    assert!(eval("attribute:nope not_exists"));
    assert!(eval("attribute:stack == 'prod'"));
    assert!(eval("attribute:stack == \"prod\""));
    assert!(eval("attribute:gpu-ready == ''"));
}

#[test]
fn missing_attribute_is_false_except_not_exists() {
    // ECS's example: `attribute:stack != prod` lists the instances that have `stack`.
    for e in [
        "attribute:nope == x",
        "attribute:nope != x",
        "attribute:nope in [x]",
        "attribute:nope not_in [x]",
        "attribute:nope =~ .*",
        "attribute:nope !~ x",
    ] {
        assert!(!eval(e), "{e}");
    }
}

#[test]
fn task_group_is_any_and_its_negation() {
    assert!(eval("task:group == service:production"));
    assert!(eval("task:group == family:web"));
    assert!(!eval("task:group == database"));
    assert!(eval("task:group != database"));
    assert!(!eval("task:group != family:web"));
    assert!(eval("not(task:group == database)"));
    assert!(eval("task:group in [database, family:web]"));
    assert!(eval("task:group =~ service:.*"));
    assert!(!eval("task:group !~ service:.*"));
    assert!(eval("task:group exists"));
    let empty = Inst {
        groups: vec![],
        ..inst()
    };
    assert!(!parse_expression("task:group exists")
        .unwrap()
        .matches(&empty));
    assert!(parse_expression("task:group != x").unwrap().matches(&empty));
}

#[test]
fn instance_subjects() {
    assert!(eval("ec2InstanceId == i-abcd1234"));
    assert!(eval("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']"));
    assert!(eval("ec2InstanceId =~ i-abcd.*"));
    assert!(!eval("ec2InstanceId !in ['i-abcd1234']"));
    assert!(eval("agentConnected == true"));
    assert!(!eval("agentConnected == false"));
    assert!(eval("agentConnected != false"));
    assert!(eval("agentConnected in [true]"));
    assert!(eval("agentVersion < 1.20.0"));
    assert!(eval("agentVersion >= 1.14.5"));
    assert!(eval("agentVersion == 1.14.5"));
    assert!(!eval("agentVersion > 1.14.5"));
    assert!(eval("agentVersion greater_than 1.9"));
    assert!(eval("agentVersion less_than_equal 1.14.5"));
    assert!(eval("registeredAt < 2018-06-19"));
    assert!(eval("registeredAt > 2018-06-18"));
    assert!(eval("registeredAt == 2018-06-18T22:28:28Z"));
    assert!(eval("registeredAt == 2018-06-18T22:28:28+00:00"));
    assert!(eval("registeredAt == 2018-06-18T22:28:28"));
    assert!(eval(
        "registeredAt greater_than_equal 2018-06-19T00:28:28+02:00"
    ));
    assert!(eval("runningTasksCount == 3"));
    assert!(eval("runningTasksCount > 2"));
    assert!(eval("runningTasksCount <= 3"));
    assert!(eval("runningTasksCount != 1"));
    assert!(eval("runningTasksCount less_than 4"));
}

#[test]
fn compound_expressions_and_precedence() {
    assert!(eval(
        "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d"
    ));
    assert!(eval("attribute:stack == dev or attribute:stack == prod"));
    assert!(eval("attribute:stack == dev || attribute:stack == prod"));
    assert!(!eval("attribute:stack == dev && attribute:stack == prod"));
    // `and` binds tighter than `or`.
    assert!(eval(
        "attribute:stack == prod or attribute:stack == dev and attribute:x exists"
    ));
    assert!(!eval(
        "(attribute:stack == prod or attribute:stack == dev) and attribute:x exists"
    ));
    assert!(eval("!(attribute:stack == dev)"));
    assert!(eval("not attribute:stack == dev"));
    assert!(eval(
        "NOT (attribute:stack == dev) AND attribute:stack == prod"
    ));
    assert!(eval("((attribute:stack == prod))"));
    assert!(eval("attribute:stack==prod&&task:group==family:web"));
}

#[test]
fn dependence_on_tasks() {
    assert!(!parse_expression("attribute:a == b")
        .unwrap()
        .depends_on_tasks());
    assert!(parse_expression("attribute:a == b or task:group == x")
        .unwrap()
        .depends_on_tasks());
    assert!(parse_expression("not runningTasksCount > 3")
        .unwrap()
        .depends_on_tasks());
}

fn error(src: &str) -> (usize, String) {
    let e = parse_expression(src).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "invalid placement constraint expression at position {}: ",
            e.position
        )),
        "{shown}"
    );
    (e.position, e.message)
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    let (p, m) = error("");
    assert_eq!(p, 1);
    assert!(m.contains("expected an expression"), "{m}");

    let (p, m) = error("attribute:ecs.instance-type t2.small");
    assert_eq!(p, 29);
    assert!(
        m.contains("expected an operator after 'attribute:ecs.instance-type'"),
        "{m}"
    );
    assert!(m.contains("found 't2.small'"), "{m}");

    let (p, m) = error("instance-type == t2.small");
    assert_eq!(p, 1);
    assert!(m.contains("expected a subject"), "{m}");

    let (p, m) = error("attribute:ecs.instance-type ==");
    assert_eq!(p, 31);
    assert!(m.contains("expected a value after '=='"), "{m}");

    let (p, m) = error("attribute:a in x");
    assert_eq!(p, 16);
    assert!(m.contains("expected a list like [a, b]"), "{m}");

    let (p, m) = error("attribute:a in [x, y");
    assert_eq!(p, 21);
    assert!(
        m.contains("expected ']' to close the list opened at position 16"),
        "{m}"
    );

    let (p, m) = error("(attribute:a == b");
    assert_eq!(p, 18);
    assert!(
        m.contains("expected ')' to close the '(' at position 1"),
        "{m}"
    );

    let (p, m) = error("attribute:a == b c");
    assert_eq!(p, 18);
    assert!(m.contains("expected 'and', 'or' or the end"), "{m}");

    let (p, m) = error("attribute:a == b and");
    assert_eq!(p, 21);
    assert!(m.contains("expected a subject"), "{m}");

    let (p, m) = error("agentVersion =~ 1.*");
    assert_eq!(p, 14);
    assert!(m.contains("cannot be used with 'agentVersion'"), "{m}");

    let (p, m) = error("ec2InstanceId exists");
    assert_eq!(p, 15);
    assert!(m.contains("valid operators"), "{m}");

    let (p, m) = error("registeredAt < yesterday");
    assert_eq!(p, 16);
    assert!(m.contains("expected a date"), "{m}");

    let (p, m) = error("agentVersion < one");
    assert_eq!(p, 16);
    assert!(m.contains("expected an agent version"), "{m}");

    let (p, m) = error("runningTasksCount > -1");
    assert_eq!(p, 21);
    assert!(m.contains("whole number"), "{m}");

    let (p, m) = error("attribute:a =~ (x|y)");
    assert_eq!(p, 16);
    assert!(m.contains("groups"), "{m}");

    let (p, m) = error("attribute:a =~ 'ab{2}'");
    assert_eq!(p, 19);
    assert!(m.contains("counted repetition"), "{m}");

    let (p, m) = error("attribute:a == 'unclosed");
    assert_eq!(p, 16);
    assert!(m.contains("not closed"), "{m}");

    let (p, m) = error("attribute: == x");
    assert_eq!(p, 11);
    assert!(m.contains("attribute name"), "{m}");

    let (p, m) = error("attribute:a$b == x");
    assert_eq!(p, 12);
    assert!(m.contains("'$' cannot be part of an attribute name"), "{m}");
}

#[test]
fn length_limit() {
    let long = format!("attribute:a == {}", "x".repeat(MAX_EXPRESSION_CHARS));
    let (p, m) = error(&long);
    assert_eq!(p, MAX_EXPRESSION_CHARS + 1);
    assert!(m.contains("at most 2000"), "{m}");
    let fits = format!("attribute:a == {}", "x".repeat(MAX_EXPRESSION_CHARS - 15));
    assert_eq!(fits.chars().count(), MAX_EXPRESSION_CHARS);
    assert!(parse_expression(&fits).is_ok());
}

#[test]
fn source_is_kept() {
    let e = parse_expression("attribute:a == b").unwrap();
    assert_eq!(e.source(), "attribute:a == b");
    assert_eq!(e.to_string(), "attribute:a == b");
}
