//! Reading remote records leniently: remotes send ids as numbers or strings, leave fields
//! out, send `""` for unset (SAP) and numbers as strings; dates come as RFC 3339 with any
//! offset, or as OData V2 `/Date(…)/` literals. What cannot be read becomes `None`, and a
//! record without what identifies it is refused with a reason (a per-record error).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// One remote record's fields.
#[derive(Clone, Copy)]
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn of(record: &'a Value) -> Result<Self, String> {
        match record {
            Value::Object(map) => Ok(Self(map)),
            _ => Err("the remote record is not a JSON object".into()),
        }
    }

    /// A text field, trimmed; numbers and booleans as their text; empty means unset.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(str::to_owned),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A text field that must be there.
    pub fn required(&self, name: &str) -> Result<String, String> {
        self.text(name)
            .ok_or_else(|| format!("the remote record has no `{name}`"))
    }

    /// A number, sent as a JSON number or as a decimal string.
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.0.get(name)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        }
    }

    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim() {
                "X" | "true" | "TRUE" | "1" => Some(true),
                "" | "false" | "FALSE" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A date in any of the forms remotes send (see [`parse_date`]).
    pub fn date(&self, name: &str) -> Option<DateTime<Utc>> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .and_then(parse_date)
    }
}

/// RFC 3339 with any offset (or none: UTC), a plain date, or an OData V2 literal:
/// `/Date(1492098664000)/` (Edm.DateTime, UTC) or `/Date(1492098664000+0120)/`
/// (Edm.DateTimeOffset: the milliseconds are UTC, the offset only says where it was local).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(inner) = text
        .strip_prefix("/Date(")
        .and_then(|t| t.strip_suffix(")/"))
    {
        let digits_end = inner
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == '+' || *c == '-')
            .map_or(inner.len(), |(i, _)| i);
        let millis: i64 = inner[..digits_end].parse().ok()?;
        let offset = &inner[digits_end..];
        let valid_offset = offset.is_empty()
            || (offset.len() == 5 && offset[1..].bytes().all(|b| b.is_ascii_digit()));
        if !valid_offset {
            return None;
        }
        return DateTime::from_timestamp_millis(millis);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(at.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// The later of two optional instants.
pub fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_in_every_form() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_date("/Date(1492098664000)/"),
            Some(utc("2017-04-13T15:51:04Z"))
        );
        assert_eq!(
            parse_date("/Date(1492098664000+0120)/"),
            Some(utc("2017-04-13T15:51:04Z")),
            "the offset does not move the instant"
        );
        assert_eq!(
            parse_date("/Date(-86400000)/"),
            Some(utc("1969-12-31T00:00:00Z"))
        );
        assert_eq!(
            parse_date("2026-01-01T19:07:00-05:00"),
            Some(utc("2026-01-02T00:07:00Z"))
        );
        assert_eq!(
            parse_date("2026-01-01T00:07:00.000Z"),
            Some(utc("2026-01-01T00:07:00Z"))
        );
        assert_eq!(parse_date("2026-03-04"), Some(utc("2026-03-04T00:00:00Z")));
        for bad in ["", "/Date(abc)/", "/Date(1+99)/", "yesterday", "/Date(1)"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn lenient_fields() {
        let record = json!({"id": 12, "name": "  Pump ", "empty": "", "cost": "12.50",
                            "n": 3, "flag": "X", "off": ""});
        let f = Fields::of(&record).unwrap();
        assert_eq!(f.text("id").as_deref(), Some("12"));
        assert_eq!(f.text("name").as_deref(), Some("Pump"));
        assert_eq!(f.text("empty"), None);
        assert!(f.required("missing").unwrap_err().contains("missing"));
        assert_eq!(f.number("cost"), Some(12.5));
        assert_eq!(f.number("n"), Some(3.0));
        assert_eq!(f.boolean("flag"), Some(true));
        assert_eq!(f.boolean("off"), Some(false));
        assert!(Fields::of(&json!([1])).is_err());
    }
}
