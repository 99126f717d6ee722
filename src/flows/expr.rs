//! Flow conditions and computed values in CEL (Common Expression Language): an expression is
//! compiled, type-checked and cost-bounded once, then evaluated fast for each record change.
//!
//! # The variables an expression sees
//!
//! - `record`: the changed record, a map of every unified field of its entity type
//!   ([`unified::fields`]) plus `key` (a string). A field is null when absent or of the wrong
//!   JSON type. Text, status and priority fields are strings, numbers are doubles (a JSON
//!   integer too), booleans are bools and dates are timestamps (null when not RFC 3339).
//! - `previous`: the same map before the change, or null when the record was created (reading
//!   a field of null is an error: guard with `previous == null || …`).
//! - `changed`: the list of the names of the unified fields that changed.
//! - `connection`: `{id, systemKey, label (string or null), metadata (a map)}`.
//! - `customer`: `{id, externalId (string or null)}`.
//! - `now`: the evaluation time, a timestamp.
//! - `target`: only where the [`Scope`] has a target entity, a map like `record` for it.
//!
//! # What the checker refuses
//!
//! Unknown variables, fields and functions; comparisons and arithmetic between values that
//! never compare or combine (`record.title == 1`; `record.total + 1`, as cel-rust adds no
//! double to an int: write `1.0`; comparing them, `record.total > 1`, is fine); status and
//! priority words that do not exist (`record.priority == "URGNET"`); invalid literal regular
//! expressions and timestamps; message literals; results of the wrong type ([`Want`]);
//! expressions over [`MAX_SOURCE`] bytes, [`MAX_NODES`] parts, [`MAX_DEPTH`] levels or
//! [`MAX_COST`] steps. A macro (`all`, `exists`, `exists_one`, `map`, `filter`) costs its body
//! times a bound of what it iterates: a literal's length, the number of fields for `changed`
//! or a record, 8,192 otherwise (connection metadata is at most 16 KiB). `matches` takes a
//! literal pattern only (it is compiled once per evaluation). Errors carry the 1-based
//! line and column (in characters) of the offending part: the field name of an unknown
//! field, the function name of a call, the operator of an operation.
//!
//! # Evaluating
//!
//! One [`Env`] (the standard library) serves the process. An [`Evaluator`] evaluates in a
//! child scope of its root context whose variables resolve from the [`Activation`] on
//! access: a map is read in place, converting only the fields the expression reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo, operators,
};
use cel::common::traits::{Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull,
    CelString, CelTimestamp, CelUInt, Kind, MAP_TYPE, Type,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::{Key, KeyRef, Map};
use cel::{Context, Env, ExecutionError, Program, Value};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value as Json;

use crate::catalog::EntityType;
use crate::records::unified::{self, FieldType};

/// The longest expression, in bytes.
pub const MAX_SOURCE: usize = 4096;
/// The most parts (AST nodes, those macros expand to included) an expression may have.
pub const MAX_NODES: usize = 500;
/// The highest static cost estimate an expression may have.
pub const MAX_COST: u64 = 100_000;
/// The most elements a list or map whose length is not known when the expression is checked
/// may hold: connection metadata is at most 16 KiB of JSON, so at most 8,192 elements.
const UNKNOWN_LENGTH: u64 = 8192;
/// The deepest nesting of parts. Evaluating recurses once a level, some 40 KiB a level in a
/// debug build: 32 levels stay well within a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 32;
/// The stack of the thread that parses and checks (see [`compile`]).
const COMPILE_STACK: usize = 64 << 20;
const VARIABLES: &str = "record, previous, changed, connection, customer, now";
/// The functions of the standard library an expression may call.
const FUNCTIONS: &str = "size contains startsWith endsWith matches string int uint double bool \
    bytes timestamp duration dyn type getFullYear getMonth getDayOfYear getDayOfMonth getDate \
    getDayOfWeek getHours getMinutes getSeconds getMilliseconds";

/// The operators (`operators::*`) the parser produces.
const OPERATORS: &str = "_?_:_ _&&_ _||_ !_ _-_ _+_ _*_ _/_ _%_ _==_ _!=_ _>=_ _<=_ _>_ _<_ -_ \
    _[_] @in @not_strictly_false";

/// The CEL standard library, built once; optional syntax (`a.?b`) is off.
static ENV: LazyLock<Arc<Env>> =
    LazyLock::new(|| Arc::new(Env::stdlib().with_optional_support(false)));

/// What an expression is checked against.
pub struct Scope {
    /// The entity type of `record` and `previous`.
    pub entity: EntityType,
    /// The entity type of `target`, where the expression has one.
    pub target: Option<EntityType>,
}

/// What the expression must produce.
pub enum Want {
    /// A condition.
    Bool,
    /// A value to write into a unified field of that type (null allowed).
    Field(FieldType),
}

/// Why an expression was refused, and where (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl ExprError {
    fn new(message: impl Into<String>, (line, column): (usize, usize)) -> Self {
        let message = message.into();
        ExprError {
            message,
            line,
            column,
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ExprError {
            message,
            line,
            column,
        } = self;
        write!(f, "line {line}, column {column}: {message}")
    }
}

impl std::error::Error for ExprError {}

/// A checked expression, ready to evaluate from any thread.
#[derive(Debug)]
pub struct Compiled {
    /// The program as parsed (positions, macros expanded).
    program: Program,
    /// What runs: the program's expression, rewritten by [`prepare`].
    expression: IdedExpr,
    source: String,
    cost: u64,
    /// The condition's fast form, when it has one ([`super::fast`]).
    fast: Option<super::fast::Fast>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Compiled>();
    send_sync::<Evaluator>();
};

impl Compiled {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The static cost estimate (at most [`MAX_COST`]).
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// The condition's fast form, if it has one: it gives what the interpreter gives, and
    /// where it fails the interpreter is asked (for its error).
    pub fn fast(&self) -> Option<&super::fast::Fast> {
        self.fast.as_ref()
    }

    /// The positions of the parts of the expression.
    pub fn source_info(&self) -> &SourceInfo {
        self.program.source_info()
    }
}

/// Parses, type-checks and cost-bounds `source` for `scope`, producing `want`.
///
/// The parser recurses deeply (in a debug build, some 20 nested parentheses overflow a 2 MiB
/// stack, before its own limit of 96), so this runs on a thread of its own with a stack no
/// input can overflow.
pub fn compile(source: &str, scope: &Scope, want: Want) -> Result<Compiled, ExprError> {
    if source.len() > MAX_SOURCE {
        let message = format!("the expression is longer than {MAX_SOURCE} bytes");
        return Err(ExprError::new(message, (1, 1)));
    }
    if source.trim().is_empty() {
        return Err(ExprError::new("the expression is empty", (1, 1)));
    }
    let failed =
        |e: String| ExprError::new(format!("the expression could not be compiled{e}"), (1, 1));
    std::thread::scope(|threads| {
        let thread = std::thread::Builder::new().name("cel-compile".into());
        let thread = thread.stack_size(COMPILE_STACK);
        let thread = thread.spawn_scoped(threads, || compile_here(source, scope, want));
        let thread = thread.map_err(|e| failed(format!(": {e}")))?;
        thread.join().unwrap_or_else(|_| Err(failed(String::new())))
    })
}

fn compile_here(source: &str, scope: &Scope, want: Want) -> Result<Compiled, ExprError> {
    let program = ENV.compile(source).map_err(|errors| {
        let Some(e) = errors.errors.first() else {
            return ExprError::new("the expression does not parse", (1, 1));
        };
        if e.msg.contains("Recursion limit") {
            return ExprError::new("the expression is nested too deeply", (1, 1));
        }
        let info = e.source_info.as_ref().filter(|_| e.expr_id != 0);
        let position = match info.and_then(|info| info.offset_for(e.expr_id)) {
            Some((start, _)) => line_column(source, start as usize),
            None => (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize),
        };
        ExprError::new(parse_message(&e.msg), position)
    })?;
    let mut checker = Checker {
        source,
        info: program.source_info(),
        scope,
        locals: Vec::new(),
        nodes: 0,
    };
    let root = program.expression();
    let (ty, cost) = checker.check(root, 0)?;
    checker.want(root, &ty, &want)?;
    if cost > MAX_COST {
        let message = format!("the expression may cost {cost} steps; the limit is {MAX_COST}");
        return Err(ExprError::new(message, (1, 1)));
    }
    let fast = match want {
        Want::Bool if scope.target.is_none() => super::fast::compile(root, scope.entity),
        _ => None,
    };
    let mut expression = root.clone();
    prepare(&mut expression);
    let source = source.to_owned();
    Ok(Compiled {
        program,
        expression,
        source,
        cost,
        fast,
    })
}

/// Rewrites the checked expression for evaluation, keeping its meaning:
/// - `a.f` becomes `a["f"]`: the same lookup (every select was checked to be on a map), without
///   cel-rust's resolution of `a.f` as a qualified name (which allocates on every evaluation);
/// - map and list literals move to the right of `==` and `!=`: cel-rust's maps only equal maps
///   of their own kind, while the variables' maps are [`MapView`]s, whose equality knows both.
///   (A map literal nested in a literal on the left, `[{'a': 1}] == [connection.metadata]`,
///   or in the list of `in`, still never equals a variable's map.)
fn prepare(expr: &mut IdedExpr) {
    let literal = |e: &IdedExpr| matches!(e.expr, Expr::Map(_) | Expr::List(_));
    match &mut expr.expr {
        Expr::Select(select) if !select.test => {
            let operand = std::mem::take(&mut *select.operand);
            let field = LiteralValue::String(CelString::from(std::mem::take(&mut select.field)));
            let field = IdedExpr {
                id: expr.id,
                expr: Expr::Literal(field),
            };
            let args = vec![operand, field];
            let index = CallExpr {
                func_name: operators::INDEX.into(),
                target: None,
                args,
            };
            expr.expr = Expr::Call(index);
            prepare(expr);
        }
        Expr::Call(call) => {
            let equality = [operators::EQUALS, operators::NOT_EQUALS].contains(&&*call.func_name);
            if equality && call.args.len() == 2 && literal(&call.args[0]) && !literal(&call.args[1])
            {
                call.args.swap(0, 1);
            }
            call.target.iter_mut().for_each(|target| prepare(target));
            call.args.iter_mut().for_each(prepare);
        }
        Expr::Select(select) => prepare(&mut select.operand),
        Expr::List(list) => list.elements.iter_mut().for_each(prepare),
        Expr::Map(map) => map.entries.iter_mut().for_each(|entry| {
            if let EntryExpr::MapEntry(entry) = &mut entry.expr {
                prepare(&mut entry.key);
                prepare(&mut entry.value);
            }
        }),
        Expr::Comprehension(c) => {
            let parts = [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
            ];
            parts.into_iter().chain([&mut c.result]).for_each(prepare);
        }
        _ => {}
    }
}

/// A parser message without its noise.
fn parse_message(msg: &str) -> String {
    let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("mismatched input ") {
        return match rest.split(" expecting").next().unwrap_or(rest) {
            "'<EOF>'" => "syntax error: the expression ends too early".into(),
            token => format!("syntax error: unexpected {token}"),
        };
    }
    if let Some(text) = msg.strip_prefix("token recognition error at: ") {
        return format!("syntax error: unexpected characters {text}");
    }
    format!("syntax error: {}", msg.replace("'<EOF>'", "the end"))
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// The static type of an expression.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    Timestamp,
    Duration,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>),
    /// `record`, `previous` or `target`.
    Record(EntityType),
    /// `connection` or `customer`.
    Object(Obj),
    /// A status or priority word.
    Enum(FieldType),
    Dyn,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Obj {
    Connection,
    Customer,
}

impl Obj {
    fn name(self) -> &'static str {
        if self == Obj::Connection {
            "connection"
        } else {
            "customer"
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Obj::Connection => &["id", "systemKey", "label", "metadata"],
            Obj::Customer => &["id", "externalId"],
        }
    }

    fn field(self, name: &str) -> Option<Ty> {
        match (self, name) {
            (Obj::Connection, "metadata") => Some(Ty::Map(Box::new(Ty::Dyn))),
            (_, name) => self.fields().contains(&name).then_some(Ty::String),
        }
    }
}

