//! A fast path for the conditions most flows are made of: `&&`, `||` and `!` over comparisons
//! of a record's (or its previous version's) unified fields with literals, `"f" in changed`,
//! `previous == null`, and `startsWith` / `endsWith` / `contains` with a literal. Such a
//! condition is compiled, once it has been checked, into a small tree that reads the
//! record's JSON directly: no CEL value is built for the record, which is most of what an
//! evaluation costs in the interpreter. Anything else (dates, arithmetic, macros, functions,
//! `connection`, `customer`, `now`) is left to the interpreter.
//!
//! The fast path gives what cel-rust 0.15 gives, errors included, which a test checks on
//! random records: `&&` is false when either side is false even if the other fails (but an
//! error on its right side is an error, as the interpreter evaluates it with `?`), `||`
//! likewise for true; `==` and `!=` never fail (a null field equals only `null`, numbers
//! compare across int and double); an ordering, or a string function, on a null field fails;
//! a field of a null `previous` fails.

use cel::{
    IdedExpr,
    common::ast::{Expr, LiteralValue, operators},
};
use serde_json::Value as Json;

use crate::{
    catalog::EntityType,
    records::unified::{self, FieldType},
};

/// What a fast condition reads: the record's unified fields and key, its previous version,
/// and the names of the fields that changed.
pub struct Facts<'a> {
    pub key: &'a str,
    pub record: &'a Json,
    pub previous: Option<&'a Json>,
    pub changed: &'a [&'a str],
}

/// A condition compiled for the fast path.
#[derive(Debug)]
pub enum Fast {
    Const(bool),
    And(Box<Fast>, Box<Fast>),
    Or(Box<Fast>, Box<Fast>),
    Not(Box<Fast>),
    Compare(Field, Op, Literal),
    Text(Field, TextOp, String),
    Changed(String),
    /// `previous == null` (true) or `previous != null` (false).
    PreviousIsNull(bool),
}

/// A unified field of `record` or `previous`.
#[derive(Debug)]
pub struct Field {
    previous: bool,
    /// `None`: the record's key.
    name: Option<&'static str>,
    kind: FieldType,
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy)]
pub enum TextOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
}

/// A field's value, typed as the interpreter would see it.
#[derive(Debug, PartialEq)]
enum Seen<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Text(&'a str),
}

/// The evaluation failed (the interpreter would report an error).
pub struct Failed;

/// The fast form of a checked condition over `entity`'s records, if it has one.
pub fn compile(root: &IdedExpr, entity: EntityType) -> Option<Fast> {
    let fast = node(root, entity, 0)?;
    Some(fast)
}

/// How deep the fast form may nest (the checker bounds the expression itself).
const MAX_DEPTH: usize = 64;

fn node(expr: &IdedExpr, entity: EntityType, depth: usize) -> Option<Fast> {
    if depth > MAX_DEPTH {
        return None;
    }
    let Expr::Call(call) = &expr.expr else {
        return match literal(expr)? {
            Literal::Bool(b) => Some(Fast::Const(b)),
            _ => None,
        };
    };
    let args = &call.args;
    let name = call.func_name.as_str();
    if let Some(target) = &call.target {
        let op = match name {
            "startsWith" => TextOp::StartsWith,
            "endsWith" => TextOp::EndsWith,
            "contains" => TextOp::Contains,
            _ => return None,
        };
        let field = field(target, entity)?;
        let [arg] = args.as_slice() else {
            return None;
        };
        return match (field.kind, literal(arg)?) {
            (FieldType::Text | FieldType::Status | FieldType::Priority, Literal::Text(text)) => {
                Some(Fast::Text(field, op, text))
            }
            _ => None,
        };
    }
    match (name, args.as_slice()) {
        (operators::LOGICAL_AND, [l, r]) => Some(Fast::And(
            Box::new(node(l, entity, depth + 1)?),
            Box::new(node(r, entity, depth + 1)?),
        )),
        (operators::LOGICAL_OR, [l, r]) => Some(Fast::Or(
            Box::new(node(l, entity, depth + 1)?),
            Box::new(node(r, entity, depth + 1)?),
        )),
        (operators::LOGICAL_NOT, [operand]) => {
            Some(Fast::Not(Box::new(node(operand, entity, depth + 1)?)))
        }
        (operators::IN, [name, list]) => match (&list.expr, literal(name)?) {
            (Expr::Ident(ident), Literal::Text(name)) if ident == "changed" => {
                Some(Fast::Changed(name))
            }
            _ => None,
        },
        (_, [l, r]) => {
            let op = match name {
                operators::EQUALS => Op::Eq,
                operators::NOT_EQUALS => Op::Ne,
                operators::LESS => Op::Lt,
                operators::LESS_EQUALS => Op::Le,
                operators::GREATER => Op::Gt,
                operators::GREATER_EQUALS => Op::Ge,
                _ => return None,
            };
            comparison(l, op, r, entity)
        }
        _ => None,
    }
}

