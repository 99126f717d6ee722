//! The unified model's shared vocabulary: work order states and priorities every connector
//! maps its remote's words to (the remote's own word is kept beside them), and the date
//! form every unified date is stored in (RFC 3339, UTC).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::catalog::text_enum;

/// Where a work order stands, whatever the remote calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, async_graphql::Enum)]
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
text_enum!(WorkOrderStatus {
    Open => "OPEN", InProgress => "IN_PROGRESS", OnHold => "ON_HOLD",
    Completed => "COMPLETED", Cancelled => "CANCELLED",
});

/// How urgent a work order is, whatever scale the remote uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, async_graphql::Enum)]
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
text_enum!(WorkOrderPriority {
    None => "NONE", Low => "LOW", Medium => "MEDIUM", High => "HIGH", Urgent => "URGENT",
});

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
pub fn known<T: Copy>(value: Option<T>, name: impl Fn(T) -> &'static str) -> Value {
    value.map_or(Value::Null, |v| Value::from(name(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in WorkOrderStatus::ALL {
            assert_eq!(WorkOrderStatus::parse(status.as_str()), Some(*status));
        }
        for priority in WorkOrderPriority::ALL {
            assert_eq!(WorkOrderPriority::parse(priority.as_str()), Some(*priority));
        }
        let at = DateTime::parse_from_rfc3339("2026-01-01T19:07:00-05:00").unwrap();
        assert_eq!(date(at.with_timezone(&Utc)), "2026-01-02T00:07:00Z");
    }
}