impl Ty {
    fn of_field(field: FieldType) -> Ty {
        match field {
            FieldType::Text => Ty::String,
            FieldType::Number => Ty::Double,
            FieldType::Boolean => Ty::Bool,
            FieldType::Date => Ty::Timestamp,
            FieldType::Status | FieldType::Priority => Ty::Enum(field),
        }
    }

    /// "a string", "an int", …: for messages.
    fn describe(&self) -> String {
        let name = match self {
            Ty::Bool => "a boolean",
            Ty::Int => "an int",
            Ty::Uint => "a uint",
            Ty::Double => "a double",
            Ty::String => "a string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::Timestamp => "a timestamp",
            Ty::Duration => "a duration",
            Ty::Type => "a type",
            Ty::List(_) => "a list",
            Ty::Map(_) | Ty::Object(_) => "a map",
            Ty::Record(entity) => return format!("a {} record", entity_name(*entity)),
            Ty::Enum(field) => return format!("a {}", enum_name(*field)),
            Ty::Dyn => "a value of any type",
        };
        name.into()
    }

    fn is_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    fn is_text(&self) -> bool {
        matches!(self, Ty::String | Ty::Enum(_))
    }

    fn is_mapping(&self) -> bool {
        matches!(self, Ty::Map(_) | Ty::Record(_) | Ty::Object(_))
    }

    fn boolish(&self) -> bool {
        matches!(self, Ty::Bool | Ty::Dyn)
    }

    /// Whether `==` between the two can be true (cel-rust equates numbers of different kinds
    /// by value: `1.0 == 1`, `1u == 1`).
    fn comparable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn | Ty::Null, _) | (_, Ty::Dyn | Ty::Null) => true,
            (a, b) if a.is_number() && b.is_number() || a.is_text() && b.is_text() => true,
            (a, b) if a.is_mapping() && b.is_mapping() => true,
            (Ty::List(a), Ty::List(b)) => a.comparable(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    /// Whether `<` and friends apply (cel-rust orders numbers of different kinds too).
    fn orderable(&self, other: &Ty) -> bool {
        let time = |t: &Ty| matches!(t, Ty::Timestamp | Ty::Duration);
        match (self, other) {
            (Ty::Dyn, t) | (t, Ty::Dyn) => t.is_number() || t.is_text() || time(t) || *t == Ty::Dyn,
            (a, b) => {
                a.is_number() && b.is_number() || a.is_text() && b.is_text() || time(a) && a == b
            }
        }
    }

    /// The common type of two alternatives.
    fn join(self, other: Ty) -> Ty {
        match (self, other) {
            (a, b) if a == b => a,
            (Ty::Null, b) | (b, Ty::Null) => b,
            _ => Ty::Dyn,
        }
    }
}

fn entity_name(entity: EntityType) -> &'static str {
    match entity {
        EntityType::Site => "SITE",
        EntityType::Location => "LOCATION",
        EntityType::Asset => "ASSET",
        EntityType::WorkOrder => "WORK_ORDER",
        EntityType::Part => "PART",
        EntityType::PurchaseOrder => "PURCHASE_ORDER",
        EntityType::Vendor => "VENDOR",
        EntityType::User => "USER",
    }
}

fn enum_name(field: FieldType) -> &'static str {
    if field == FieldType::Status {
        "status"
    } else {
        "priority"
    }
}

fn is_operator(name: &str) -> bool {
    OPERATORS
        .split_whitespace()
        .any(|operator| operator == name)
}

/// The string a literal node holds.
fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// Walks the AST once: types, cost, limits.
struct Checker<'s> {
    source: &'s str,
    info: &'s SourceInfo,
    scope: &'s Scope,
    /// Comprehension variables in scope, innermost last.
    locals: Vec<(&'s str, Ty)>,
    nodes: usize,
}

type Checked = Result<(Ty, u64), ExprError>;

impl<'s> Checker<'s> {
    fn offset(&self, id: u64) -> usize {
        self.info
            .offset_for(id)
            .map_or(0, |(start, _)| start as usize)
    }

    fn at_offset(&self, offset: usize, message: impl Into<String>) -> ExprError {
        ExprError::new(message, line_column(self.source, offset))
    }

    /// An error at a node (an operator's node starts at the operator).
    fn at(&self, id: u64, message: impl Into<String>) -> ExprError {
        self.at_offset(self.offset(id), message)
    }

    /// Where a part starts (a node's own offset is that of its operator, dot or parenthesis).
    fn start(&self, e: &IdedExpr) -> usize {
        let unary = [operators::LOGICAL_NOT, operators::NEGATE];
        match &e.expr {
            Expr::Select(select) if !select.test => self.start(&select.operand),
            Expr::Call(call) => match (&call.target, call.args.first()) {
                (Some(target), _) => self.start(target),
                (None, Some(first)) if is_operator(&call.func_name) => {
                    if unary.contains(&&*call.func_name) {
                        self.offset(e.id)
                    } else {
                        self.start(first)
                    }
                }
                _ => self.name_offset(e.id, &call.func_name),
            },
            Expr::Comprehension(c) => self.start(&c.iter_range),
            _ => self.offset(e.id),
        }
    }

