//! Writes to the demo remote: each record of a batch checked as the remote's validation
//! would, then kept as the write numbered for it.

use serde_json::{Map, Value};

use super::{prefix, remote::NewWrite};
use crate::{catalog::EntityType, connectors::WriteOperation};

/// One record of a write batch, checked.
pub(super) enum Change {
    Create(Map<String, Value>),
    Update(String, Map<String, Value>),
    Delete(String),
}

impl Change {
    pub(super) fn check(
        entity: EntityType,
        operation: WriteOperation,
        record: &Value,
    ) -> Result<Self, String> {
        let Value::Object(fields) = record else {
            return Err("validation failed: a record must be a JSON object".into());
        };
        let title_field = if entity == EntityType::Asset {
            "name"
        } else {
            "title"
        };
        let title = fields.get(title_field).and_then(Value::as_str);
        if title == Some("reject") {
            return Err(format!(
                "validation failed: {title_field} \"reject\" is not allowed"
            ));
        }
        let key = || match fields.get("key").and_then(Value::as_str) {
            Some(key) if !key.is_empty() && key.len() <= 64 => Ok(key.to_owned()),
            _ => Err("validation failed: key is required".to_owned()),
        };
        Ok(match operation {
            WriteOperation::Create if title.is_none_or(|t| t.trim().is_empty()) => {
                return Err(format!("validation failed: {title_field} is required"));
            }
            WriteOperation::Create => Change::Create(remote_fields(entity, fields)),
            WriteOperation::Update => Change::Update(key()?, remote_fields(entity, fields)),
            WriteOperation::Delete => Change::Delete(key()?),
        })
    }

    /// The record as the remote keeps it, as the write numbered `number`.
    pub(super) fn stored(&self, entity: EntityType, number: u64) -> NewWrite {
        let (key, fields) = match self {
            Change::Create(fields) => (created_key(entity, number), Some(fields)),
            Change::Update(key, fields) => (key.clone(), Some(fields)),
            Change::Delete(key) => (key.clone(), None),
        };
        let data = fields.map(|fields| {
            let mut stored = fields.clone();
            stored.insert("id".into(), Value::from(key.clone()));
            stored.remove("key");
            Value::Object(stored)
        });
        let (created, position) = match parse_key(entity, &key) {
            Some(KeyKind::Created(n)) => (true, Some(n)),
            Some(KeyKind::Generated(n)) => (false, Some(n)),
            None => (false, None),
        };
        NewWrite {
            key,
            created,
            position,
            data,
        }
    }
}

/// A record's unified fields under the names and in the words the demo remote uses
/// (`assetKey` is `asset_id`, `IN_PROGRESS` is `in_progress`); other names are kept as given.
fn remote_fields(entity: EntityType, fields: &Map<String, Value>) -> Map<String, Value> {
    const WORK_ORDER: &[(&str, &str)] = &[
        ("assetKey", "asset_id"),
        ("locationKey", "location_id"),
        ("siteKey", "site_id"),
        ("dueAt", "due_date"),
        ("scheduledAt", "scheduled_date"),
        ("completedAt", "completed_date"),
    ];
    const ASSET: &[(&str, &str)] = &[
        ("serialNumber", "serial_number"),
        ("makeName", "manufacturer"),
        ("modelName", "model"),
        ("isActive", "active"),
        ("siteKey", "site_id"),
        ("locationKey", "location_id"),
        ("parentKey", "parent_id"),
    ];
    let names = if entity == EntityType::Asset {
        ASSET
    } else {
        WORK_ORDER
    };
    fields
        .iter()
        .map(|(name, value)| {
            let remote_name = names
                .iter()
                .find(|(unified, _)| unified == name)
                .map_or(name.as_str(), |(_, remote)| remote);
            let value = match (entity, name.as_str(), value) {
                (EntityType::WorkOrder, "status", Value::String(status)) => {
                    Value::from(demo_status_word(status))
                }
                (EntityType::WorkOrder, "priority", Value::String(p)) => {
                    Value::from(p.to_ascii_lowercase())
                }
                _ => value.clone(),
            };
            (remote_name.to_owned(), value)
        })
        .collect()
}

/// The demo's word for a unified work order status.
fn demo_status_word(status: &str) -> String {
    match status {
        "COMPLETED" => "done".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// The key of the record created by write number `number`.
fn created_key(entity: EntityType, number: u64) -> String {
    format!("{}-W{number:06}", prefix(entity))
}

/// What a key names: a generated record (`AST-000042`) or a created one (`AST-W000042`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyKind {
    Generated(u64),
    Created(u64),
}

/// The kind and number of a key in the demo's own forms (six digits at least, no more
/// leading zeros than that); `None` for any other key.
pub(super) fn parse_key(entity: EntityType, key: &str) -> Option<KeyKind> {
    let rest = key.strip_prefix(prefix(entity))?.strip_prefix('-')?;
    let (created, digits) = match rest.strip_prefix('W') {
        Some(digits) => (true, digits),
        None => (false, rest),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    if format!("{number:06}") != digits || number == 0 || number > i64::MAX as u64 {
        return None;
    }
    Some(if created {
        KeyKind::Created(number)
    } else {
        KeyKind::Generated(number)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_in_the_demo_forms_only() {
        let asset = |key| parse_key(EntityType::Asset, key);
        assert_eq!(asset("AST-000042"), Some(KeyKind::Generated(42)));
        assert_eq!(asset("AST-1000001"), Some(KeyKind::Generated(1_000_001)));
        assert_eq!(asset("AST-W000007"), Some(KeyKind::Created(7)));
        for other in [
            "AST-42",
            "AST-0000042",
            "WO-000042",
            "AST-000000",
            "AST-Wx",
            "AST-+00042",
        ] {
            assert_eq!(asset(other), None, "{other}");
        }
    }
}
