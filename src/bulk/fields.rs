//! The unified fields a bulk write may set, per entity type, and the check of every record
//! of a `bulkWrite` against them before anything is queued: each problem is reported with
//! the record's index and the field, all of them at once.

use chrono::DateTime;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    catalog::{EntityType, WriteOperation},
    records::unified::{WorkOrderPriority, WorkOrderStatus},
};

/// Longest text a field takes (remotes have shorter limits of their own, reported per record).
const MAX_TEXT: usize = 4000;
/// Longest record key.
const MAX_KEY: usize = 255;
/// Problems reported at most; the rest are counted.
pub const MAX_PROBLEMS: usize = 100;

/// What a field holds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Boolean,
    /// An RFC 3339 instant.
    Date,
    Status,
    Priority,
}

/// A writable unified field.
struct Field {
    name: &'static str,
    kind: Kind,
    /// Needed to create a record.
    required: bool,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const ASSET: &[Field] = &[
    required("name", Kind::Text),
    field("description", Kind::Text),
    field("serialNumber", Kind::Text),
    field("makeName", Kind::Text),
    field("modelName", Kind::Text),
    field("criticality", Kind::Text),
    field("isActive", Kind::Boolean),
    field("siteKey", Kind::Text),
    field("locationKey", Kind::Text),
    field("parentKey", Kind::Text),
];

const WORK_ORDER: &[Field] = &[
    required("title", Kind::Text),
    field("instructions", Kind::Text),
    field("status", Kind::Status),
    field("priority", Kind::Priority),
    field("assetKey", Kind::Text),
    field("locationKey", Kind::Text),
    field("siteKey", Kind::Text),
    field("dueAt", Kind::Date),
    field("scheduledAt", Kind::Date),
    field("completedAt", Kind::Date),
];

/// The fields a write of `entity` may set (none: the entity is not written by any system).
fn writable(entity: EntityType) -> &'static [Field] {
    match entity {
        EntityType::Asset => ASSET,
        EntityType::WorkOrder => WORK_ORDER,
        _ => &[],
    }
}

/// The names of the fields a write of `entity` may set.
pub fn writable_names(entity: EntityType) -> Vec<&'static str> {
    writable(entity).iter().map(|f| f.name).collect()
}

/// The names of the fields a create of `entity` needs.
pub fn required_names(entity: EntityType) -> Vec<&'static str> {
    writable(entity)
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect()
}