    /// An error at the start of a part.
    fn at_start(&self, e: &IdedExpr, message: impl Into<String>) -> ExprError {
        self.at_offset(self.start(e), message)
    }

    /// An error at the field name of a select node (which starts at its dot).
    fn at_field(&self, id: u64, field: &str, message: impl Into<String>) -> ExprError {
        let start = self.offset(id);
        let found = self.source.get(start..).and_then(|rest| rest.find(field));
        self.at_offset(start + found.unwrap_or(0), message)
    }

    /// Where the function name of a call node (which starts at its parenthesis) starts.
    fn name_offset(&self, id: u64, name: &str) -> usize {
        let start = self.offset(id);
        let before = self.source.get(..start).unwrap_or_default().trim_end();
        before.strip_suffix(name).map_or(start, str::len)
    }

    /// An error at the function name of a call node.
    fn at_name(&self, id: u64, name: &str, message: impl Into<String>) -> ExprError {
        self.at_offset(self.name_offset(id, name), message)
    }

    fn check(&mut self, e: &'s IdedExpr, depth: usize) -> Checked {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            let message = format!("the expression has more than {MAX_NODES} parts");
            return Err(self.at(e.id, message));
        }
        if depth > MAX_DEPTH {
            return Err(self.at(e.id, "the expression is nested too deeply"));
        }
        let depth = depth + 1;
        match &e.expr {
            Expr::Literal(literal) => Ok((
                match literal {
                    LiteralValue::Boolean(_) => Ty::Bool,
                    LiteralValue::Bytes(_) => Ty::Bytes,
                    LiteralValue::Double(_) => Ty::Double,
                    LiteralValue::Int(_) => Ty::Int,
                    LiteralValue::Null => Ty::Null,
                    LiteralValue::String(_) => Ty::String,
                    LiteralValue::UInt(_) => Ty::Uint,
                },
                1,
            )),
            Expr::Ident(name) => Ok((self.ident(e.id, name)?, 1)),
            Expr::Select(select) => {
                let (on, cost) = self.check(&select.operand, depth)?;
                let field = self.field(&on, &select.field);
                let field = field.map_err(|m| self.at_field(e.id, &select.field, m))?;
                Ok((if select.test { Ty::Bool } else { field }, cost + 1))
            }
            Expr::Call(_) => self.call(e, depth),
            Expr::List(list) => {
                let (elem, cost) = self.join(&list.elements, depth)?;
                Ok((Ty::List(Box::new(elem)), cost + 1))
            }
            Expr::Map(map) => {
                let entries = map.entries.iter().filter_map(|entry| match &entry.expr {
                    EntryExpr::MapEntry(entry) => Some(entry),
                    EntryExpr::StructField(_) => None,
                });
                let (keys, values): (Vec<_>, Vec<_>) = entries.map(|e| (&e.key, &e.value)).unzip();
                let (_, key_cost) = self.join(keys, depth)?;
                let (value, value_cost) = self.join(values, depth)?;
                Ok((
                    Ty::Map(Box::new(value)),
                    key_cost.saturating_add(value_cost) + 1,
                ))
            }
            Expr::Comprehension(c) => self.comprehension(c, depth),
            Expr::Struct(_) => Err(self.at(e.id, "messages are not supported")),
            Expr::Unspecified => Err(self.at(e.id, "this expression is not supported")),
        }
    }

    /// The common type and the total cost of `items`.
    fn join(&mut self, items: impl IntoIterator<Item = &'s IdedExpr>, depth: usize) -> Checked {
        let (mut joined, mut cost) = (None::<Ty>, 0u64);
        for item in items {
            let (ty, c) = self.check(item, depth)?;
            joined = Some(joined.map_or(ty.clone(), |joined| joined.join(ty)));
            cost = cost.saturating_add(c);
        }
        Ok((joined.unwrap_or(Ty::Dyn), cost))
    }

    fn ident(&self, id: u64, name: &str) -> Result<Ty, ExprError> {
        if let Some((_, ty)) = self.locals.iter().rev().find(|(n, _)| *n == name) {
            return Ok(ty.clone());
        }
        Ok(match (name, self.scope.target) {
            ("record" | "previous", _) => Ty::Record(self.scope.entity),
            ("changed", _) => Ty::List(Box::new(Ty::String)),
            ("connection", _) => Ty::Object(Obj::Connection),
            ("customer", _) => Ty::Object(Obj::Customer),
            ("now", _) => Ty::Timestamp,
            ("target", Some(target)) => Ty::Record(target),
            ("bool" | "int" | "uint" | "double" | "string" | "bytes" | "list" | "map", _) => {
                Ty::Type
            }
            ("null_type" | "type", _) => Ty::Type,
            (_, target) => {
                let target = if target.is_some() { ", target" } else { "" };
                let m = format!("unknown variable `{name}`; the variables are {VARIABLES}{target}");
                return Err(self.at(id, m));
            }
        })
    }

    /// The type of `on.field` (the message of an error, to place at the field).
    fn field(&self, on: &Ty, field: &str) -> Result<Ty, String> {
        match on {
            Ty::Record(_) if field == "key" => Ok(Ty::String),
            Ty::Record(entity) => {
                let fields = unified::fields(*entity);
                match fields.iter().find(|(name, _)| *name == field) {
                    Some((_, ty)) => Ok(Ty::of_field(*ty)),
                    None => {
                        let names: Vec<_> = fields.iter().map(|(name, _)| *name).collect();
                        let (entity, names) = (entity_name(*entity), names.join(", "));
                        Err(format!(
                            "{entity} has no field `{field}`; its fields are key, {names}"
                        ))
                    }
                }
            }
            Ty::Object(obj) => obj.field(field).ok_or_else(|| {
                let (name, names) = (obj.name(), obj.fields().join(", "));
                format!("{name} has no field `{field}`; its fields are {names}")
            }),
            Ty::Map(value) => Ok((**value).clone()),
            Ty::Dyn => Ok(Ty::Dyn),
            other => Err(format!("{} has no fields", other.describe())),
        }
    }

    fn call(&mut self, e: &'s IdedExpr, depth: usize) -> Checked {
        let Expr::Call(call) = &e.expr else {
            return Err(self.at(e.id, "this expression is not supported"));
        };
        let name = call.func_name.as_str();
        let operator = is_operator(name);
        if !operator && !FUNCTIONS.split_whitespace().any(|f| f == name) {
            let m = if ["all", "exists", "exists_one", "map", "filter"].contains(&name) {
                format!(
                    "`{name}` takes a variable and an expression, as in `list.{name}(x, x > 0)`"
                )
            } else {
                format!("unknown function `{name}`")
            };
            return Err(self.at_name(e.id, name, m));
        }
        let mut cost = 1u64;
        let mut target = None;
        if let Some(on) = &call.target {
            let (ty, c) = self.check(on, depth)?;
            (target, cost) = (Some(ty), cost.saturating_add(c));
        }
        let mut args = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            let (ty, c) = self.check(arg, depth)?;
            cost = cost.saturating_add(c);
            args.push(ty);
        }
        let ty = if operator {
            self.operator(e.id, name, &call.args, &args)?
        } else {
            self.function(e.id, name, &call.args, target.as_ref(), &args)?
        };
        Ok((ty, cost))
    }

    fn operator(
        &self,
        id: u64,
        name: &str,
        exprs: &[IdedExpr],
        args: &[Ty],
    ) -> Result<Ty, ExprError> {
        use operators::*;
        let symbol = match name {
            INDEX => "[]",
            CONDITIONAL => "?:",
            IN => "in",
            _ => name.trim_matches('_'),
        };
        let (a, b) = (
            args.first().unwrap_or(&Ty::Dyn),
            args.get(1).unwrap_or(&Ty::Dyn),
        );
        let pair = || format!("{} and {}", a.describe(), b.describe());
        match (name, args.len()) {
            (LOGICAL_AND | LOGICAL_OR, 2) | (LOGICAL_NOT, 1) => {
                match exprs.iter().zip(args).find(|(_, ty)| !ty.boolish()) {
                    Some((expr, ty)) => {
                        let m = format!("`{symbol}` needs booleans; this is {}", ty.describe());
                        Err(self.at_start(expr, m))
                    }
                    None => Ok(Ty::Bool),
                }
            }
            (NOT_STRICTLY_FALSE, 1) => Ok(Ty::Bool),
            (NEGATE, 1) if matches!(a, Ty::Int | Ty::Double | Ty::Dyn) => Ok(a.clone()),
            (CONDITIONAL, 3) if !a.boolish() => {
                let m = format!(
                    "the condition of `?:` must be a boolean, this is {}",
                    a.describe()
                );
                Err(self.at_start(&exprs[0], m))
            }
            (CONDITIONAL, 3) => Ok(b.clone().join(args[2].clone())),
            (EQUALS | NOT_EQUALS, 2) if !a.comparable(b) => {
                let m = format!("cannot compare {} with {}", a.describe(), b.describe());
                Err(self.at(id, m))
            }
            (EQUALS | NOT_EQUALS, 2) => {
                self.words(a, &exprs[1])?;
                self.words(b, &exprs[0])?;
                Ok(Ty::Bool)
            }
            (LESS | LESS_EQUALS | GREATER | GREATER_EQUALS, 2) if a.orderable(b) => Ok(Ty::Bool),
            (LESS | LESS_EQUALS | GREATER | GREATER_EQUALS, 2) => {
                Err(self.at(id, format!("cannot order {} with `{symbol}`", pair())))
            }
            (ADD | SUBSTRACT | MULTIPLY | DIVIDE | MODULO, 2) => {
                arithmetic(name, a, b).ok_or_else(|| {
                    let mut m = format!("cannot apply `{symbol}` to {}", pair());
                    let int = |e: &&IdedExpr| matches!(e.expr, Expr::Literal(LiteralValue::Int(_)));
                    if let Some(int) = exprs
                        .iter()
                        .find(int)
                        .filter(|_| args.contains(&Ty::Double))
                    {
                        let text = self.source.get(self.offset(int.id)..).unwrap_or_default();
                        let digits: String =
                            text.chars().take_while(char::is_ascii_digit).collect();
                        m.push_str(&format!("; write {digits}.0"));
                    }
                    self.at(id, m)
                })
            }
            (INDEX, 2) => match a {
                Ty::List(elem) if matches!(b, Ty::Int | Ty::Uint | Ty::Dyn) => Ok((**elem).clone()),
                Ty::Map(value) => Ok((**value).clone()),
                Ty::Record(_) | Ty::Object(_) => match string_literal(&exprs[1]) {
                    Some(field) => self.field(a, field).map_err(|m| self.at(exprs[1].id, m)),
                    None if matches!(b, Ty::String | Ty::Dyn) => Ok(Ty::Dyn),
                    None => Err(self.at_start(&exprs[1], "a field name must be a string")),
                },
                Ty::Dyn => Ok(Ty::Dyn),
                _ => Err(self.at(id, format!("cannot index {}", pair()))),
            },
            (IN, 2) => match b {
                Ty::List(elem) if a.comparable(elem) => {
                    if let Expr::List(list) = &exprs[1].expr {
                        list.elements
                            .iter()
                            .try_for_each(|element| self.words(a, element))?;
                    }
                    Ok(Ty::Bool)
                }
                Ty::Map(_) | Ty::Record(_) | Ty::Object(_) | Ty::Dyn => Ok(Ty::Bool),
                Ty::List(elem) => {
                    let m = format!("{} is never in a list of {}", a.describe(), elem.describe());
                    Err(self.at(id, m))
                }
                other => {
                    let m = format!("`in` needs a list or a map, this is {}", other.describe());
                    Err(self.at_start(&exprs[1], m))
                }
            },
            _ => {
                let kinds: Vec<_> = args.iter().map(Ty::describe).collect();
                let m = format!("`{symbol}` does not apply to {}", kinds.join(" and "));
                Err(self.at(id, m))
            }
        }
    }

    /// When `ty` is a status or priority, a string literal `other` must be one of its words.
    fn words(&self, ty: &Ty, other: &IdedExpr) -> Result<(), ExprError> {
        if let (Ty::Enum(field), Some(word)) = (ty, string_literal(other))
            && !field.words().contains(&word)
        {
            let (name, words) = (enum_name(*field), field.words().join(", "));
            let m = format!("`{word}` is not a {name}; use one of {words}");
            return Err(self.at(other.id, m));
        }
        Ok(())
    }

    fn function(
        &self,
        id: u64,
        name: &str,
        exprs: &[IdedExpr],
        target: Option<&Ty>,
        args: &[Ty],
    ) -> Result<Ty, ExprError> {
        let wrong = |what: String| self.at_name(id, name, format!("`{name}` {what}"));
        let not_on = |ty: &Ty| wrong(format!("does not apply to {}", ty.describe()));
        let scalar =
            |ty: &Ty| !matches!(ty, Ty::List(_) | Ty::Map(_) | Ty::Record(_) | Ty::Object(_));
        let text = |ty: &Ty| ty.is_text() || *ty == Ty::Dyn;
        match (name, target, args) {
            ("size", Some(ty), []) | ("size", None, [ty]) => match ty {
                Ty::String | Ty::Bytes | Ty::List(_) | Ty::Dyn | Ty::Enum(_) => Ok(Ty::Int),
                ty if ty.is_mapping() => Ok(Ty::Int),
                other => Err(not_on(other)),
            },
            ("contains" | "startsWith" | "endsWith" | "matches", Some(on), [arg])
            | ("matches", None, [on, arg]) => {
                if !text(on) || !text(arg) {
                    return Err(wrong("needs strings".into()));
                }
                if name == "matches" && string_literal(&exprs[args.len() - 1]).is_none() {
                    return Err(self.at(
                        exprs[args.len() - 1].id,
                        "`matches` takes a literal pattern (\"^WO-[0-9]+$\"), not one read \
                         from the data",
                    ));
                }
                if name == "matches"
                    && let Some(Err(e)) =
                        string_literal(&exprs[args.len() - 1]).map(regex::Regex::new)
                {
                    let e = e.to_string();
                    let why = e.lines().last().unwrap_or_default().trim();
                    return Err(self.at(
                        exprs[args.len() - 1].id,
                        format!("invalid regular expression: {why}"),
                    ));
                }
                Ok(Ty::Bool)
            }
            ("timestamp", None, [arg]) if scalar(arg) => {
                if let Some(text) = string_literal(&exprs[0])
                    && let Err(e) = DateTime::parse_from_rfc3339(text)
                {
                    let m = format!("`{text}` is not an RFC 3339 timestamp ({e})");
                    return Err(self.at(exprs[0].id, m));
                }
                Ok(Ty::Timestamp)
            }
            ("dyn", None, [_]) => Ok(Ty::Dyn),
            ("type", None, [_]) => Ok(Ty::Type),
            (_, None, [arg]) if scalar(arg) => Ok(match name {
                "string" => Ty::String,
                "int" => Ty::Int,
                "uint" => Ty::Uint,
                "double" => Ty::Double,
                "bool" => Ty::Bool,
                "bytes" => Ty::Bytes,
                "duration" => Ty::Duration,
                _ => return Err(wrong("is not called that way".into())),
            }),
            (_, Some(on), []) | (_, Some(on), [Ty::String | Ty::Dyn])
                if name.starts_with("get") =>
            {
                let of_duration = ["getHours", "getMinutes", "getSeconds", "getMilliseconds"];
                match on {
                    Ty::Timestamp | Ty::Dyn => Ok(Ty::Int),
                    Ty::Duration if of_duration.contains(&name) && args.is_empty() => Ok(Ty::Int),
                    other => Err(not_on(other)),
                }
            }
            _ => Err(wrong("is not called that way".into())),
        }
    }

    fn comprehension(&mut self, c: &'s ComprehensionExpr, depth: usize) -> Checked {
        let (range, range_cost) = self.check(&c.iter_range, depth)?;
        let (first, second) = match &range {
            Ty::List(elem) if c.iter_var2.is_some() => (Ty::Int, (**elem).clone()),
            Ty::List(elem) => ((**elem).clone(), Ty::Dyn),
            Ty::Map(value) => (Ty::Dyn, (**value).clone()),
            Ty::Record(_) | Ty::Object(_) => (Ty::String, Ty::Dyn),
            Ty::Dyn => (Ty::Dyn, Ty::Dyn),
            other => {
                let m = format!(
                    "only a list or a map can be iterated, this is {}",
                    other.describe()
                );
                return Err(self.at_start(&c.iter_range, m));
            }
        };
        let bound = self.bound(&c.iter_range, &range);
        let (accu, init_cost) = self.check(&c.accu_init, depth)?;
        let mark = self.locals.len();
        self.locals
            .extend([(c.accu_var.as_str(), accu), (c.iter_var.as_str(), first)]);
        self.locals
            .extend(c.iter_var2.as_deref().map(|var| (var, second)));
        let body = self.check(&c.loop_cond, depth).and_then(|(_, cond)| {
            let (_, step) = self.check(&c.loop_step, depth)?;
            let (ty, result) = self.check(&c.result, depth)?;
            Ok((ty, cond.saturating_add(step), result))
        });
        self.locals.truncate(mark);
        let (ty, body, result) = body?;
        let fixed = range_cost.saturating_add(init_cost).saturating_add(result);
        Ok((
            ty,
            bound
                .saturating_mul(body)
                .saturating_add(fixed)
                .saturating_add(1),
        ))
    }

    /// How many elements a macro may iterate over.
    fn bound(&self, range: &IdedExpr, ty: &Ty) -> u64 {
        let global = |name: &str| !self.locals.iter().any(|(n, _)| *n == name);
        match (&range.expr, ty) {
            (Expr::List(list), _) => list.elements.len() as u64,
            (Expr::Map(map), _) => map.entries.len() as u64,
            (Expr::Ident(name), _) if name == "changed" && global(name) => {
                unified::fields(self.scope.entity).len() as u64
            }
            (_, Ty::Record(entity)) => unified::fields(*entity).len() as u64 + 1,
            (_, Ty::Object(obj)) => obj.fields().len() as u64,
            // Connection metadata, or what a macro made of something.
            _ => UNKNOWN_LENGTH,
        }
    }

    /// The result must be what `want` asks for.
    fn want(&self, root: &IdedExpr, ty: &Ty, want: &Want) -> Result<(), ExprError> {
        let refuse =
            |what: &str| Err(self.at_start(root, format!("{what}, this is {}", ty.describe())));
        let field = match want {
            Want::Bool if ty.boolish() => return Ok(()),
            Want::Bool => return refuse("the condition must be a boolean"),
            Want::Field(_) if matches!(ty, Ty::Null | Ty::Dyn) => return Ok(()),
            Want::Field(field) => *field,
        };
        match field {
            FieldType::Text if ty.is_text() => Ok(()),
            FieldType::Number if matches!(ty, Ty::Double | Ty::Int) => Ok(()),
            FieldType::Boolean if *ty == Ty::Bool => Ok(()),
            FieldType::Date if *ty == Ty::Timestamp => Ok(()),
            FieldType::Status | FieldType::Priority
                if *ty == Ty::String || *ty == Ty::Enum(field) =>
            {
                self.branch_words(field, root)
            }
            FieldType::Text => refuse("the value must be a string or null"),
            FieldType::Number => refuse("the value must be a number or null"),
            FieldType::Boolean => refuse("the value must be a boolean or null"),
            FieldType::Date => refuse("the value must be a timestamp or null"),
            FieldType::Status | FieldType::Priority => {
                refuse(&format!("the value must be a {} or null", enum_name(field)))
            }
        }
    }

    /// The string literals an enum field's value may be (through `?:`) must be its words.
    fn branch_words(&self, field: FieldType, expr: &IdedExpr) -> Result<(), ExprError> {
        match &expr.expr {
            Expr::Call(call)
                if call.func_name == operators::CONDITIONAL && call.args.len() == 3 =>
            {
                self.branch_words(field, &call.args[1])?;
                self.branch_words(field, &call.args[2])
            }
            _ => self.words(&Ty::Enum(field), expr),
        }
    }
}