fn comparison(l: &IdedExpr, op: Op, r: &IdedExpr, entity: EntityType) -> Option<Fast> {
    let previous = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if name == "previous");
    match (literal(l), literal(r)) {
        (Some(l), Some(r)) => return constant(&l, op, &r).map(Fast::Const),
        (None, Some(Literal::Null)) if previous(l) => {
            return match op {
                Op::Eq => Some(Fast::PreviousIsNull(true)),
                Op::Ne => Some(Fast::PreviousIsNull(false)),
                _ => None,
            };
        }
        (Some(Literal::Null), None) if previous(r) => return comparison(r, op, l, entity),
        _ => {}
    }
    let (field, op, value) = match (field(l, entity), literal(r)) {
        (Some(field), Some(value)) => (field, op, value),
        _ => (field(r, entity)?, flipped(op), literal(l)?),
    };
    let fits = match (&value, field.kind) {
        (Literal::Null, _) => matches!(op, Op::Eq | Op::Ne),
        (Literal::Number(_), FieldType::Number) => true,
        (Literal::Bool(_), FieldType::Boolean) => matches!(op, Op::Eq | Op::Ne),
        (Literal::Text(_), FieldType::Text | FieldType::Status | FieldType::Priority) => {
            matches!(op, Op::Eq | Op::Ne)
        }
        _ => false,
    };
    fits.then_some(Fast::Compare(field, op, value))
}

/// `a op b` becomes `b flipped(op) a`.
fn flipped(op: Op) -> Op {
    match op {
        Op::Lt => Op::Gt,
        Op::Le => Op::Ge,
        Op::Gt => Op::Lt,
        Op::Ge => Op::Le,
        other => other,
    }
}

/// A comparison of two literals, where the fast path knows its answer.
fn constant(l: &Literal, op: Op, r: &Literal) -> Option<bool> {
    match (op, l, r) {
        (Op::Eq, l, r) => Some(l == r),
        (Op::Ne, l, r) => Some(l != r),
        (op, Literal::Number(l), Literal::Number(r)) => Some(order(*l, op, *r)),
        _ => None,
    }
}

fn order(l: f64, op: Op, r: f64) -> bool {
    match op {
        Op::Eq => l == r,
        Op::Ne => l != r,
        Op::Lt => l < r,
        Op::Le => l <= r,
        Op::Gt => l > r,
        Op::Ge => l >= r,
    }
}

fn literal(expr: &IdedExpr) -> Option<Literal> {
    let Expr::Literal(value) = &expr.expr else {
        return None;
    };
    Some(match value {
        LiteralValue::Null => Literal::Null,
        LiteralValue::Boolean(b) => Literal::Bool(*b.inner()),
        LiteralValue::Int(i) => Literal::Number(*i.inner() as f64),
        LiteralValue::UInt(u) => Literal::Number(*u.inner() as f64),
        LiteralValue::Double(d) => Literal::Number(*d.inner()),
        LiteralValue::String(s) => Literal::Text(s.inner().to_owned()),
        LiteralValue::Bytes(_) => return None,
    })
}

/// `record.f` or `previous.f` for a unified field `f` that is not a date, or `.key`.
fn field(expr: &IdedExpr, entity: EntityType) -> Option<Field> {
    let Expr::Select(select) = &expr.expr else {
        return None;
    };
    if select.test {
        return None;
    }
    let previous = match &select.operand.expr {
        Expr::Ident(name) if name == "record" => false,
        Expr::Ident(name) if name == "previous" => true,
        _ => return None,
    };
    if select.field == "key" {
        return Some(Field {
            previous,
            name: None,
            kind: FieldType::Text,
        });
    }
    let (name, kind) = unified::fields(entity)
        .iter()
        .find(|(name, _)| *name == select.field)?;
    (*kind != FieldType::Date).then_some(Field {
        previous,
        name: Some(name),
        kind: *kind,
    })
}

