//! The ECS cluster query language: the expressions of `memberOf` placement
//! constraints (and of ListContainerInstances' `filter`).
//!
//! # Syntax (as ECS documents it)
//!
//! ```text
//! expression := or
//! or         := and (("or" | "||") and)*
//! and        := unary (("and" | "&&") unary)*
//! unary      := ("not" | "!") unary | "(" expression ")" | subject operator [argument]
//! ```
//!
//! `not` binds tighter than `and`, which binds tighter than `or`; parentheses
//! group (`not(task:group == database)`). Keywords and word operators are
//! case-insensitive.
//!
//! | subject | operators |
//! |---|---|
//! | `attribute:NAME` | `==` `!=` `in` `!in` `=~` `!~` `exists` `!exists` |
//! | `task:group` | `==` `!=` `in` `!in` `=~` `!~` `exists` `!exists` |
//! | `ec2InstanceId`, `agentConnected` | `==` `!=` `in` `!in` `=~` `!~` |
//! | `agentVersion`, `registeredAt`, `runningTasksCount` | `==` `!=` `>` `>=` `<` `<=` |
//!
//! Every operator also has its word form: `equals`, `not_equals`,
//! `greater_than`, `greater_than_equal`, `less_than`, `less_than_equal`,
//! `exists`, `not_exists`, `in`, `not_in`, `matches`, `not_matches`.
//! An argument is a bare word (up to white space, `)`, `&&` or `||`) or a quoted string
//! (`'...'` or `"..."`); `in`/`not_in` take a list `[a, b]` (ECS's form) or
//! `(a, b)`. Patterns of `=~`/`!~` are Java-style regular expressions matched
//! against the whole value (see `pattern.rs` for the supported subset).
//! `registeredAt` takes `2018-06-18T22:28:28+00:00`, `2018-06-18T22:28:28Z`,
//! `2018-06-18T22:28:28` (UTC) or `2018-06-18` (midnight UTC); `agentVersion`
//! compares dotted numbers component-wise (`1.14.5 < 1.20`).
//! An expression is at most 2000 characters, as ECS allows.
//!
//! # Semantics (where ECS's documentation is silent, berth's choice)
//!
//! * `attribute:NAME` on an instance without that attribute: every operator but
//!   `!exists` is false (so `attribute:stack != prod` selects instances that
//!   have `stack` with another value, as ECS's example says). An attribute
//!   without a value compares as the empty string.
//! * `task:group` has one value per task on the instance: `==`, `in`, `=~` and
//!   `exists` hold when some task's group satisfies them, and `!=`, `!in`, `!~`,
//!   `!exists` are their exact negations — `task:group != database` is the same
//!   anti-affinity as `not(task:group == database)`.
//! * `agentConnected` compares as the string `true` or `false`.
//! * `agentVersion` on an instance that reports none: false for every operator.
//!
//! Expressions are compiled once ([`parse_expression`]); evaluation
//! ([`Expr::matches`]) walks the compiled tree and never allocates.

use super::pattern::{Pattern, PatternError};
use std::cmp::Ordering;
use std::fmt;

/// ECS's limit on the length of a placement constraint expression.
pub const MAX_EXPRESSION_CHARS: usize = 2000;

/// Why an expression was refused: where (the 1-based character position in
/// the expression) and what was expected there. Its `Display` is the message
/// to return to the client in an `InvalidParameterException`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid placement constraint expression at position {position}: {message}")]
pub struct ExprError {
    /// 1-based character position in the expression (the length + 1 for "at
    /// the end").
    pub position: usize,
    /// What was expected, and what was found.
    pub message: String,
}