/// The type of an arithmetic operation, if cel-rust can perform it.
fn arithmetic(name: &str, a: &Ty, b: &Ty) -> Option<Ty> {
    use Ty::*;
    use operators::{ADD, MODULO, SUBSTRACT};
    match (name, a, b) {
        (_, Dyn, other) | (_, other, Dyn) => {
            let never = matches!(other, Bool | Null | Type | Map(_) | Record(_) | Object(_));
            (!never).then_some(Dyn)
        }
        (MODULO, Int, Int) => Some(Int),
        (MODULO, Uint, Uint) => Some(Uint),
        (MODULO, _, _) => None,
        (_, Int, Int) => Some(Int),
        (_, Uint, Uint) => Some(Uint),
        (_, Double, Double) => Some(Double),
        (ADD, a, b) if a.is_text() && b.is_text() => Some(String),
        (ADD, Bytes, Bytes) => Some(Bytes),
        (ADD, List(x), List(y)) => Some(List(Box::new((**x).clone().join((**y).clone())))),
        (ADD, Timestamp, Duration) | (ADD, Duration, Timestamp) => Some(Timestamp),
        (ADD | SUBSTRACT, Duration, Duration) => Some(Duration),
        (SUBSTRACT, Timestamp, Duration) => Some(Timestamp),
        (SUBSTRACT, Timestamp, Timestamp) => Some(Duration),
        _ => None,
    }
}

