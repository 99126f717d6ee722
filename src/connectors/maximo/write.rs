//! Work order writes to Maximo's `mxapiwodetail` object structure (IBM's REST API guide,
//! "Create and update resources", "Delete resources").
//!
//! - CREATE: `POST …/mxapiwodetail?lean=1` with a `properties` header, without which Maximo
//!   answers 201 with no body; the record comes back with `wonum` and `siteid`, its key.
//!   Each record is stamped with its idempotency key in WORKORDER's `externalrefid` (the
//!   integration reference), so that a resend after a crash (`sent_since`) first asks
//!   `oslc.where=externalrefid in ["k1",…]` and answers the records found with their keys
//!   instead of creating them again. The stamp also goes in the `transactionid` header
//!   ("Handling duplicate requests"): Maximo refuses (409) a second commit of the same id
//!   for five minutes, which covers a request of the earlier attempt still on its way
//!   while the lookup ran; a 409 is answered with the key of the record found by its stamp.
//! - UPDATE: `POST` to the member URI with `x-method-override: PATCH` and `patchtype:
//!   MERGE` (a plain PATCH would drop child objects it was not sent).
//! - DELETE: `DELETE` on the member URI; a record already gone when `sent_since` is set is
//!   taken as deleted by the earlier attempt.
//!
//! The member URI's last segment is a rest id Maximo derives from the primary key, which the
//! guide says not to build: UPDATE and DELETE look the batch's work orders up first, one
//! query per site (`siteid in ["S01"] and wonum in ["1001",…]`), and use the `href`s.
//! A record Maximo refuses (a `BMXAA…` reason code, 4xx) is that record's error; 401,
//! 429 and 5xx stop the batch.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

use super::{Maximo, error, scoped, status, structure};
use crate::{
    catalog::EntityType,
    connectors::{
        ConnectorError, OUTCOME_UNKNOWN, Pace, WriteOperation, WriteOutcome, WriteRecord,
        WriteReply, WriteRequest, http,
        mapping::{Fields, parse_date},
    },
    records::unified::{WorkOrderPriority, WorkOrderStatus},
};

/// Values per `in [...]` list: keeps the query URL well under common 8 KB limits.
const LOOKUP_CHUNK: usize = 50;

/// A work order's key as the connector reads it: `SITEID/WONUM`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct WoKey {
    site: String,
    wonum: String,
}

impl WoKey {
    fn parse(key: &str) -> Result<Self, String> {
        match key.split_once('/') {
            Some((site, wonum))
                if !site.is_empty() && !wonum.is_empty() && quotable(site) && quotable(wonum) =>
            {
                Ok(Self {
                    site: site.to_owned(),
                    wonum: wonum.to_owned(),
                })
            }
            _ => Err(format!(
                "validation failed: `{key}` is not a Maximo work order key (SITEID/WONUM)"
            )),
        }
    }

    fn text(&self) -> String {
        format!("{}/{}", self.site, self.wonum)
    }
}

/// What the lookup found of a work order: where to write it and its status now.
struct Member {
    href: Url,
    status: Option<String>,
}

/// A value that can stand between double quotes in an `oslc.where` literal (the guide
/// documents no escape).
fn quotable(value: &str) -> bool {
    !value.contains('"') && !value.chars().any(char::is_control)
}

