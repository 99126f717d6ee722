//! The unified model's shared vocabulary: work order states and priorities every connector
//! maps its remote's words to (the remote's own word is kept beside them), and the date
//! form every unified date is stored in (RFC 3339, UTC).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::EntityType;

/// Where a work order stands, whatever the remote calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkOrderStatus {
    /// Created or approved, not started.
    Open,
    /// Work has started.
    InProgress,
    /// Paused, waiting for something (parts, approval, access).
    OnHold,
    /// Done.
    Completed,
    /// Will not be done.
    Cancelled,
}

/// How urgent a work order is, whatever scale the remote uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkOrderPriority {
    /// No priority set.
    None,
    /// Low priority.
    Low,
    /// Medium priority.
    Medium,
    /// High priority.
    High,
    /// The most urgent level.
    Urgent,
}

/// What a unified field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Text,
    /// A JSON number.
    Number,
    Boolean,
    /// An RFC 3339 instant in UTC (see [`date`]).
    Date,
    /// A [`WorkOrderStatus`] word.
    Status,
    /// A [`WorkOrderPriority`] word.
    Priority,
}

impl FieldType {
    /// The words an enum field takes (none for other fields).
    pub fn words(self) -> &'static [&'static str] {
        match self {
            FieldType::Status => &["OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETED", "CANCELLED"],
            FieldType::Priority => &["NONE", "LOW", "MEDIUM", "HIGH", "URGENT"],
            _ => &[],
        }
    }
}

/// The unified fields of each entity type, as every connector stores them in
/// `records.data` (the GraphQL types `Asset`, `WorkOrder`, … read the same names). Every
/// field may be null. The record's remote key is not among them (`Record.key`).
pub fn fields(entity: EntityType) -> &'static [(&'static str, FieldType)] {
    use FieldType::*;
    match entity {
        EntityType::Asset => &[
            ("name", Text),
            ("description", Text),
            ("serialNumber", Text),
            ("makeName", Text),
            ("modelName", Text),
            ("criticality", Text),
            ("isActive", Boolean),
            ("siteKey", Text),
            ("locationKey", Text),
            ("parentKey", Text),
        ],
        EntityType::WorkOrder => &[
            ("title", Text),
            ("instructions", Text),
            ("status", Status),
            ("remoteStatus", Text),
            ("priority", Priority),
            ("remotePriority", Text),
            ("assetKey", Text),
            ("locationKey", Text),
            ("siteKey", Text),
            ("dueAt", Date),
            ("scheduledAt", Date),
            ("completedAt", Date),
        ],
        EntityType::Site => &[("name", Text), ("code", Text), ("timezone", Text)],
        EntityType::Location => &[("name", Text), ("siteKey", Text)],
        EntityType::Part => &[
            ("name", Text),
            ("partNumber", Text),
            ("unitCost", Number),
            ("quantity", Number),
        ],
        EntityType::PurchaseOrder => &[
            ("number", Text),
            ("vendorKey", Text),
            ("status", Text),
            ("total", Number),
        ],
        EntityType::Vendor => &[("name", Text), ("email", Text)],
        EntityType::User => &[("name", Text), ("email", Text), ("role", Text)],
    }
}

/// A unified date: RFC 3339 in UTC, to the second unless the remote keeps milliseconds.
pub fn date(at: DateTime<Utc>) -> Value {
    Value::from(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// `date` of an optional instant (JSON null for none).
pub fn maybe_date(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, date)
}

/// A unified enum value (its GraphQL name), or null when the mapping does not know the
/// remote's word.
pub fn known<T: Serialize>(value: Option<T>) -> Value {
    value
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null)
}

/// Reads a unified enum value stored by [`known`]: `None` for null or absent, an error
/// naming the field for a text this release does not know.
pub fn stored<T: serde::de::DeserializeOwned>(
    data: &Value,
    field: &str,
) -> Result<Option<T>, String> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|_| format!("records.data.{field} holds an unknown value: {value}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let data = serde_json::json!({
            "status": known(Some(WorkOrderStatus::InProgress)),
            "priority": known(Some(WorkOrderPriority::Urgent)),
            "other": known(None::<WorkOrderStatus>),
            "odd": "SIDEWAYS",
        });
        assert_eq!(data["status"], "IN_PROGRESS");
        assert_eq!(data["priority"], "URGENT");
        assert_eq!(
            stored(&data, "status"),
            Ok(Some(WorkOrderStatus::InProgress))
        );
        assert_eq!(
            stored(&data, "priority"),
            Ok(Some(WorkOrderPriority::Urgent))
        );
        assert_eq!(stored::<WorkOrderStatus>(&data, "other"), Ok(None));
        assert_eq!(stored::<WorkOrderStatus>(&data, "missing"), Ok(None));
        let err = stored::<WorkOrderStatus>(&data, "odd").unwrap_err();
        assert!(err.contains("records.data.odd"), "{err}");
        let at = DateTime::parse_from_rfc3339("2026-01-01T19:07:00-05:00").unwrap();
        assert_eq!(date(at.with_timezone(&Utc)), "2026-01-02T00:07:00Z");
    }
}