/// Variables of one evaluation.
#[derive(Clone)]
pub struct Activation {
    pub record: Value,
    pub previous: Value,
    pub changed: Value,
    pub connection: Value,
    pub customer: Value,
    pub now: Value,
    pub target: Option<Value>,
}

/// `record` (or `previous`, `target`): the unified fields of `entity` in `data`, typed as
/// the module doc says, plus `key`.
pub fn record_value(entity: EntityType, key: &str, data: &Json) -> Value {
    let fields = unified::fields(entity).iter().map(|(name, field)| {
        let value = match (field, data.get(name)) {
            (FieldType::Number, Some(Json::Number(n))) => n.as_f64().map(Value::Float),
            (FieldType::Boolean, Some(Json::Bool(b))) => Some(Value::Bool(*b)),
            (FieldType::Date, Some(Json::String(s))) => {
                DateTime::parse_from_rfc3339(s).ok().map(Value::Timestamp)
            }
            (FieldType::Text | FieldType::Status | FieldType::Priority, Some(Json::String(s))) => {
                Some(Value::from(s.as_str()))
            }
            _ => None,
        };
        (Key::from(*name), value.unwrap_or(Value::Null))
    });
    let key = (Key::from("key"), Value::from(key));
    Value::Map(Map {
        map: Arc::new(fields.chain([key]).collect()),
    })
}

/// `changed`: the names of the fields that changed.
pub fn changed_value(names: &[&str]) -> Value {
    Value::List(Arc::new(
        names.iter().map(|name| Value::from(*name)).collect(),
    ))
}

/// `connection`; metadata that is not a JSON object is an empty map.
pub fn connection_value(
    id: &str,
    system_key: &str,
    label: Option<&str>,
    metadata: Option<&Json>,
) -> Value {
    let metadata = match metadata {
        Some(object @ Json::Object(_)) => json_value(object),
        _ => Value::Map(Map {
            map: Arc::default(),
        }),
    };
    let (id, system_key, label) = (Value::from(id), Value::from(system_key), Value::from(label));
    object([
        ("id", id),
        ("systemKey", system_key),
        ("label", label),
        ("metadata", metadata),
    ])
}

/// `customer`.
pub fn customer_value(id: &str, external_id: Option<&str>) -> Value {
    object([
        ("id", Value::from(id)),
        ("externalId", Value::from(external_id)),
    ])
}

/// `now`.
pub fn now_value(at: DateTime<Utc>) -> Value {
    Value::Timestamp(at.fixed_offset())
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let map = fields
        .into_iter()
        .map(|(name, value)| (Key::from(name), value));
    Value::Map(Map {
        map: Arc::new(map.collect()),
    })
}

/// Any JSON as CEL: integers stay ints (uints above `i64::MAX`), other numbers are doubles.
pub fn json_value(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => Value::UInt(u),
            (None, None, f) => f.map_or(Value::Null, Value::Float),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_value).collect())),
        Json::Object(fields) => {
            let map = fields
                .iter()
                .map(|(k, v)| (Key::from(k.as_str()), json_value(v)));
            Value::Map(Map {
                map: Arc::new(map.collect()),
            })
        }
    }
}

/// A CEL value as JSON: timestamps as RFC 3339 in UTC (to the second, or with the fraction
/// digits they need), doubles as JSON floats (whole ones too), map keys as strings. Durations,
/// bytes, types and other values have no JSON form: an error.
pub fn to_json(value: &Value) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => Json::Number(
            serde_json::Number::from_f64(*f).ok_or_else(|| format!("{f} has no JSON form"))?,
        ),
        Value::String(s) => Json::String(s.to_string()),
        Value::Timestamp(t) => Json::from(t.to_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Value::List(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(map) => {
            let fields = map
                .map
                .iter()
                .map(|(k, v)| Ok((k.to_string(), to_json(v)?)));
            Json::Object(fields.collect::<Result<_, String>>()?)
        }
        other => return Err(format!("a {} value has no JSON form", other.type_of())),
    })
}