impl Fast {
    /// Evaluates the condition on `facts`.
    pub fn eval(&self, facts: &Facts<'_>) -> Result<bool, Failed> {
        match self {
            Fast::Const(b) => Ok(*b),
            Fast::And(l, r) => {
                let left = l.eval(facts);
                if matches!(left, Ok(false)) {
                    return Ok(false);
                }
                match (left, r.eval(facts)?) {
                    (Ok(true), right) => Ok(right),
                    (Err(_), false) => Ok(false),
                    _ => Err(Failed),
                }
            }
            Fast::Or(l, r) => {
                let left = l.eval(facts);
                if matches!(left, Ok(true)) {
                    return Ok(true);
                }
                match (left, r.eval(facts)?) {
                    (Ok(false), right) => Ok(right),
                    (Err(_), true) => Ok(true),
                    _ => Err(Failed),
                }
            }
            Fast::Not(operand) => operand.eval(facts).map(|b| !b),
            Fast::Changed(name) => Ok(facts.changed.contains(&name.as_str())),
            Fast::PreviousIsNull(is_null) => Ok(facts.previous.is_none() == *is_null),
            Fast::Compare(field, op, literal) => {
                let seen = field.read(facts)?;
                match (op, literal, seen) {
                    (Op::Eq, literal, seen) => Ok(equal(&seen, literal)),
                    (Op::Ne, literal, seen) => Ok(!equal(&seen, literal)),
                    (op, Literal::Number(r), Seen::Number(l)) => Ok(order(l, *op, *r)),
                    _ => Err(Failed),
                }
            }
            Fast::Text(field, op, text) => match field.read(facts)? {
                Seen::Text(seen) => Ok(match op {
                    TextOp::StartsWith => seen.starts_with(text.as_str()),
                    TextOp::EndsWith => seen.ends_with(text.as_str()),
                    TextOp::Contains => seen.contains(text.as_str()),
                }),
                _ => Err(Failed),
            },
        }
    }
}

fn equal(seen: &Seen<'_>, literal: &Literal) -> bool {
    match (seen, literal) {
        (Seen::Null, Literal::Null) => true,
        (Seen::Bool(a), Literal::Bool(b)) => a == b,
        (Seen::Number(a), Literal::Number(b)) => a == b,
        (Seen::Text(a), Literal::Text(b)) => *a == b.as_str(),
        _ => false,
    }
}

