//! The unified model's shared vocabulary: work order states and priorities every connector
//! maps its remote's words to (the remote's own word is kept beside them), and the date
//! form every unified date is stored in (RFC 3339, UTC).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