/// Evaluates compiled expressions; cheap to create (one per batch of records), not shared
/// across threads.
pub struct Evaluator {
    root: Context<'static, 'static>,
}

impl Default for Evaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl Evaluator {
    pub fn new() -> Self {
        Evaluator {
            root: Context::with_env(Arc::clone(&ENV)),
        }
    }

    /// Evaluates a condition (compiled with [`Want::Bool`]).
    pub fn matches(&self, expr: &Compiled, vars: &Activation) -> Result<bool, String> {
        self.eval(expr, vars, |value| match value.downcast_ref::<CelBool>() {
            Some(b) => Ok(*b.inner()),
            None if value.get_type().kind() == Kind::NullType => {
                Err("the condition gave null, not a boolean".into())
            }
            None => Err(format!(
                "the condition gave a {}, not a boolean",
                value.get_type().name()
            )),
        })
    }

    /// Evaluates an expression to its value.
    pub fn value(&self, expr: &Compiled, vars: &Activation) -> Result<Value, String> {
        self.eval(expr, vars, value_of)
    }

    fn eval<T>(
        &self,
        expr: &Compiled,
        vars: &Activation,
        then: impl FnOnce(&dyn Val) -> Result<T, String>,
    ) -> Result<T, String> {
        let bound = Bound::new(vars);
        let mut scope = self.root.new_inner_scope();
        scope.set_variable_resolver(&bound);
        let value = Value::resolve_val(&expr.expression, &scope).map_err(|e| match &e {
            ExecutionError::NoSuchOverload(o)
                if o.function() == operators::INDEX
                    && o.argument_types().first().is_some_and(|t| t == "null_type") =>
            {
                "cannot read a field of null (`previous` is null for a created record)".into()
            }
            _ => e.to_string(),
        })?;
        then(value.as_ref())
    }
}

/// A result as a [`Value`] (`Value::try_from` knows no [`MapView`]).
fn value_of(value: &dyn Val) -> Result<Value, String> {
    match (value.get_type().kind(), value.downcast_ref::<CelList<'_>>()) {
        (Kind::Map, _) => {
            let (Some(keys), Some(index)) = (value.as_iterable(), value.as_indexer()) else {
                return Err("a map that cannot be read".into());
            };
            let (mut map, mut keys) = (HashMap::new(), keys.iter());
            while let Some(key) = keys.next() {
                let item = value_of(index.get(key).map_err(|e| e.to_string())?.as_ref())?;
                let key = Value::try_from(key).map_err(|e| e.to_string())?;
                map.insert(
                    key.try_into().map_err(|k| format!("{k:?} is no map key"))?,
                    item,
                );
            }
            Ok(Value::Map(Map { map: Arc::new(map) }))
        }
        (Kind::List, Some(list)) => {
            let items = list.inner().iter().map(|item| value_of(item.as_ref()));
            Ok(Value::List(Arc::new(items.collect::<Result<_, _>>()?)))
        }
        _ => Value::try_from(value).map_err(|e| e.to_string()),
    }
}

/// The variables of an [`Activation`], resolved on access without copying.
struct Bound<'a>([Slot<'a>; 6], Option<Slot<'a>>);

impl<'a> Bound<'a> {
    fn new(vars: &'a Activation) -> Self {
        let Activation {
            record,
            previous,
            changed,
            connection,
            customer,
            now,
            target,
        } = vars;
        let slots = [record, previous, changed, connection, customer, now].map(Slot::new);
        Bound(slots, target.as_ref().map(Slot::new))
    }
}

impl VariableResolver for Bound<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let index = match variable {
            "target" => return self.1.as_ref().map(Slot::get),
            "record" => 0,
            "previous" => 1,
            "changed" => 2,
            "connection" => 3,
            "customer" => 4,
            "now" => 5,
            _ => return None,
        };
        Some(self.0[index].get())
    }
}

/// One variable: a map is viewed in place, anything else converted on first use.
struct Slot<'a> {
    value: &'a Value,
    map: Option<MapView<'a>>,
    other: OnceLock<Box<dyn Val + 'a>>,
}

impl<'a> Slot<'a> {
    fn new(value: &'a Value) -> Self {
        let map = match value {
            Value::Map(map) => Some(MapView::new(map)),
            _ => None,
        };
        Slot {
            value,
            map,
            other: OnceLock::new(),
        }
    }

    fn get(&self) -> CowVal<'_, '_> {
        match &self.map {
            Some(view) => CowVal::Borrowed(view),
            None => CowVal::Borrowed(self.other.get_or_init(|| val_of(self.value)).as_ref()),
        }
    }
}

/// A CEL value borrowing from a [`Value`] (maps are viewed, not copied).
fn val_of<'a>(value: &'a Value) -> Box<dyn Val + 'a> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Int(i) => Box::new(CelInt::from(*i)),
        Value::UInt(u) => Box::new(CelUInt::from(*u)),
        Value::Float(f) => Box::new(CelDouble::from(*f)),
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Bytes(b) => Box::new(CelBytes::from(b.as_slice())),
        Value::Timestamp(t) => Box::new(CelTimestamp::from(*t)),
        Value::Duration(d) => Box::new(CelDuration::from(*d)),
        Value::List(items) => Box::new(CelList::from(items.iter().map(val_of).collect::<Vec<_>>())),
        Value::Map(map) => Box::new(MapView::new(map)),
        other => Box::<dyn Val>::try_from(other.clone()).unwrap_or_else(|_| Box::new(CelNull)),
    }
}

/// A [`Map`] seen as a CEL map: reading a field converts that field alone; what needs the
/// whole map (iterating, `in` with a non-string key) converts it once.
///
/// It does not pass for cel-rust's own map type, whose check (`downcast_ref`) every field
/// access makes: so a map literal's `==` does not know it ([`prepare`]).
#[derive(Debug)]
struct MapView<'a> {
    map: &'a Map,
    full: OnceLock<CelMap<'a>>,
}

impl<'a> MapView<'a> {
    fn new(map: &'a Map) -> Self {
        MapView {
            map,
            full: OnceLock::new(),
        }
    }

    fn full(&self) -> &CelMap<'a> {
        self.full.get_or_init(|| {
            let entries = self
                .map
                .map
                .iter()
                .map(|(key, value)| (map_key(key), val_of(value)));
            CelMap::from(entries.collect::<HashMap<_, _>>())
        })
    }
}

fn map_key(key: &Key) -> CelMapKey<'_> {
    match key {
        Key::Int(i) => CelMapKey::from(*i),
        Key::Uint(u) => CelMapKey::from(*u),
        Key::Bool(b) => CelMapKey::from(*b),
        Key::String(s) => CelMapKey::from(s.as_str()),
    }
}

impl<'a> Val for MapView<'a> {
    fn get_type(&self) -> &Type {
        &MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn into_indexer<'v>(self: Box<Self>) -> Option<Box<dyn Indexer + 'v>>
    where
        Self: 'v,
    {
        Some(self)
    }

    fn as_iterable<'b, 'v>(&'b self) -> Option<&'b (dyn Iterable + 'v)>
    where
        Self: 'v,
    {
        Some(self.full())
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(self)
    }

    /// Same keys, equal values.
    fn equals(&self, other: &dyn Val) -> bool {
        let (Some(size), Some(index)) = (other.as_sizer(), other.as_indexer()) else {
            return false;
        };
        other.get_type().kind() == Kind::Map
            && *size.size().inner() == self.map.map.len() as i64
            && self.map.map.iter().all(|(key, value)| {
                let key = map_key(key);
                let found = index.get(key.inner());
                found.is_ok_and(|found| val_of(value).equals(found.as_ref()))
            })
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(MapView::new(self.map))
    }
}

impl Indexer for MapView<'_> {
    fn get<'b, 'v>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match key.downcast_ref::<CelString<'_>>() {
            Some(name) => match self.map.get(&KeyRef::String(name.inner())) {
                Some(value) => Ok(CowVal::Owned(val_of(value))),
                None => Err(ExecutionError::no_such_key(name.inner())),
            },
            None => self.full().get(key),
        }
    }

    fn steal<'v>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

impl Container for MapView<'_> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        match key.downcast_ref::<CelString<'_>>() {
            Some(name) => Ok(self.map.get(&KeyRef::String(name.inner())).is_some()),
            None => self.full().contains(key),
        }
    }
}