/// A compiled cluster query language expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    source: Box<str>,
    root: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Pred(Pred),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pred {
    /// A string test on a string subject; `negate` flips the documented positive form.
    Str {
        subject: StrSubject,
        test: StrTest,
        negate: bool,
    },
    Exists {
        subject: StrSubject,
        negate: bool,
    },
    Cmp {
        subject: CmpSubject,
        op: CmpOp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum StrSubject {
    Attribute(Box<str>),
    TaskGroup,
    Ec2InstanceId,
    AgentConnected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum StrTest {
    Eq(Box<str>),
    In(Box<[Box<str>]>),
    Matches(Pattern),
}

impl StrTest {
    fn test(&self, v: &str) -> bool {
        match self {
            StrTest::Eq(x) => **x == *v,
            StrTest::In(xs) => xs.iter().any(|x| **x == *v),
            StrTest::Matches(p) => p.is_match(v),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpSubject {
    AgentVersion(AgentVersion),
    RegisteredAt(i64),
    RunningTasksCount(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
        }
    }
}

/// A container agent version, dotted numbers compared component-wise
/// (missing components are 0): `1.14.5`, `1.20`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentVersion(pub [u32; 4]);

impl AgentVersion {
    /// Parses `1.14.5` (up to four numeric components); `None` if it is not one.
    pub fn parse(s: &str) -> Option<AgentVersion> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut out = [0u32; 4];
        for (n, part) in s.split('.').enumerate() {
            if n == 4 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            out[n] = part.parse().ok()?;
        }
        Some(AgentVersion(out))
    }
}

/// What an expression can ask about a container instance. The placement
/// snapshot implements it; the API layer can implement it over its own
/// container-instance records to evaluate ListContainerInstances filters.
pub trait Facts {
    /// The attribute `name`: `None` if the instance lacks it, `Some(None)` if it
    /// has it without a value.
    fn attribute(&self, name: &str) -> Option<Option<&str>>;
    /// The EC2 instance id (`i-...`).
    fn ec2_instance_id(&self) -> &str;
    /// Whether the instance's agent is connected.
    fn agent_connected(&self) -> bool;
    /// The agent's version, if it reported one.
    fn agent_version(&self) -> Option<AgentVersion>;
    /// When the instance registered, in seconds since the Unix epoch.
    fn registered_at(&self) -> i64;
    /// How many tasks run on the instance.
    fn running_tasks_count(&self) -> u32;
    /// Whether some task on the instance has a group for which `f` is true.
    fn any_task_group(&self, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

impl Expr {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the instance described by `facts` satisfies the expression.
    pub fn matches<F: Facts + ?Sized>(&self, facts: &F) -> bool {
        eval(&self.root, facts)
    }

    /// Whether the result can change as tasks are placed (the expression reads
    /// `task:group` or `runningTasksCount`); other expressions depend only on
    /// an instance's registration, so placement evaluates them once per
    /// instance.
    pub fn depends_on_tasks(&self) -> bool {
        fn walk(n: &Node) -> bool {
            match n {
                Node::And(a, b) | Node::Or(a, b) => walk(a) || walk(b),
                Node::Not(a) => walk(a),
                Node::Pred(Pred::Str { subject, .. } | Pred::Exists { subject, .. }) => {
                    *subject == StrSubject::TaskGroup
                }
                Node::Pred(Pred::Cmp { subject, .. }) => {
                    matches!(subject, CmpSubject::RunningTasksCount(_))
                }
            }
        }
        walk(&self.root)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn eval<F: Facts + ?Sized>(n: &Node, facts: &F) -> bool {
    match n {
        Node::And(a, b) => eval(a, facts) && eval(b, facts),
        Node::Or(a, b) => eval(a, facts) || eval(b, facts),
        Node::Not(a) => !eval(a, facts),
        Node::Pred(p) => pred(p, facts),
    }
}

fn pred<F: Facts + ?Sized>(p: &Pred, facts: &F) -> bool {
    match p {
        Pred::Str {
            subject,
            test,
            negate,
        } => match subject {
            StrSubject::Attribute(name) => match facts.attribute(name) {
                None => false,
                Some(v) => test.test(v.unwrap_or("")) != *negate,
            },
            StrSubject::TaskGroup => facts.any_task_group(&mut |g| test.test(g)) != *negate,
            StrSubject::Ec2InstanceId => test.test(facts.ec2_instance_id()) != *negate,
            StrSubject::AgentConnected => {
                let v = if facts.agent_connected() {
                    "true"
                } else {
                    "false"
                };
                test.test(v) != *negate
            }
        },
        Pred::Exists { subject, negate } => {
            let exists = match subject {
                StrSubject::Attribute(name) => facts.attribute(name).is_some(),
                StrSubject::TaskGroup => facts.any_task_group(&mut |_| true),
                StrSubject::Ec2InstanceId | StrSubject::AgentConnected => true,
            };
            exists != *negate
        }
        Pred::Cmp { subject, op } => match *subject {
            CmpSubject::AgentVersion(v) => match facts.agent_version() {
                Some(have) => op.holds(have.cmp(&v)),
                None => false,
            },
            CmpSubject::RegisteredAt(t) => op.holds(facts.registered_at().cmp(&t)),
            CmpSubject::RunningTasksCount(n) => op.holds(facts.running_tasks_count().cmp(&n)),
        },
    }
}

/// Parses and compiles a cluster query language expression, or explains, with
/// the position, why it is not one.
pub fn parse_expression(src: &str) -> Result<Expr, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    if chars.len() > MAX_EXPRESSION_CHARS {
        return Err(ExprError {
            position: MAX_EXPRESSION_CHARS + 1,
            message: format!(
                "the expression is {} characters long; at most {MAX_EXPRESSION_CHARS} are allowed",
                chars.len()
            ),
        });
    }
    let mut p = Parser { c: &chars, i: 0 };
    p.ws();
    if p.i == chars.len() {
        return Err(p.err("expected an expression, found nothing"));
    }
    let root = p.or()?;
    p.ws();
    if p.i < chars.len() {
        return Err(p.err(format!(
            "expected 'and', 'or' or the end of the expression, found {}",
            p.found()
        )));
    }
    Ok(Expr {
        source: src.into(),
        root,
    })
}

struct Parser<'a> {
    c: &'a [char],
    i: usize,
}

const SUBJECTS: &str = "a subject (attribute:NAME, task:group, ec2InstanceId, agentConnected, agentVersion, registeredAt or runningTasksCount)";

/// Characters that end a bare word (a subject, an operator word, a list item).
fn is_delim(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '=' | '!' | '<' | '>' | '~' | '&' | '|' | '\'' | '"'
        )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Exists => "exists",
            Op::NotExists => "!exists",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
        }
    }
}

impl Parser<'_> {
    fn err(&self, message: impl Into<String>) -> ExprError {
        self.err_at(self.i, message)
    }

    fn err_at(&self, i: usize, message: impl Into<String>) -> ExprError {
        ExprError {
            position: i + 1,
            message: message.into(),
        }
    }

    /// A short description of what is at the cursor.
    fn found(&self) -> String {
        if self.i >= self.c.len() {
            return "the end of the expression".to_string();
        }
        let word: String = self.c[self.i..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .take(24)
            .collect();
        format!("'{word}'")
    }

    fn ws(&mut self) {
        while self.c.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }

    /// The bare word at the cursor (not consumed).
    fn word_at(&self, i: usize) -> &[char] {
        let mut j = i;
        while j < self.c.len() && !is_delim(self.c[j]) {
            j += 1;
        }
        &self.c[i..j]
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let w = self.word_at(self.i);
        if w.len() == kw.len()
            && w.iter()
                .zip(kw.chars())
                .all(|(a, b)| a.eq_ignore_ascii_case(&b))
        {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn symbol(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.c.len() >= self.i + n && self.c[self.i..self.i + n].iter().copied().eq(s.chars()) {
            self.i += n;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut left = self.and()?;
        loop {
            self.ws();
            if self.symbol("||") || self.keyword("or") {
                let right = self.and()?;
                left = Node::Or(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut left = self.unary()?;
        loop {
            self.ws();
            if self.symbol("&&") || self.keyword("and") {
                let right = self.unary()?;
                left = Node::And(Box::new(left), Box::new(right));
            } else {
                return Ok(left);
            }
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        self.ws();
        if self.peek() == Some('!') && self.c.get(self.i + 1) != Some(&'=') {
            self.i += 1;
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.keyword("not") {
            return Ok(Node::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some('(') {
            let open = self.i;
            self.i += 1;
            let inner = self.or()?;
            self.ws();
            if self.peek() != Some(')') {
                return Err(self.err(format!(
                    "expected ')' to close the '(' at position {}, found {}",
                    open + 1,
                    self.found()
                )));
            }
            self.i += 1;
            return Ok(inner);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Node, ExprError> {
        let start = self.i;
        let word: String = self.word_at(self.i).iter().collect();
        if word.is_empty() {
            return Err(self.err(format!("expected {SUBJECTS}, found {}", self.found())));
        }
        enum Kind {
            Str(StrSubject),
            Version,
            Time,
            Count,
        }
        let kind = if let Some(name) = word.strip_prefix("attribute:") {
            if name.is_empty() {
                return Err(
                    self.err_at(start + 10, "expected an attribute name after 'attribute:'")
                );
            }
            if name.chars().count() > 128 {
                return Err(self.err_at(start + 10, "an attribute name is at most 128 characters"));
            }
            if let Some((k, bad)) = name.chars().enumerate().find(|(_, c)| {
                !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '\\' | '.'))
            }) {
                return Err(self.err_at(
                    start + 10 + k,
                    format!("'{bad}' cannot be part of an attribute name (letters, digits, '-', '_', '/', '\\' and '.')"),
                ));
            }
            Kind::Str(StrSubject::Attribute(name.into()))
        } else {
            match word.as_str() {
                "task:group" => Kind::Str(StrSubject::TaskGroup),
                "ec2InstanceId" => Kind::Str(StrSubject::Ec2InstanceId),
                "agentConnected" => Kind::Str(StrSubject::AgentConnected),
                "agentVersion" => Kind::Version,
                "registeredAt" => Kind::Time,
                "runningTasksCount" => Kind::Count,
                _ => return Err(self.err(format!("expected {SUBJECTS}, found '{word}'"))),
            }
        };
        self.i += word.chars().count();
        self.ws();
        let op_at = self.i;
        let op = self.operator().ok_or_else(|| {
            self.err(format!(
                "expected an operator after '{word}' (==, !=, >, >=, <, <=, exists, !exists, in, !in, =~, !~ or their word forms), found {}",
                self.found()
            ))
        })?;
        let valid: &[Op] = match kind {
            Kind::Str(StrSubject::Attribute(_) | StrSubject::TaskGroup) => &[
                Op::Eq,
                Op::Ne,
                Op::In,
                Op::NotIn,
                Op::Matches,
                Op::NotMatches,
                Op::Exists,
                Op::NotExists,
            ],
            Kind::Str(_) => &[
                Op::Eq,
                Op::Ne,
                Op::In,
                Op::NotIn,
                Op::Matches,
                Op::NotMatches,
            ],
            Kind::Version | Kind::Time | Kind::Count => {
                &[Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le]
            }
        };
        if !valid.contains(&op) {
            let list: Vec<&str> = valid.iter().map(|o| o.text()).collect();
            return Err(self.err_at(
                op_at,
                format!(
                    "the operator '{}' cannot be used with '{word}'; valid operators: {}",
                    op.text(),
                    list.join(", ")
                ),
            ));
        }
        let node = match kind {
            Kind::Str(subject) => match op {
                Op::Exists | Op::NotExists => Pred::Exists {
                    subject,
                    negate: op == Op::NotExists,
                },
                Op::In | Op::NotIn => Pred::Str {
                    subject,
                    test: StrTest::In(self.list(op)?.into()),
                    negate: op == Op::NotIn,
                },
                Op::Matches | Op::NotMatches => {
                    let (at, v) = self.value(op)?;
                    let pat =
                        Pattern::compile(&v).map_err(|PatternError { offset, message }| {
                            // Quoted values start one character later.
                            let quoted = usize::from(matches!(self.c.get(at), Some('\'' | '"')));
                            self.err_at(
                                at + quoted + offset,
                                format!("invalid pattern '{v}': {message}"),
                            )
                        })?;
                    Pred::Str {
                        subject,
                        test: StrTest::Matches(pat),
                        negate: op == Op::NotMatches,
                    }
                }
                _ => Pred::Str {
                    subject,
                    test: StrTest::Eq(self.value(op)?.1.into()),
                    negate: op == Op::Ne,
                },
            },
            Kind::Version | Kind::Time | Kind::Count => {
                let (at, v) = self.value(op)?;
                let subject = match kind {
                    Kind::Version => CmpSubject::AgentVersion(AgentVersion::parse(&v).ok_or_else(|| {
                        self.err_at(at, format!("expected an agent version like 1.14.5, found '{v}'"))
                    })?),
                    Kind::Time => CmpSubject::RegisteredAt(parse_time(&v).ok_or_else(|| {
                        self.err_at(at, format!(
                            "expected a date like 2018-06-18T22:28:28+00:00, 2018-06-18T22:28:28Z, 2018-06-18T22:28:28 or 2018-06-18, found '{v}'"
                        ))
                    })?),
                    _ => CmpSubject::RunningTasksCount(v.parse().map_err(|_| {
                        self.err_at(at, format!("expected a whole number of tasks, found '{v}'"))
                    })?),
                };
                let op = match op {
                    Op::Eq => CmpOp::Eq,
                    Op::Ne => CmpOp::Ne,
                    Op::Gt => CmpOp::Gt,
                    Op::Ge => CmpOp::Ge,
                    Op::Lt => CmpOp::Lt,
                    _ => CmpOp::Le,
                };
                Pred::Cmp { subject, op }
            }
        };
        Ok(Node::Pred(node))
    }

    fn operator(&mut self) -> Option<Op> {
        for (s, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
            ("=~", Op::Matches),
            ("!~", Op::NotMatches),
        ] {
            if self.symbol(s) {
                return Some(op);
            }
        }
        if self.peek() == Some('!') {
            let save = self.i;
            self.i += 1;
            if self.keyword("in") {
                return Some(Op::NotIn);
            }
            if self.keyword("exists") {
                return Some(Op::NotExists);
            }
            self.i = save;
            return None;
        }
        for (w, op) in [
            ("equals", Op::Eq),
            ("not_equals", Op::Ne),
            ("greater_than", Op::Gt),
            ("greater_than_equal", Op::Ge),
            ("less_than", Op::Lt),
            ("less_than_equal", Op::Le),
            ("exists", Op::Exists),
            ("not_exists", Op::NotExists),
            ("in", Op::In),
            ("not_in", Op::NotIn),
            ("matches", Op::Matches),
            ("not_matches", Op::NotMatches),
        ] {
            if self.keyword(w) {
                return Some(op);
            }
        }
        None
    }

    /// A quoted string at the cursor: its content and the offset after the closing quote.
    fn quoted(&mut self) -> Result<Option<String>, ExprError> {
        let Some(q @ ('\'' | '"')) = self.peek() else {
            return Ok(None);
        };
        let open = self.i;
        let mut j = self.i + 1;
        while j < self.c.len() && self.c[j] != q {
            j += 1;
        }
        if j == self.c.len() {
            return Err(self.err_at(open, format!("the string opened with {q} is not closed")));
        }
        let s: String = self.c[open + 1..j].iter().collect();
        self.i = j + 1;
        Ok(Some(s))
    }

    /// The single argument of `op`: its position and text.
    fn value(&mut self, op: Op) -> Result<(usize, String), ExprError> {
        self.ws();
        let at = self.i;
        if let Some(s) = self.quoted()? {
            return Ok((at, s));
        }
        // A bare value ends at white space, ')', or '&&' / '||' (so that
        // `a==b&&c==d` reads as two predicates).
        let mut j = self.i;
        while j < self.c.len()
            && !self.c[j].is_whitespace()
            && self.c[j] != ')'
            && !(matches!(self.c[j], '&' | '|') && self.c.get(j + 1) == Some(&self.c[j]))
        {
            j += 1;
        }
        if j == self.i {
            return Err(self.err(format!(
                "expected a value after '{}', found {}",
                op.text(),
                self.found()
            )));
        }
        let s: String = self.c[self.i..j].iter().collect();
        self.i = j;
        Ok((at, s))
    }

    /// The argument list of `in`/`not_in`: `[a, b]` or `(a, b)`.
    fn list(&mut self, op: Op) -> Result<Vec<Box<str>>, ExprError> {
        self.ws();
        let close = match self.peek() {
            Some('[') => ']',
            Some('(') => ')',
            _ => {
                return Err(self.err(format!(
                    "expected a list like [a, b] after '{}', found {}",
                    op.text(),
                    self.found()
                )))
            }
        };
        let open = self.i;
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if let Some(s) = self.quoted()? {
                items.push(s.into_boxed_str());
            } else {
                let mut j = self.i;
                while j < self.c.len()
                    && !self.c[j].is_whitespace()
                    && !matches!(self.c[j], ',' | ']' | ')')
                {
                    j += 1;
                }
                if j == self.i {
                    return Err(self.err(format!("expected a list value, found {}", self.found())));
                }
                items.push(
                    self.c[self.i..j]
                        .iter()
                        .collect::<String>()
                        .into_boxed_str(),
                );
                self.i = j;
            }
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some(c) if c == close => {
                    self.i += 1;
                    return Ok(items);
                }
                None => {
                    return Err(self.err(format!(
                        "expected '{close}' to close the list opened at position {}, found the end of the expression",
                        open + 1
                    )))
                }
                _ => {
                    return Err(self.err(format!(
                        "expected ',' or '{close}' in the list, found {}",
                        self.found()
                    )))
                }
            }
        }
    }
}

/// Seconds since the Unix epoch of one of ECS's `registeredAt` date forms.
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if b.len() == 10 {
        return Some(secs);
    }
    if b.len() < 19 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    secs += h * 3600 + mi * 60 + se;
    match &b[19..] {
        b"" | b"Z" => Some(secs),
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(20..22)?, num(23..25)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            Some(if *sign == b'+' {
                secs - off
            } else {
                secs + off
            })
        }
        _ => None,
    }
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2018-06-18T22:28:28Z"), Some(1_529_360_908));
        assert_eq!(parse_time("2018-06-18T22:28:28"), Some(1_529_360_908));
        assert_eq!(parse_time("2018-06-18T22:28:28+00:00"), Some(1_529_360_908));
        assert_eq!(parse_time("2018-06-19T00:28:28+02:00"), Some(1_529_360_908));
        assert_eq!(parse_time("2018-02-30"), None);
        assert_eq!(parse_time("2018-06-18T25:00:00Z"), None);
        assert_eq!(parse_time("18-06-18"), None);
    }

    #[test]
    fn versions() {
        assert!(AgentVersion::parse("1.14.5") < AgentVersion::parse("1.20"));
        assert_eq!(AgentVersion::parse("1.2"), AgentVersion::parse("1.2.0"));
        assert_eq!(AgentVersion::parse("1..2"), None);
        assert_eq!(AgentVersion::parse("1.2.3.4.5"), None);
    }
}