impl Field {
    /// The field's value as `record_value` would type it (a value of another JSON type is
    /// null); a field of a null `previous` fails.
    fn read<'a>(&self, facts: &Facts<'a>) -> Result<Seen<'a>, Failed> {
        let data = if self.previous {
            facts.previous.ok_or(Failed)?
        } else {
            facts.record
        };
        let Some(name) = self.name else {
            return Ok(Seen::Text(facts.key));
        };
        Ok(match (self.kind, data.get(name)) {
            (FieldType::Number, Some(Json::Number(n))) => {
                n.as_f64().map_or(Seen::Null, Seen::Number)
            }
            (FieldType::Boolean, Some(Json::Bool(b))) => Seen::Bool(*b),
            (FieldType::Text | FieldType::Status | FieldType::Priority, Some(Json::String(s))) => {
                Seen::Text(s)
            }
            _ => Seen::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::flows::expr::{self, Activation, Evaluator, Scope, Want};

    /// Conditions with a fast form, over work orders and parts.
    const WORK_ORDER: &[&str] = &[
        r#"record.priority == "URGENT" && record.status == "OPEN" && (previous == null || previous.priority != "URGENT")"#,
        r#"record.status == "ON_HOLD" && previous.status != "ON_HOLD""#,
        r#"record.title.endsWith("00") && record.priority != "NONE" && 3 >= 0"#,
        r#"!(record.title.startsWith("Inspect")) || "status" in changed"#,
        r#"record.assetKey == null || record.assetKey.contains("7")"#,
        r#"previous != null && (previous.title == "Inspect" || record.key == "WO-1")"#,
        r#"null == previous || "OPEN" == previous.status"#,
        r#"record.remoteStatus != null && record.remoteStatus.startsWith("do")"#,
        "record.title.endsWith(\"1\") && previous.title.endsWith(\"1\")",
        "previous.title.endsWith(\"1\") && record.title.endsWith(\"1\")",
        "previous.title.endsWith(\"1\") || record.title.endsWith(\"1\")",
        "!previous.title.endsWith(\"1\")",
    ];
    const PART: &[&str] = &[
        "record.quantity > 10 && record.unitCost <= 20.5",
        "record.quantity == 5 || record.quantity == null || 100 < record.unitCost",
        "record.unitCost != 0.5 && previous.quantity >= 1u",
        "record.name == \"Part 1\" || record.partNumber.startsWith(\"P-0\")",
    ];

    fn text() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            Just(json!(5)),
            Just(json!(true)),
            "(Inspect|Part|P-0|WO-|do|in_|7|1|00| ){0,4}".prop_map(Json::from),
        ]
    }

    fn word(words: &'static [&'static str]) -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            Just(json!(3)),
            proptest::sample::select(words).prop_map(Json::from),
        ]
    }

    fn number() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            Just(json!("12")),
            (0..30i64).prop_map(Json::from),
            (0.0..40.0f64).prop_map(Json::from),
        ]
    }

    fn work_order() -> impl Strategy<Value = Json> {
        let statuses = FieldType::Status.words();
        let priorities = FieldType::Priority.words();
        (text(), word(statuses), word(priorities), text(), text()).prop_map(
            |(title, status, priority, asset, remote)| {
                json!({ "title": title, "status": status, "priority": priority,
                        "assetKey": asset, "remoteStatus": remote })
            },
        )
    }

    fn part() -> impl Strategy<Value = Json> {
        (text(), text(), number(), number()).prop_map(|(name, number, quantity, cost)| {
            json!({ "name": name, "partNumber": number, "quantity": quantity, "unitCost": cost })
        })
    }

    /// The fast form's answer, where it gives one, is the interpreter's.
    fn agree(entity: EntityType, sources: &[&str], record: &Json, previous: Option<&Json>) {
        let key = "WO-1";
        let names: Vec<&str> = unified::fields(entity)
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| record.get(*name) != previous.and_then(|p| p.get(*name)))
            .collect();
        let facts = Facts {
            key,
            record,
            previous,
            changed: &names,
        };
        let vars = Activation {
            record: expr::record_value(entity, key, record),
            previous: previous.map_or(cel::Value::Null, |p| expr::record_value(entity, key, p)),
            changed: expr::changed_value(&names),
            connection: expr::connection_value("con_1", "demo", None, None),
            customer: expr::customer_value("cus_1", None),
            now: expr::now_value(chrono::Utc::now()),
            target: None,
        };
        let scope = Scope {
            entity,
            target: None,
        };
        for source in sources {
            let compiled = expr::compile(source, &scope, Want::Bool).unwrap();
            let fast = compiled
                .fast()
                .unwrap_or_else(|| panic!("{source} has a fast form"));
            let interpreted = Evaluator::new().matches(&compiled, &vars);
            match fast.eval(&facts) {
                Ok(matched) => assert_eq!(
                    interpreted,
                    Ok(matched),
                    "{source} on {record} after {previous:?}"
                ),
                Err(Failed) => assert!(
                    interpreted.is_err(),
                    "{source} on {record} after {previous:?}: the fast form failed, the \
                     interpreter gave {interpreted:?}"
                ),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn the_fast_form_answers_as_the_interpreter(
            record in work_order(),
            previous in proptest::option::of(work_order()),
            part_now in part(),
            part_before in proptest::option::of(part()),
        ) {
            agree(EntityType::WorkOrder, WORK_ORDER, &record, previous.as_ref());
            agree(EntityType::Part, PART, &part_now, part_before.as_ref());
        }
    }

    #[test]
    fn what_has_no_fast_form() {
        let scope = Scope {
            entity: EntityType::WorkOrder,
            target: None,
        };
        for source in [
            "record.dueAt < now",
            "size(changed) > 2",
            "connection.metadata.region == \"EU\"",
            "changed.exists(c, c == \"title\")",
            "has(record.title)",
            "record.title + \"x\" == \"ax\"",
            "record.title.matches(\"^a\")",
        ] {
            let compiled = expr::compile(source, &scope, Want::Bool).unwrap();
            assert!(compiled.fast().is_none(), "{source}");
        }
    }
}