impl Sizer for MapView<'_> {
    fn size(&self) -> CelInt {
        CelInt::from(self.map.map.len() as i64)
    }
}

impl Zeroer for MapView<'_> {
    fn is_zero_value(&self) -> bool {
        self.map.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"record.priority == "URGENT" && record.status == "OPEN" && (previous == null || previous.priority != "URGENT")"#;

    fn condition(source: &str) -> Result<Compiled, ExprError> {
        let scope = Scope {
            entity: EntityType::WorkOrder,
            target: None,
        };
        compile(source, &scope, Want::Bool)
    }

    fn refused(source: &str) -> ExprError {
        condition(source).expect_err(source)
    }

    fn work_order(data: Json) -> Value {
        record_value(EntityType::WorkOrder, "WO-1", &data)
    }

    fn activation(data: Json, previous: Option<Json>) -> Activation {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").map(|t| t.to_utc());
        Activation {
            record: work_order(data),
            previous: previous.map_or(Value::Null, work_order),
            changed: changed_value(&["priority", "status", "title"]),
            connection: connection_value("c1", "demo", None, Some(&json!({"region": "EU"}))),
            customer: customer_value("cu1", Some("ext-9")),
            now: now_value(now.unwrap_or_default()),
            target: None,
        }
    }

    fn urgent() -> Json {
        json!({"title": "Pump", "status": "OPEN", "priority": "URGENT", "dueAt": "2026-02-01T00:00:00Z"})
    }

    fn eval(source: &str, vars: &Activation) -> Result<bool, String> {
        Evaluator::new().matches(&condition(source).expect(source), vars)
    }

    #[test]
    fn the_example_condition_on_created_and_updated() {
        let expr = condition(EXAMPLE).unwrap();
        let evaluator = Evaluator::new();
        let cases = [
            (activation(urgent(), None), true),
            (activation(urgent(), Some(urgent())), false),
            (
                activation(urgent(), Some(json!({"priority": "HIGH"}))),
                true,
            ),
            (
                activation(json!({"priority": "LOW", "status": "OPEN"}), None),
                false,
            ),
        ];
        for (vars, matches) in cases {
            assert_eq!(evaluator.matches(&expr, &vars), Ok(matches));
        }
        assert_eq!(expr.source(), EXAMPLE);
        assert!(expr.cost() > 10 && expr.cost() < 30, "{}", expr.cost());
    }

    /// Each refusal: "line:column source => how the message starts".
    #[test]
    fn refusals() {
        let refusals = [
            "1:8 record.priorty == 'URGENT' => WORK_ORDER has no field `priorty`; its fields are key, title, instructions, status,",
            "2:14 true &&\n  previous . dueAtt > now => WORK_ORDER has no field `dueAtt`",
            "1:8 record['nope'] == 'x' => WORK_ORDER has no field `nope`",
            "1:12 has(record.titel) => WORK_ORDER has no field `titel`",
            "1:12 connection.system == 'x' => connection has no field `system`; its fields are id, systemKey, label, metadata",
            "1:14 record.title.size == 1 => a string has no fields",
            "1:1 recrd.title == 'x' => unknown variable `recrd`; the variables are record, previous, changed, connection, customer, now",
            "1:1 target.name == 'x' => unknown variable `target`",
            "1:14 record.title.lowerAscii() == 'x' => unknown function `lowerAscii`",
            "1:1 max(1, 2) == 2 => unknown function `max`",
            "1:8 record.all(k, v, v == null) => `all` takes a variable and an expression",
            "1:4 Foo{a: 1} == null => messages are not supported",
            "1:20 record.priority == \"URGNET\" => `URGNET` is not a priority; use one of NONE, LOW, MEDIUM, HIGH, URGENT",
            "1:1 'CLOSED' != record.status => `CLOSED` is not a status; use one of OPEN, IN_PROGRESS, ON_HOLD",
            "1:27 record.status in [\"OPEN\", \"ONHOLD\"] => `ONHOLD` is not a status",
            "1:14 record.title == 1 => cannot compare a string with an int",
            "1:14 record.dueAt == '2026-01-01' => cannot compare a timestamp with a string",
            "1:14 record.title < 3 => cannot order a string and an int with `<`",
            "1:1 record.title && true => `&&` needs booleans; this is a string",
            "1:8 'a' in 'abc' => `in` needs a list or a map, this is a string",
            "1:5 1.5 % 2.0 == 1.0 => cannot apply `%` to a double and a double",
            "1:17 now > timestamp('yesterday') => `yesterday` is not an RFC 3339 timestamp",
            "1:22 record.title.matches('(') => invalid regular expression",
            "1:2  record.title => the condition must be a boolean, this is a string",
            "1:1 connection.metadata => the condition must be a boolean, this is a map",
            "2:27 record.title == 'x' &&\n  (record.status == 'OPEN' => syntax error: missing ')' at the end",
            "2:9 record.title == 'é' &&\n 'ü' == recrd => unknown variable `recrd`",
            "1:12 'ü' == 1 +  => syntax error: the expression ends too early",
            "1:7 record.?title == 'x' => syntax error: unsupported syntax '.?'",
            "1:5 has(1) => syntax error: invalid argument to has() macro",
            "1:1     => the expression is empty",
        ];
        let mut bad = vec![];
        for row in refusals {
            let (at, rest) = row.split_once(' ').unwrap_or_default();
            let (source, message) = rest.split_once(" => ").unwrap_or_default();
            let e = refused(source);
            if format!("{}:{}", e.line, e.column) != at || !e.message.starts_with(message) {
                bad.push(format!("{source:?}: {e}"));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
        let e = refused("record.title == 1");
        assert_eq!(
            e.to_string(),
            "line 1, column 14: cannot compare a string with an int"
        );
        let part = Scope {
            entity: EntityType::PurchaseOrder,
            target: None,
        };
        let e = compile("record.total + 10 > 2.0", &part, Want::Bool).unwrap_err();
        assert_eq!(
            e.message,
            "cannot apply `+` to a double and an int; write 10.0"
        );
    }

    #[test]
    fn limits() {
        let long = format!("record.title == '{}'", "x".repeat(MAX_SOURCE));
        assert_eq!(
            refused(&long).message,
            "the expression is longer than 4096 bytes"
        );
        let parens = |n| format!("{}true{}", "(".repeat(n), ")".repeat(n));
        assert!(
            condition(&parens(95)).is_ok(),
            "parsed on a stack of its own"
        );
        assert_eq!(
            refused(&parens(150)).message,
            "the expression is nested too deeply"
        );
        let sum = |n| format!("{} > 0", vec!["1"; n].join(" + "));
        let deepest = condition(&sum(MAX_DEPTH - 1)).unwrap();
        let vars = activation(urgent(), None);
        assert_eq!(
            Evaluator::new().matches(&deepest, &vars),
            Ok(true),
            "in a 2 MiB stack"
        );
        assert_eq!(
            refused(&sum(MAX_DEPTH + 1)).message,
            "the expression is nested too deeply"
        );
        let many = vec!["1"; 600].join(", ");
        assert!(
            refused(&format!("size([{many}]) > 0"))
                .message
                .contains("more than 500 parts")
        );
        let big = (0..60)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let nested = format!("[{big}].all(x, [{big}].all(y, [{big}].all(z, x + y + z >= 0)))");
        let e = refused(&nested);
        assert!(e.message.starts_with("the expression may cost "), "{e}");
        assert!(e.message.ends_with("steps; the limit is 100000"), "{e}");
        let fine = condition(&format!("[{big}].all(x, [{big}].exists(y, x == y))")).unwrap();
        assert!(
            fine.cost() > 3600 && fine.cost() < MAX_COST,
            "{}",
            fine.cost()
        );
        let cost = |source| condition(source).unwrap().cost();
        assert!((8192..MAX_COST).contains(&cost("connection.metadata.exists(k, k == 'a')")));
        assert!((12..150).contains(&cost("changed.exists(c, c == 'title')")));
        assert!(cost("record.exists(f, f == 'title')") < 150);
    }

    /// Each condition is true for the activation.
    #[test]
    fn evaluations() {
        let vars = activation(urgent(), None);
        let conditions = [
            "record.dueAt < now && record.dueAt > timestamp('2026-01-01T00:00:00Z')",
            "now - record.dueAt > duration('24h') && record.dueAt + duration('1h') < now",
            "\"priority\" in changed && !('dueAt' in changed) && size(changed) > 2",
            "changed.exists(c, c == 'title') && changed.all(c, c != 'key')",
            "connection.metadata.region == \"EU\" && connection.label == null",
            "!has(connection.metadata.zone) && customer.externalId == 'ext-9'",
            "has(record.title) && record.title.startsWith('Pu') && record.completedAt == null",
            "record.title.matches('^P[a-z]+$') && size(record) == 13 && record.key == 'WO-1'",
            "record.exists(f, f == 'key') && record == record && record != previous",
            "{'region': 'EU'} == connection.metadata && connection.metadata == {'region': 'EU'}",
            "[connection.metadata] == [{'region': 'EU'}] && {} != customer",
            "record.status in ['OPEN', 'ON_HOLD'] && [1, 2].map(x, x * 2) == [2, 4]",
            // cel-rust compares numbers of different kinds by value
            "1.5 > 1 && 1 == 1.0 && 1u == 1 && 1u < 2.5 && 2 > 1u",
            // every allowed function exists in the standard library
            "size('ab') == 2 && 'ab'.size() == 2 && 'ab'.contains('b') && 'ab'.endsWith('b')",
            "matches('ab', 'b') && string(1) == '1' && int('2') == 2 && uint(2) == 2u",
            "double(2) == 2.0 && bool('true') && bytes('a') == b'a' && dyn(1) == 1",
            "type(1) == int && duration('1m') < duration('1h') && duration('90m').getHours() == 1",
            "now.getMonth() == 2 && now.getDayOfYear() == 59 && now.getDayOfMonth() == 0",
            "now.getDate() == 1 && now.getDayOfWeek() == 0 && now.getHours('Europe/Paris') == 13",
            "now.getFullYear() + now.getMinutes() + now.getSeconds() + now.getMilliseconds() == 2026",
        ];
        for source in conditions {
            assert_eq!(eval(source, &vars), Ok(true), "{source}");
        }
        let part = Scope {
            entity: EntityType::PurchaseOrder,
            target: None,
        };
        let expr = compile(
            "record.total > 10000 && record.total == 12000",
            &part,
            Want::Bool,
        );
        let record = record_value(EntityType::PurchaseOrder, "PO-1", &json!({"total": 12000}));
        let vars = Activation {
            record,
            ..activation(json!({}), None)
        };
        assert_eq!(Evaluator::new().matches(&expr.unwrap(), &vars), Ok(true));
        let with_target = Scope {
            entity: EntityType::WorkOrder,
            target: Some(EntityType::Asset),
        };
        assert!(compile("target.name == record.title", &with_target, Want::Bool).is_ok());
    }

    /// Runtime errors are errors, not panics.
    #[test]
    fn evaluation_errors() {
        let vars = activation(urgent(), None);
        let missing = eval("connection.metadata.zone == \"EU\"", &vars);
        assert_eq!(missing, Err("No such key: zone".into()));
        assert!(
            eval("record.completedAt < now", &vars).is_err(),
            "null is not ordered"
        );
        let previous = eval("previous.priority == 'LOW'", &vars).unwrap_err();
        assert!(
            previous.starts_with("cannot read a field of null"),
            "{previous}"
        );
        let null = Evaluator::new().matches(&condition("dyn(previous)").unwrap(), &vars);
        assert_eq!(null, Err("the condition gave null, not a boolean".into()));
    }

    #[test]
    fn field_values() {
        let scope = Scope {
            entity: EntityType::WorkOrder,
            target: None,
        };
        let field = |source: &str, ft| compile(source, &scope, Want::Field(ft));
        let vars = activation(urgent(), None);
        let e = field("\"CLOSED\"", FieldType::Status).unwrap_err();
        assert!(e.message.starts_with("`CLOSED` is not a status"), "{e}");
        assert!(field("\"COMPLETED\"", FieldType::Status).is_ok());
        assert!(
            field(
                "record.priority == 'LOW' ? 'HIGH' : 'URGNT'",
                FieldType::Priority
            )
            .is_err()
        );
        assert!(field("record.status", FieldType::Priority).is_err());
        let copy = field("record.title + \" (copy)\"", FieldType::Text).unwrap();
        assert_eq!(
            Evaluator::new().value(&copy, &vars),
            Ok(Value::from("Pump (copy)"))
        );
        let e = field("1", FieldType::Text).unwrap_err();
        assert_eq!(
            e.message,
            "the value must be a string or null, this is an int"
        );
        assert!(field("null", FieldType::Date).is_ok());
        assert!(field("now + duration('48h')", FieldType::Date).is_ok());
        assert!(field("2.5 * 2.0", FieldType::Number).is_ok());
        let list = field("dyn([connection.metadata, record.key])", FieldType::Text).unwrap();
        let list = Evaluator::new().value(&list, &vars).map(|v| to_json(&v));
        assert_eq!(list, Ok(Ok(json!([{"region": "EU"}, "WO-1"]))));
    }

    #[test]
    fn records_from_json() {
        let data = json!({"title": 5, "status": "OPEN", "dueAt": "not a date", "extra": 1});
        let Value::Map(map) = work_order(data) else {
            panic!("a record is a map")
        };
        assert_eq!(
            map.map.len(),
            unified::fields(EntityType::WorkOrder).len() + 1
        );
        let field = |name| map.get(&KeyRef::String(name)).cloned();
        let nulls = [field("title"), field("dueAt"), field("priority")];
        assert!(nulls.iter().all(|v| *v == Some(Value::Null)), "{nulls:?}");
        assert_eq!(
            (field("status"), field("extra")),
            (Some(Value::from("OPEN")), None)
        );
        let part = record_value(EntityType::Part, "P", &json!({"quantity": 5}));
        let Value::Map(part) = part else {
            panic!("a record is a map")
        };
        let quantity = part.get(&KeyRef::String("quantity"));
        assert!(
            matches!(quantity, Some(Value::Float(f)) if *f == 5.0),
            "{quantity:?}"
        );
    }

    #[test]
    fn json_round_trips() {
        let data = json!({"a": [1, 2.5, "x", null, true], "b": {"c": -3, "d": u64::MAX}});
        assert_eq!(to_json(&json_value(&data)), Ok(data));
        let at = DateTime::parse_from_rfc3339("2026-01-01T19:07:00.250-05:00").unwrap();
        assert_eq!(
            to_json(&now_value(at.to_utc())),
            Ok(json!("2026-01-02T00:07:00.250Z"))
        );
        assert!(to_json(&Value::Float(5.0)).unwrap().is_f64());
        assert!(to_json(&Value::Bytes(Arc::new(vec![1]))).is_err());
        assert!(to_json(&Value::Float(f64::NAN)).is_err());
        let back = to_json(&work_order(urgent())).unwrap();
        assert_eq!(
            (&back["dueAt"], &back["key"]),
            (&json!("2026-02-01T00:00:00Z"), &json!("WO-1"))
        );
    }

    #[test]
    fn compiled_is_send_and_sync() {
        fn send_sync<T: Send + Sync + 'static>(_: &T) {}
        send_sync(&condition(EXAMPLE).unwrap());
    }

    /// `cargo test --release -- --ignored --nocapture bench`
    #[test]
    #[ignore]
    #[expect(clippy::print_stderr, reason = "a benchmark reports on stderr")]
    fn bench_conditions() {
        let conditions = |words: [&str; 4]| -> Vec<_> {
            let sources = (0..20).map(|i| EXAMPLE.replacen("URGENT", words[i % 4], 1));
            sources.map(|source| condition(&source).unwrap()).collect()
        };
        let mixed = conditions(["URGENT", "HIGH", "LOW", "MEDIUM"]);
        let urgent_only = conditions(["URGENT"; 4]);
        let was_high = || activation(urgent(), Some(json!({"priority": "HIGH"})));
        let evaluator = Evaluator::new();
        for (name, conditions, vars) in [
            ("CREATED, mixed", &mixed, activation(urgent(), None)),
            ("UPDATED, mixed", &mixed, was_high()),
            ("UPDATED, every clause evaluated", &urgent_only, was_high()),
        ] {
            let (rounds, started, mut hits) = (50_000, std::time::Instant::now(), 0);
            for _ in 0..rounds {
                for expr in conditions {
                    hits += usize::from(evaluator.matches(expr, &vars) == Ok(true));
                }
            }
            let evaluations = rounds * conditions.len();
            let ns = started.elapsed().as_nanos() / evaluations as u128;
            eprintln!("{name}: {evaluations} evaluations, {ns} ns/eval ({hits} true)");
        }
        let started = std::time::Instant::now();
        (0..1000).for_each(|_| drop(condition(EXAMPLE)));
        eprintln!("compile: {} µs each", started.elapsed().as_micros() / 1000);
    }
}