/// `["a","b"]`, for an `in` clause.
fn list(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// A refusal of one record is its outcome; anything else stops the batch.
fn per_record(err: ConnectorError) -> Result<WriteOutcome, ConnectorError> {
    match err {
        ConnectorError::Validation(message) => Ok(Err(message)),
        other => Err(other),
    }
}

impl Maximo {
    /// Writes a batch of work orders (see the module doc).
    pub(super) async fn write_work_orders(&self, request: &WriteRequest<'_>) -> WriteReply {
        match request.operation {
            WriteOperation::Create => self.create(request).await,
            WriteOperation::Update | WriteOperation::Delete => self.change(request).await,
        }
    }

    async fn create(&self, request: &WriteRequest<'_>) -> WriteReply {
        // Found by their stamp: created by the earlier attempt, answered without resending.
        let stamped = match request.sent_since {
            Some(_) => match self.stamped(request.records, request.pace).await {
                Ok(found) => found,
                Err(err) => return WriteReply::stopped(err),
            },
            None => HashMap::new(),
        };
        let mut reply = WriteReply::default();
        for record in request.records {
            let key = &record.idempotency_key;
            if let Some(found) = stamped.get(key) {
                reply.outcomes.push(Ok(found.clone()));
                continue;
            }
            if request.sent_since.is_some() && !quotable(key) {
                reply.outcomes.push(Err(OUTCOME_UNKNOWN.to_owned()));
                continue;
            }
            let body = match create_body(&record.fields, key) {
                Ok(body) => body,
                Err(message) => {
                    reply.outcomes.push(Err(message));
                    continue;
                }
            };
            request.pace.ready().await;
            match self.post_create(&body, key, request.pace).await {
                Ok(outcome) => reply.outcomes.push(outcome),
                Err(err) => {
                    reply.stopped = Some(err);
                    break;
                }
            }
        }
        reply
    }

    /// Creates one work order; its key from the answer (or, should the answer not carry
    /// it, from a lookup of its stamp).
    async fn post_create(
        &self,
        body: &Value,
        stamp: &str,
        pace: &Pace,
    ) -> Result<WriteOutcome, ConnectorError> {
        let mut url = self.collection()?;
        http::append_query(&mut url, &[("lean", "1")]);
        let request = self
            .outbound
            .request(Method::POST, url)
            .header("apikey", &self.api_key)
            .header("accept", "application/json")
            .header("properties", "wonum,siteid,workorderid")
            .header("transactionid", stamp)
            .json(body);
        let reply = self.outbound.send(request).await?;
        if reply.status == StatusCode::CONFLICT {
            // The stamp's transaction committed already (a request of an earlier attempt
            // that was still on its way): that one created the record.
            return self.created_by_stamp(stamp, pace).await;
        }
        if !reply.status.is_success() {
            return per_record(error(&reply));
        }
        let created: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let key = created.as_ref().and_then(|c| {
            let f = Fields::of(c).ok()?;
            f.text("wonum")?;
            scoped(f.text("siteid"), f.text("wonum"))
        });
        match key {
            Some(key) => Ok(Ok(key)),
            None => self.created_by_stamp(stamp, pace).await,
        }
    }

    /// The key of the work order stamped `stamp`, which Maximo says it created; unknown
    /// when it cannot be found (yet).
    async fn created_by_stamp(
        &self,
        stamp: &str,
        pace: &Pace,
    ) -> Result<WriteOutcome, ConnectorError> {
        let record = WriteRecord {
            idempotency_key: stamp.to_owned(),
            fields: Value::Null,
        };
        let found = self.stamped(std::slice::from_ref(&record), pace).await?;
        Ok(found
            .get(stamp)
            .cloned()
            .ok_or_else(|| OUTCOME_UNKNOWN.to_owned()))
    }

    /// The keys of the work orders stamped with the records' idempotency keys.
    async fn stamped(
        &self,
        records: &[WriteRecord],
        pace: &Pace,
    ) -> Result<HashMap<String, String>, ConnectorError> {
        let stamps: Vec<&str> = records
            .iter()
            .map(|r| r.idempotency_key.as_str())
            .filter(|k| quotable(k))
            .collect();
        let mut found = HashMap::new();
        for chunk in stamps.chunks(LOOKUP_CHUNK) {
            let clause = format!("externalrefid in {}", list(chunk));
            for member in self
                .query(&clause, "wonum,siteid,externalrefid", pace)
                .await?
            {
                let f = Fields::of(&member).map_err(ConnectorError::RemoteFault)?;
                if let (Some(stamp), Some(key)) = (
                    f.text("externalrefid"),
                    scoped(f.text("siteid"), f.text("wonum")),
                ) {
                    found.insert(stamp, key);
                }
            }
        }
        Ok(found)
    }

    async fn change(&self, request: &WriteRequest<'_>) -> WriteReply {
        let keys: Vec<Result<WoKey, String>> = request
            .records
            .iter()
            .map(|r| match r.fields.get("key").and_then(Value::as_str) {
                Some(key) => WoKey::parse(key),
                None => Err("validation failed: key is required".into()),
            })
            .collect();
        let wanted: Vec<&WoKey> = keys.iter().filter_map(|k| k.as_ref().ok()).collect();
        let members = match self.members(&wanted, request.pace).await {
            Ok(members) => members,
            Err(err) => return WriteReply::stopped(err),
        };
        let mut reply = WriteReply::default();
        for (record, key) in request.records.iter().zip(keys) {
            let key = match key {
                Ok(key) => key,
                Err(message) => {
                    reply.outcomes.push(Err(message));
                    continue;
                }
            };
            let Some(member) = members.get(&key) else {
                reply.outcomes.push(missing(&key, request));
                continue;
            };
            match self.change_one(request, &key, member, &record.fields).await {
                Ok(outcome) => reply.outcomes.push(outcome),
                Err(err) => {
                    reply.stopped = Some(err);
                    break;
                }
            }
        }
        reply
    }

    async fn change_one(
        &self,
        request: &WriteRequest<'_>,
        key: &WoKey,
        member: &Member,
        fields: &Value,
    ) -> Result<WriteOutcome, ConnectorError> {
        let mut url = member.href.clone();
        http::append_query(&mut url, &[("lean", "1")]);
        let builder = match request.operation {
            WriteOperation::Delete => self.outbound.request(Method::DELETE, url),
            _ => {
                let body = match update_body(fields, key, member.status.as_deref()) {
                    Ok(Some(body)) => body,
                    // Already as asked: nothing to send.
                    Ok(None) => return Ok(Ok(key.text())),
                    Err(message) => return Ok(Err(message)),
                };
                self.outbound
                    .request(Method::POST, url)
                    .header("x-method-override", "PATCH")
                    .header("patchtype", "MERGE")
                    .json(&body)
            }
        };
        request.pace.ready().await;
        let reply = self
            .outbound
            .send(
                builder
                    .header("apikey", &self.api_key)
                    .header("accept", "application/json"),
            )
            .await?;
        if reply.status.is_success() {
            Ok(Ok(key.text()))
        } else {
            per_record(error(&reply))
        }
    }

    /// The member URIs and statuses of the work orders with `keys`, one query per site and
    /// [`LOOKUP_CHUNK`] numbers.
    async fn members(
        &self,
        keys: &[&WoKey],
        pace: &Pace,
    ) -> Result<HashMap<WoKey, Member>, ConnectorError> {
        let mut by_site: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for key in keys {
            by_site.entry(&key.site).or_default().push(&key.wonum);
        }
        let mut found = HashMap::new();
        for (site, wonums) in by_site {
            for chunk in wonums.chunks(LOOKUP_CHUNK) {
                let clause = format!("siteid in {} and wonum in {}", list(&[site]), list(chunk));
                for member in self.query(&clause, "wonum,siteid,status", pace).await? {
                    let f = Fields::of(&member).map_err(ConnectorError::RemoteFault)?;
                    let (Some(site), Some(wonum), Some(href)) =
                        (f.text("siteid"), f.text("wonum"), f.text("href"))
                    else {
                        continue;
                    };
                    let href = self.member_url(&href)?;
                    let status = f.text("status");
                    found.insert(WoKey { site, wonum }, Member { href, status });
                }
            }
        }
        Ok(found)
    }

    /// A member's `href` as a URL on the connection's origin.
    fn member_url(&self, href: &str) -> Result<Url, ConnectorError> {
        let url = Url::parse(href)
            .map_err(|_| ConnectorError::RemoteFault(format!("`{href:.80}` is not a URL")))?;
        if !http::same_origin(self.base()?, &url) {
            return Err(ConnectorError::RemoteFault(
                "Maximo's member URI is on another origin; set `x-public-uri` on the server \
                 or use its public address as base_url"
                    .into(),
            ));
        }
        Ok(url)
    }

    fn collection(&self) -> Result<Url, ConnectorError> {
        let name = structure(EntityType::WorkOrder).name;
        Ok(http::join(self.base()?, &format!("api/os/{name}")))
    }

    /// Every work order matching `clause`, with the `select`ed attributes and `href`.
    async fn query(
        &self,
        clause: &str,
        select: &str,
        pace: &Pace,
    ) -> Result<Vec<Value>, ConnectorError> {
        let mut url = self.collection()?;
        http::append_query(
            &mut url,
            &[
                ("lean", "1"),
                ("oslc.select", select),
                ("oslc.where", clause),
                ("oslc.pageSize", "1000"),
            ],
        );
        let mut members = Vec::new();
        let mut next = Some(url);
        while let Some(url) = next.take() {
            pace.ready().await;
            let (mut body, _) = self.get(url).await?;
            match body.get_mut("member").map(Value::take) {
                Some(Value::Array(page)) if !page.is_empty() => members.extend(page),
                Some(Value::Array(_)) => break,
                _ => {
                    return Err(ConnectorError::RemoteFault(
                        "Maximo's answer has no `member` list".into(),
                    ));
                }
            }
            next = body
                .pointer("/responseInfo/nextPage/href")
                .and_then(Value::as_str)
                .map(|href| self.member_url(href))
                .transpose()?;
        }
        Ok(members)
    }
}

/// The outcome of a record whose work order the lookup did not find.
fn missing(key: &WoKey, request: &WriteRequest<'_>) -> WriteOutcome {
    match (request.operation, request.sent_since) {
        // The earlier attempt may have deleted it.
        (WriteOperation::Delete, Some(_)) => Ok(key.text()),
        _ => Err(format!(
            "BMXAA8727E work order {} was not found in Maximo",
            key.text()
        )),
    }
}

/// The attributes of a new work order: the mapped fields, the site (from `siteKey`, else
/// from the asset's or location's key) and the stamp.
fn create_body(fields: &Value, stamp: &str) -> Result<Value, String> {
    let f = Fields::of(fields).map_err(|_| "validation failed: a record must be a JSON object")?;
    let site = f
        .text("siteKey")
        .or_else(|| key_site(&f, "assetKey"))
        .or_else(|| key_site(&f, "locationKey"));
    let mut body = attributes(f, site.as_deref(), None)?;
    if let Some(site) = site {
        body.insert("siteid".into(), json!(site));
    }
    body.insert("externalrefid".into(), json!(stamp));
    Ok(Value::Object(body))
}

/// The attributes an update changes, `None` when there are none; the status only when it
/// differs from the current one in the unified model (a change to the same state is no
/// change to Maximo either).
fn update_body(
    fields: &Value,
    key: &WoKey,
    current: Option<&str>,
) -> Result<Option<Value>, String> {
    let f = Fields::of(fields).map_err(|_| "validation failed: a record must be a JSON object")?;
    if let Some(site) = f.text("siteKey")
        && site != key.site
    {
        return Err(format!(
            "validation failed: work order {} cannot move to site {site} (SITEID is part of its key)",
            key.text()
        ));
    }
    let body = attributes(f, Some(&key.site), current.and_then(status))?;
    Ok((!body.is_empty()).then_some(Value::Object(body)))
}

/// The site part of the `SITEID/NUMBER` key in field `name`.
fn key_site(f: &Fields<'_>, name: &str) -> Option<String> {
    let key = f.text(name)?;
    key.split_once('/').map(|(site, _)| site.to_owned())
}

/// Maximo's attributes for the unified fields present in `f` (the reverse of `unify`);
/// `null` clears one. Asset and location keys must be in `site`.
fn attributes(
    f: Fields<'_>,
    site: Option<&str>,
    current: Option<WorkOrderStatus>,
) -> Result<Map<String, Value>, String> {
    let mut body = Map::new();
    for (field, value) in f.0 {
        let (name, mapped) = match field.as_str() {
            "title" => ("description", text(value, field)?),
            "instructions" => ("description_longdescription", text(value, field)?),
            "status" => match status_word(value, current)? {
                Some(word) => ("status", json!(word)),
                None => continue,
            },
            "priority" => ("wopriority", wopriority(value)?),
            "assetKey" => ("assetnum", in_site(value, field, site)?),
            "locationKey" => ("location", in_site(value, field, site)?),
            "dueAt" => ("targcompdate", date(value, field)?),
            "scheduledAt" => ("schedstart", date(value, field)?),
            "completedAt" => ("actfinish", date(value, field)?),
            // The key and site are the record's address, not attributes to set.
            _ => continue,
        };
        body.insert(name.into(), mapped);
    }
    Ok(body)
}

fn text(value: &Value, field: &str) -> Result<Value, String> {
    match value {
        Value::Null => Ok(json!("")),
        Value::String(_) => Ok(value.clone()),
        _ => Err(format!("validation failed: {field} must be text")),
    }
}

fn date(value: &Value, field: &str) -> Result<Value, String> {
    match value {
        Value::Null => Ok(Value::Null),
        _ => value
            .as_str()
            .and_then(parse_date)
            .map(|at: DateTime<Utc>| json!(at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()))
            .ok_or_else(|| format!("validation failed: {field} must be an RFC 3339 date")),
    }
}

/// `SITE/NUMBER` to `NUMBER`, when the site is the work order's.
fn in_site(value: &Value, field: &str, site: Option<&str>) -> Result<Value, String> {
    let Some(key) = value.as_str() else {
        return match value {
            Value::Null => Ok(Value::Null),
            _ => Err(format!("validation failed: {field} must be a key")),
        };
    };
    match key.split_once('/') {
        Some((of, number)) if Some(of) == site && !number.is_empty() => Ok(json!(number)),
        Some((of, _)) => Err(format!(
            "validation failed: {field} {key} is in site {of}, the work order in {}",
            site.unwrap_or("no site")
        )),
        None => Err(format!(
            "validation failed: {field} `{key}` is not a Maximo key (SITEID/NUMBER)"
        )),
    }
}

/// Maximo's status word for a unified status, `None` when the work order is in that state
/// already. OPEN is `WAPPR` (Maximo's first status, reachable from every open one).
fn status_word(
    value: &Value,
    current: Option<WorkOrderStatus>,
) -> Result<Option<&'static str>, String> {
    let wanted: WorkOrderStatus = serde_json::from_value(value.clone())
        .map_err(|_| format!("validation failed: status {value} is not a work order status"))?;
    if current == Some(wanted) {
        return Ok(None);
    }
    Ok(Some(match wanted {
        WorkOrderStatus::Open => "WAPPR",
        WorkOrderStatus::InProgress => "INPRG",
        WorkOrderStatus::OnHold => "WMATL",
        WorkOrderStatus::Completed => "COMP",
        WorkOrderStatus::Cancelled => "CAN",
    }))
}