/// One thing wrong with one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub index: usize,
    /// The field, or null for the record as a whole.
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    fn new(index: usize, field: Option<&str>, message: impl Into<String>) -> Self {
        Problem {
            index,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Every problem of `records` for `operation` on `entity` (the first [`MAX_PROBLEMS`]) and
/// how many there are in all.
pub fn check(
    entity: EntityType,
    operation: WriteOperation,
    records: &[Value],
) -> (Vec<Problem>, usize) {
    let mut problems = Vec::new();
    let mut count = 0;
    for (index, record) in records.iter().enumerate() {
        for problem in check_record(entity, operation, index, record) {
            count += 1;
            if problems.len() < MAX_PROBLEMS {
                problems.push(problem);
            }
        }
    }
    (problems, count)
}

fn check_record(
    entity: EntityType,
    operation: WriteOperation,
    index: usize,
    record: &Value,
) -> Vec<Problem> {
    let Value::Object(fields) = record else {
        return vec![Problem::new(index, None, "a record must be a JSON object")];
    };
    let mut problems = check_key(operation, index, fields);
    let allowed = writable(entity);
    for (name, value) in fields {
        if name == "key" {
            continue;
        }
        match allowed.iter().find(|f| f.name == name) {
            None => problems.push(Problem::new(
                index,
                Some(name),
                format!("{entity} has no writable field `{name}`"),
            )),
            Some(field) => {
                if let Err(why) = check_value(field, value, operation) {
                    problems.push(Problem::new(index, Some(name), why));
                }
            }
        }
    }
    if operation == WriteOperation::Create {
        for field in allowed.iter().filter(|f| f.required) {
            if !fields.contains_key(field.name) {
                problems.push(Problem::new(
                    index,
                    Some(field.name),
                    format!("`{}` is required to create a record", field.name),
                ));
            }
        }
    }
    if operation == WriteOperation::Delete && fields.len() > 1 {
        problems.push(Problem::new(
            index,
            None,
            "a delete takes only `key`".to_owned(),
        ));
    }
    problems
}

/// `key` names the record to update or delete; the remote assigns a created record's.
fn check_key(operation: WriteOperation, index: usize, fields: &Map<String, Value>) -> Vec<Problem> {
    let key = fields.get("key");
    let problem = match (operation, key) {
        (WriteOperation::Create, Some(_)) => {
            Some("a created record's key is assigned by the remote system; leave `key` out")
        }
        (WriteOperation::Create, None) => None,
        (_, None | Some(Value::Null)) => Some("`key` is required to update or delete a record"),
        (_, Some(Value::String(key))) if key.trim().is_empty() => Some("`key` is empty"),
        (_, Some(Value::String(key))) if key.len() > MAX_KEY => Some("`key` is too long"),
        (_, Some(Value::String(_))) => None,
        (_, Some(_)) => Some("`key` must be a string"),
    };
    problem
        .map(|message| vec![Problem::new(index, Some("key"), message)])
        .unwrap_or_default()
}

fn check_value(field: &Field, value: &Value, operation: WriteOperation) -> Result<(), String> {
    if value.is_null() {
        return if field.required && operation == WriteOperation::Create {
            Err(format!("`{}` is required to create a record", field.name))
        } else if field.required {
            Err(format!("`{}` cannot be cleared", field.name))
        } else {
            Ok(())
        };
    }
    match field.kind {
        Kind::Text => match value.as_str() {
            Some(text) if field.required && text.trim().is_empty() => {
                Err(format!("`{}` must not be empty", field.name))
            }
            Some(text) if text.len() > MAX_TEXT => Err(format!("longer than {MAX_TEXT} bytes")),
            Some(_) => Ok(()),
            None => Err(format!("expected a string, got {}", type_name(value))),
        },
        Kind::Boolean => value
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| format!("expected a boolean, got {}", type_name(value))),
        Kind::Date => match value.as_str() {
            Some(text) if DateTime::parse_from_rfc3339(text).is_ok() => Ok(()),
            Some(text) => Err(format!(
                "`{text}` is not an RFC 3339 date-time (2026-12-05T07:30:00Z)"
            )),
            None => Err(format!(
                "expected a date-time string, got {}",
                type_name(value)
            )),
        },
        Kind::Status => {
            one_of::<WorkOrderStatus>(value, "OPEN, IN_PROGRESS, ON_HOLD, COMPLETED or CANCELLED")
        }
        Kind::Priority => one_of::<WorkOrderPriority>(value, "NONE, LOW, MEDIUM, HIGH or URGENT"),
    }
}

fn one_of<T: serde::de::DeserializeOwned>(value: &Value, names: &str) -> Result<(), String> {
    match value {
        Value::String(_) if serde_json::from_value::<T>(value.clone()).is_ok() => Ok(()),
        _ => Err(format!("expected one of {names}, got {value}")),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(operation: WriteOperation, records: Value) -> Vec<(usize, Option<String>)> {
        let records = records.as_array().unwrap().clone();
        check(EntityType::WorkOrder, operation, &records)
            .0
            .into_iter()
            .map(|p| (p.index, p.field))
            .collect()
    }

    #[test]
    fn every_problem_names_its_record_and_field() {
        let found = problems(
            WriteOperation::Create,
            json!([
                {"title": "ok", "priority": "HIGH", "dueAt": "2026-12-05T07:30:00+01:00"},
                {"title": 5},
                {"instructions": "no title"},
                {"title": "x", "colour": "red", "status": "DONE", "dueAt": "tomorrow"},
                "not an object",
                {"title": "x", "key": "WO-1"},
                {"title": "   "},
            ]),
        );
        let field = |s: &str| Some(s.to_owned());
        assert_eq!(
            found,
            vec![
                (1, field("title")),
                (2, field("title")),
                (3, field("colour")),
                (3, field("dueAt")),
                (3, field("status")),
                (4, None),
                (5, field("key")),
                (6, field("title")),
            ]
        );
    }

    #[test]
    fn updates_and_deletes_need_a_key() {
        let found = problems(
            WriteOperation::Update,
            json!([{"key": "WO-1", "priority": null}, {"title": "x"}, {"key": 7}, {"key": "WO-2", "title": null}]),
        );
        let key = Some("key".to_owned());
        assert_eq!(
            found,
            vec![(1, key.clone()), (2, key), (3, Some("title".to_owned()))]
        );
        let found = problems(
            WriteOperation::Delete,
            json!([{"key": "WO-1"}, {"key": ""}, {"key": "WO-3", "title": "x"}]),
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], (1, Some("key".to_owned())));
    }

    #[test]
    fn problems_are_capped_and_counted() {
        let records = vec![json!({}); 150];
        let (problems, count) = check(EntityType::Asset, WriteOperation::Create, &records);
        assert_eq!((problems.len(), count), (MAX_PROBLEMS, 150));
    }
}