/// `wopriority` (1 most urgent) for a unified priority; NONE clears it.
fn wopriority(value: &Value) -> Result<Value, String> {
    let priority: WorkOrderPriority = serde_json::from_value(value.clone())
        .map_err(|_| format!("validation failed: priority {value} is not a priority"))?;
    Ok(match priority {
        WorkOrderPriority::None => Value::Null,
        WorkOrderPriority::Low => json!(4),
        WorkOrderPriority::Medium => json!(3),
        WorkOrderPriority::High => json!(2),
        WorkOrderPriority::Urgent => json!(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{connectors::maximo::unify, records::unified::known};

    #[test]
    fn fields_map_to_maximo_attributes_and_back() {
        let fields = json!({"title": "Replace seal", "instructions": "Drain first",
            "status": "ON_HOLD", "priority": "HIGH", "assetKey": "S02/A00005",
            "locationKey": "S02/L0005", "dueAt": "2026-03-01T10:00:00+01:00",
            "scheduledAt": null, "remoteStatus": "WMATL"});
        let body = create_body(&fields, "mw-x-0").unwrap();
        assert_eq!(
            body,
            json!({"description": "Replace seal", "description_longdescription": "Drain first",
                   "status": "WMATL", "wopriority": 2, "assetnum": "A00005",
                   "location": "L0005", "targcompdate": "2026-03-01T09:00:00+00:00",
                   "schedstart": null, "siteid": "S02", "externalrefid": "mw-x-0"})
        );
        let mut read = body.clone();
        read["wonum"] = json!("1044");
        let unified = unify(EntityType::WorkOrder, &read).unwrap();
        for field in [
            "title",
            "instructions",
            "status",
            "priority",
            "assetKey",
            "locationKey",
        ] {
            assert_eq!(unified[field], fields[field], "{field}");
        }
        assert_eq!(unified["dueAt"], "2026-03-01T09:00:00Z");
        for (unified, word) in [
            ("OPEN", "WAPPR"),
            ("IN_PROGRESS", "INPRG"),
            ("COMPLETED", "COMP"),
            ("CANCELLED", "CAN"),
        ] {
            let word_back = status_word(&json!(unified), None).unwrap().unwrap();
            assert_eq!(word_back, word);
            assert_eq!(known(status(word)), unified);
        }
        assert_eq!(wopriority(&json!("NONE")).unwrap(), Value::Null);
        assert_eq!(wopriority(&json!("LOW")).unwrap(), 4);
    }

    #[test]
    fn updates_keep_the_site_and_skip_a_status_already_held() {
        let key = WoKey::parse("S01/1003").unwrap();
        let body = update_body(
            &json!({"key": "S01/1003", "status": "OPEN"}),
            &key,
            Some("APPR"),
        );
        assert_eq!(body, Ok(None), "approved is open already");
        let body = update_body(
            &json!({"key": "S01/1003", "status": "COMPLETED", "priority": "NONE"}),
            &key,
            Some("INPRG"),
        )
        .unwrap();
        assert_eq!(body, Some(json!({"status": "COMP", "wopriority": null})));
        for fields in [
            json!({"siteKey": "S02", "title": "x"}),
            json!({"assetKey": "S02/A00005"}),
            json!({"status": "DONE"}),
            json!({"dueAt": "tomorrow"}),
        ] {
            assert!(update_body(&fields, &key, None).is_err(), "{fields}");
        }
        for bad in ["1003", "S01/", "/1003", "S01/10\"03"] {
            assert!(WoKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            list(&["a", "b"]),
            "[\"a\",\"b\"]",
            "an in clause's list of quoted values"
        );
    }
}
