//! MaintainX, a cloud CMMS, through its REST API v1.
//!
//! Sources: reads follow the working public clients (PipedreamHQ/pipedream
//! `components/maintainx`, and others), writes MaintainX's OpenAPI document (below): base
//! `https://api.getmaintainx.com/v1`, `Authorization: Bearer <api key>`; `GET /assets`,
//! `/workorders`, `/locations`, `/parts`, `/vendors`, `/purchaseorders`, `/users` with `limit`
//! and `cursor`; lists as `{"<resource>": […], "nextCursor": "…"}` (null or absent on the
//! last page); ids are integers; 429 with `X-Rate-Limit-Reset` in seconds.
//!
//! There is no documented modified-since filter, so every read is a full read: incremental
//! runs read everything and the content hash decides what changed (which also lets them
//! notice deletions). MaintainX has no sites: locations nest instead.
//!
//! Writes (work orders only) follow MaintainX's OpenAPI document (`/v1/openapi.json`, as
//! vendored by odenio/maintainx-go-sdk): `POST /workorders` answers `{"id": …}`;
//! `PATCH /workorders/{id}` takes the same fields but no `status`, which has its own
//! `PATCH /workorders/{id}/status` (`OPEN|IN_PROGRESS|ON_HOLD|DONE|CANCELED`);
//! `DELETE /workorders/{id}` answers 204. Refusals are 400 `{"errors": [{"error", "fieldPath",
//! …}]}` and 404 `{"error": …}`. There is no idempotency key: a created work order carries
//! its record's key in `externalData` (documented "to help reference a matching record in an
//! external system"), which only `GET /workorders/{id}` returns, so a resend after a crash
//! lists the work orders created since (`sort=-createdAt`) and reads each one's stamp.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::{
    Connector, ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteOperation, WriteOutcome,
    WriteRecord, WriteReply, WriteRequest,
    http::{self, Outbound, Reply},
    mapping::{Fields, parse_date},
};
use crate::{
    catalog::EntityType,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known, maybe_date},
};

pub const DEFAULT_BASE_URL: &str = "https://api.getmaintainx.com/v1";
/// The most records MaintainX returns per page.
const MAX_LIMIT: usize = 100;
const RESET_HEADER: &str = "x-rate-limit-reset";
/// The `externalData` member a created work order carries its record's idempotency key in.
pub const STAMP: &str = "millwrightIdempotencyKey";
/// How far before `sent_since` a resend looks for stamped work orders: MaintainX's clock
/// may run behind ours, and a `createdAt` may be cut to the second.
const LOOKUP_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

pub struct MaintainX {
    base: Option<Url>,
    api_key: String,
    outbound: Outbound,
}

impl MaintainX {
    pub fn new(credentials: &Map<String, Value>, outbound: Outbound) -> Self {
        let text = |name: &str| credentials.get(name).and_then(Value::as_str);
        Self {
            base: Url::parse(text("base_url").unwrap_or(DEFAULT_BASE_URL)).ok(),
            api_key: text("api_key").unwrap_or_default().to_owned(),
            outbound,
        }
    }

    /// The resource path and the name of its list in answers.
    fn resource(entity: EntityType) -> Option<(&'static str, &'static str)> {
        Some(match entity {
            EntityType::Asset => ("assets", "assets"),
            EntityType::WorkOrder => ("workorders", "workOrders"),
            EntityType::Location => ("locations", "locations"),
            EntityType::Part => ("parts", "parts"),
            EntityType::Vendor => ("vendors", "vendors"),
            EntityType::PurchaseOrder => ("purchaseorders", "purchaseOrders"),
            EntityType::User => ("users", "users"),
            EntityType::Site => return None,
        })
    }

    /// Sends one request and hands back the answer, whatever its status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, ConnectorError> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| ConnectorError::Validation("`base_url` is not a valid URL".into()))?;
        let mut request = self
            .outbound
            .request(method, http::join(base, path))
            .query(query)
            .bearer_auth(&self.api_key)
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        self.outbound.send(request).await
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        let reply = self.send(Method::GET, path, query, None).await?;
        if !reply.status.is_success() {
            return Err(error(&reply));
        }
        reply.json()
    }

    /// Sends a write; `Ok(Err(message))` when MaintainX refused it (a 4xx: this record's
    /// error), `Err` when the batch has to stop.
    async fn send_write(
        &self,
        pace: &super::Pace,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<Reply, String>, ConnectorError> {
        pace.ready().await;
        let reply = self.send(method, path, &[], body).await?;
        if reply.status.is_success() {
            return Ok(Ok(reply));
        }
        match error(&reply) {
            ConnectorError::Validation(message) => Ok(Err(message)),
            stop => Err(stop),
        }
    }
}

/// MaintainX's error body: `{"errors": [{"error": …, "fieldPath": …}]}` for a refused write,
/// `{"error": …}` for a 404 (also `{"errors": [{"message": …}]}` and `{"message": …}`).
fn error(reply: &Reply) -> ConnectorError {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let message = body.as_ref().and_then(|b| {
        let text = b
            .pointer("/errors/0/error")
            .or_else(|| b.pointer("/errors/0/message"))
            .or_else(|| b.get("message"))
            .or_else(|| b.get("error"))
            .and_then(Value::as_str)?;
        // The documented 400 names the field it refuses.
        Some(
            match b.pointer("/errors/0/fieldPath").and_then(Value::as_str) {
                Some(field) if !field.is_empty() => format!("{field}: {text}"),
                _ => text.to_owned(),
            },
        )
    });
    http::error_for(reply, message, Some(RESET_HEADER))
}

#[async_trait]
impl Connector for MaintainX {
    async fn check(&self) -> Result<(), ConnectorError> {
        self.get("users", &[("limit", "1".into())]).await.map(drop)
    }

    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        let Some((path, list)) = Self::resource(entity) else {
            return Ok(RemotePage {
                records: Vec::new(),
                next_cursor: None,
                high_water_mark: None,
            });
        };
        let limit = request.page_size.clamp(1, MAX_LIMIT);
        let mut query = vec![("limit", limit.to_string())];
        if let Some(cursor) = &request.cursor {
            query.push(("cursor", cursor.clone()));
        }
        let mut body = self.get(path, &query).await?;
        // Taken out of the answer, not copied: each item becomes its record's remote data.
        let Some(Value::Array(items)) = body.get_mut(list).map(Value::take) else {
            return Err(ConnectorError::RemoteFault(format!(
                "the answer for /{path} has no `{list}` list"
            )));
        };
        let records = items.into_iter().map(remote_record).collect();
        let next_cursor = match body.get("nextCursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ConnectorError::RemoteFault(
                    "`nextCursor` is not a string".into(),
                ));
            }
        };
        Ok(RemotePage {
            records,
            next_cursor,
            high_water_mark: None,
        })
    }

    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String> {
        unify(entity, remote)
    }

    /// Creates, updates and deletes work orders, one request per record (two when a status
    /// is set: MaintainX changes it through its own endpoint). A create an earlier attempt
    /// may have sent is looked up by its stamp first and not sent again when found.
    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply {
        if request.entity != EntityType::WorkOrder {
            return super::not_writable("MaintainX", request.entity);
        }
        let sent = match (request.operation, request.sent_since) {
            (WriteOperation::Create, Some(since)) => {
                match self.stamped(request.pace, request.records, since).await {
                    Ok(found) => Some(found),
                    // Cannot tell what the earlier attempt created: send nothing again.
                    Err(ConnectorError::Validation(_)) => return unknown(request.records),
                    Err(stop) => return WriteReply::stopped(stop),
                }
            }
            _ => None,
        };
        let mut reply = WriteReply::default();
        for record in request.records {
            let written = match request.operation {
                WriteOperation::Create => {
                    let found = sent.as_ref().and_then(|s| s.get(&record.idempotency_key));
                    self.create(request.pace, record, found).await
                }
                WriteOperation::Update => self.update(request.pace, &record.fields).await,
                WriteOperation::Delete => {
                    self.delete(request.pace, &record.fields, request.sent_since.is_some())
                        .await
                }
            };
            match written {
                Written::Outcome(outcome) => reply.outcomes.push(outcome),
                Written::Stop(err) => {
                    reply.stopped = Some(err);
                    break;
                }
                Written::OutcomeThenStop(outcome, err) => {
                    reply.outcomes.push(outcome);
                    reply.stopped = Some(err);
                    break;
                }
            }
        }
        reply
    }
}

/// What writing one record came to.
enum Written {
    Outcome(WriteOutcome),
    /// Not written (or safe to write again): the batch stops before it.
    Stop(ConnectorError),
    /// Written in part (created, but its status not set): reported, then the batch stops.
    OutcomeThenStop(WriteOutcome, ConnectorError),
}

/// Every create of a batch whose earlier attempt cannot be checked.
fn unknown(records: &[WriteRecord]) -> WriteReply {
    WriteReply {
        outcomes: records
            .iter()
            .map(|_| Err(super::OUTCOME_UNKNOWN.to_owned()))
            .collect(),
        stopped: None,
    }
}

impl MaintainX {
    /// The work orders an earlier attempt created from these records, by idempotency key:
    /// those created since `since` (less a margin), newest first, each read for its stamp
    /// (lists do not carry `externalData`) until every record is accounted for.
    async fn stamped(
        &self,
        pace: &super::Pace,
        records: &[WriteRecord],
        since: DateTime<Utc>,
    ) -> Result<HashMap<String, String>, ConnectorError> {
        let wanted: HashSet<&str> = records.iter().map(|r| r.idempotency_key.as_str()).collect();
        let candidates = self.created_since(pace, since - LOOKUP_MARGIN).await?;
        let mut found = HashMap::new();
        for id in candidates {
            if found.len() == wanted.len() {
                break;
            }
            pace.ready().await;
            let work_order = match self.get(&format!("workorders/{id}"), &[]).await {
                Ok(body) => body,
                // Deleted since it was listed: it is no record of ours any more.
                Err(ConnectorError::Validation(_)) => continue,
                Err(err) => return Err(err),
            };
            let stamp = work_order
                .pointer("/workOrder/externalData")
                .and_then(|data| data.get(STAMP))
                .and_then(Value::as_str);
            if let Some(key) = stamp.filter(|k| wanted.contains(k)) {
                found.insert(key.to_owned(), id);
            }
        }
        Ok(found)
    }

    /// The ids of the work orders created at or after `floor`, newest first.
    async fn created_since(
        &self,
        pace: &super::Pace,
        floor: DateTime<Utc>,
    ) -> Result<Vec<String>, ConnectorError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![
                ("sort", "-createdAt".to_owned()),
                ("limit", MAX_LIMIT.to_string()),
            ];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor.clone()));
            }
            pace.ready().await;
            let body = self.get("workorders", &query).await?;
            let Some(items) = body.get("workOrders").and_then(Value::as_array) else {
                return Err(ConnectorError::RemoteFault(
                    "the answer for /workorders has no `workOrders` list".into(),
                ));
            };
            for item in items {
                let Ok(fields) = Fields::of(item) else {
                    continue;
                };
                // Sorted newest first: the rest were created before the earlier attempt.
                if fields.date("createdAt").is_some_and(|at| at < floor) {
                    return Ok(ids);
                }
                ids.extend(fields.text("id"));
            }
            cursor = body
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(ids);
            }
        }
    }

    /// Creates a work order stamped with the record's key (or takes the one an earlier
    /// attempt created, `found`), then sets its status when the record has one.
    async fn create(
        &self,
        pace: &super::Pace,
        record: &WriteRecord,
        found: Option<&String>,
    ) -> Written {
        let changes = match changes(&record.fields) {
            Ok(changes) => changes,
            Err(problem) => return Written::Outcome(Err(problem)),
        };
        let id = match found {
            Some(id) => id.clone(),
            None => {
                let mut body = changes.body;
                body.insert(
                    "externalData".into(),
                    json!({ STAMP: record.idempotency_key }),
                );
                let body = Value::Object(body);
                let reply = match self
                    .send_write(pace, Method::POST, "workorders", Some(&body))
                    .await
                {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(refused)) => return Written::Outcome(Err(refused)),
                    Err(stop) => return Written::Stop(stop),
                };
                // Created: whatever follows, this record is not sent again.
                let created = reply.json().ok();
                let id = created
                    .as_ref()
                    .and_then(|c| Fields::of(c).ok())
                    .and_then(|f| f.text("id"));
                match id {
                    Some(id) => id,
                    None => {
                        return Written::Outcome(Err(
                            "MaintainX created the work order but did not say its id".into(),
                        ));
                    }
                }
            }
        };
        // A new work order is OPEN; any other status is a second request.
        match changes.status.filter(|s| *s != "OPEN") {
            None => Written::Outcome(Ok(id)),
            Some(status) => match self.set_status(pace, &id, status).await {
                Ok(Ok(())) => Written::Outcome(Ok(id)),
                Ok(Err(refused)) => Written::Outcome(Err(format!(
                    "created as work order {id}, but MaintainX refused its status {status}: \
                     {refused}"
                ))),
                Err(stop) => Written::OutcomeThenStop(
                    Err(format!(
                        "created as work order {id}, but its status {status} was not set: {stop}"
                    )),
                    stop,
                ),
            },
        }
    }

    /// Updates a work order's fields, then its status. Either may be sent again after a
    /// stop: an update is idempotent.
    async fn update(&self, pace: &super::Pace, fields: &Value) -> Written {
        let id = match key(fields) {
            Ok(id) => id,
            Err(problem) => return Written::Outcome(Err(problem)),
        };
        let changes = match changes(fields) {
            Ok(changes) => changes,
            Err(problem) => return Written::Outcome(Err(problem)),
        };
        // Only a status: its endpoint alone (which also answers 404 for an unknown id).
        if !changes.body.is_empty() || changes.status.is_none() {
            let body = Value::Object(changes.body);
            let path = format!("workorders/{id}");
            match self
                .send_write(pace, Method::PATCH, &path, Some(&body))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(refused)) => return Written::Outcome(Err(refused)),
                Err(stop) => return Written::Stop(stop),
            }
        }
        match changes.status {
            None => Written::Outcome(Ok(id)),
            Some(status) => match self.set_status(pace, &id, status).await {
                Ok(Ok(())) => Written::Outcome(Ok(id)),
                Ok(Err(refused)) => Written::Outcome(Err(format!(
                    "MaintainX refused the status {status}: {refused}"
                ))),
                Err(stop) => Written::Stop(stop),
            },
        }
    }

    /// Deletes a work order. After an earlier attempt (`resent`), a 404 is taken as that
    /// attempt's deletion.
    async fn delete(&self, pace: &super::Pace, fields: &Value, resent: bool) -> Written {
        let id = match key(fields) {
            Ok(id) => id,
            Err(problem) => return Written::Outcome(Err(problem)),
        };
        pace.ready().await;
        let reply = match self
            .send(Method::DELETE, &format!("workorders/{id}"), &[], None)
            .await
        {
            Ok(reply) => reply,
            Err(stop) => return Written::Stop(stop),
        };
        if reply.status.is_success() || (resent && reply.status == reqwest::StatusCode::NOT_FOUND) {
            return Written::Outcome(Ok(id));
        }
        match error(&reply) {
            ConnectorError::Validation(refused) => Written::Outcome(Err(refused)),
            stop => Written::Stop(stop),
        }
    }

    async fn set_status(
        &self,
        pace: &super::Pace,
        id: &str,
        status: &str,
    ) -> Result<Result<(), String>, ConnectorError> {
        let body = json!({ "status": status });
        let path = format!("workorders/{id}/status");
        Ok(self
            .send_write(pace, Method::PATCH, &path, Some(&body))
            .await?
            .map(drop))
    }
}

/// A work order write in MaintainX's terms: the body of its create or update, and the
/// status to set through the status endpoint.
struct Changes {
    body: Map<String, Value>,
    status: Option<&'static str>,
}

/// The record's unified fields as MaintainX fields (the reverse of [`unify`]); null leaves a
/// field as it is. A field MaintainX has no place for is this record's error.
fn changes(fields: &Value) -> Result<Changes, String> {
    let Value::Object(fields) = fields else {
        return Err("validation failed: a record must be a JSON object".into());
    };
    let mut changes = Changes {
        body: Map::new(),
        status: None,
    };
    for (name, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
        let (remote, value) = match name.as_str() {
            "key" => continue,
            "title" => ("title", json!(text(name, value)?)),
            "instructions" => ("description", json!(text(name, value)?)),
            "priority" => ("priority", json!(remote_priority(text(name, value)?)?)),
            "status" => {
                changes.status = Some(remote_status(text(name, value)?)?);
                continue;
            }
            "assetKey" => ("assetId", json!(id(name, value)?)),
            "locationKey" => ("locationId", json!(id(name, value)?)),
            "dueAt" => ("dueDate", json!(remote_date(name, value)?)),
            "scheduledAt" => ("startDate", json!(remote_date(name, value)?)),
            "siteKey" => return Err("siteKey: MaintainX has no sites".into()),
            "completedAt" => {
                return Err(
                    "completedAt: MaintainX sets it itself when the status becomes DONE".into(),
                );
            }
            other => return Err(format!("{other}: not a MaintainX work order field")),
        };
        changes.body.insert(remote.into(), value);
    }
    Ok(changes)
}

/// The work order id of an update or a delete.
fn key(fields: &Value) -> Result<String, String> {
    match fields.get("key") {
        Some(value) => id("key", value).map(|id| id.to_string()),
        None => Err("key: required to update or delete a work order".into()),
    }
}

fn text<'a>(name: &str, value: &'a Value) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{name}: must be a string"))
}

/// A MaintainX id (an integer), given as a number or as the text sync reads produce.
fn id(name: &str, value: &Value) -> Result<u64, String> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("{name}: {value} is not a MaintainX id"))
}

/// An RFC 3339 date as MaintainX writes them: UTC with milliseconds.
fn remote_date(name: &str, value: &Value) -> Result<String, String> {
    let at = parse_date(text(name, value)?)
        .ok_or_else(|| format!("{name}: {value} is not an RFC 3339 date-time"))?;
    Ok(at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// A unified status as the status endpoint takes it.
fn remote_status(unified: &str) -> Result<&'static str, String> {
    Ok(match unified {
        "OPEN" => "OPEN",
        "IN_PROGRESS" => "IN_PROGRESS",
        "ON_HOLD" => "ON_HOLD",
        "COMPLETED" => "DONE",
        "CANCELLED" => "CANCELED",
        other => return Err(format!("status: {other} is not a work order status")),
    })
}

/// A unified priority on MaintainX's four levels: URGENT is its highest, HIGH.
fn remote_priority(unified: &str) -> Result<&'static str, String> {
    Ok(match unified {
        "NONE" => "NONE",
        "LOW" => "LOW",
        "MEDIUM" => "MEDIUM",
        "HIGH" | "URGENT" => "HIGH",
        other => return Err(format!("priority: {other} is not a work order priority")),
    })
}

/// A listed record; one without an id keeps an empty key and fails its mapping.
fn remote_record(item: Value) -> RemoteRecord {
    let fields = Fields::of(&item).ok();
    let key = fields.and_then(|f| f.text("id")).unwrap_or_default();
    let created_at = fields.and_then(|f| f.date("createdAt"));
    let updated_at = fields.and_then(|f| f.date("updatedAt"));
    RemoteRecord {
        key,
        created_at,
        updated_at,
        data: item,
    }
}

/// MaintainX's work order states in the unified model.
pub fn status(remote: &str) -> Option<WorkOrderStatus> {
    Some(match remote {
        "OPEN" => WorkOrderStatus::Open,
        "IN_PROGRESS" => WorkOrderStatus::InProgress,
        "ON_HOLD" => WorkOrderStatus::OnHold,
        "DONE" => WorkOrderStatus::Completed,
        // In MaintainX's OpenAPI document (lists and the status endpoint), not in the fixture.
        "CANCELED" => WorkOrderStatus::Cancelled,
        _ => return None,
    })
}

pub fn priority(remote: &str) -> Option<WorkOrderPriority> {
    Some(match remote {
        "NONE" => WorkOrderPriority::None,
        "LOW" => WorkOrderPriority::Low,
        "MEDIUM" => WorkOrderPriority::Medium,
        "HIGH" => WorkOrderPriority::High,
        _ => return None,
    })
}

fn unify(entity: EntityType, remote: &Value) -> Result<Value, String> {
    let f = Fields::of(remote)?;
    f.required("id")?;
    let t = |name: &str| f.text(name);
    Ok(match entity {
        EntityType::Asset => json!({
            "name": f.required("name")?, "description": t("description"),
            "serialNumber": t("serialNumber"), "makeName": t("manufacturer"),
            "modelName": t("model"), "criticality": null,
            "isActive": t("status").map(|s| s != "OFFLINE"),
            "siteKey": null, "locationKey": t("locationId"), "parentKey": t("parentId"),
        }),
        EntityType::WorkOrder => {
            let remote_status = t("status");
            let remote_priority = t("priority");
            json!({
                "title": f.required("title")?, "instructions": t("description"),
                "status": known(remote_status.as_deref().and_then(status)),
                "remoteStatus": remote_status,
                "priority": known(remote_priority.as_deref().and_then(priority)),
                "remotePriority": remote_priority,
                "assetKey": t("assetId"), "locationKey": t("locationId"), "siteKey": null,
                "dueAt": maybe_date(f.date("dueDate")), "scheduledAt": maybe_date(f.date("startDate")),
                "completedAt": maybe_date(f.date("completedAt")),
            })
        }
        EntityType::Location => json!({ "name": f.required("name")?, "siteKey": null }),
        EntityType::Part => json!({
            "name": f.required("name")?, "partNumber": t("barcode"),
            "unitCost": f.number("unitCost"), "quantity": f.number("availableQuantity"),
        }),
        EntityType::PurchaseOrder => json!({
            "number": f.required("id")?, "vendorKey": t("vendorId"), "status": t("status"),
            "total": f.number("totalCost"),
        }),
        EntityType::Vendor => json!({ "name": f.required("name")?, "email": t("email") }),
        EntityType::User => {
            let name = [t("firstName"), t("lastName")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if name.is_empty() {
                return Err("the remote record has no `firstName` or `lastName`".into());
            }
            json!({ "name": name, "email": t("email"), "role": t("role") })
        }
        EntityType::Site => return Err("MaintainX has no sites".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_orders_map_states_and_priorities() {
        let wo = json!({"id": 7, "title": "Fix", "status": "DONE", "priority": "HIGH",
                        "assetId": 3, "dueDate": "2026-01-08T00:07:00.000Z"});
        let unified = unify(EntityType::WorkOrder, &wo).unwrap();
        assert_eq!(unified["status"], "COMPLETED");
        assert_eq!(unified["remoteStatus"], "DONE");
        assert_eq!(unified["priority"], "HIGH");
        assert_eq!(unified["assetKey"], "3");
        assert_eq!(unified["dueAt"], "2026-01-08T00:07:00Z");
        let odd = json!({"id": 8, "title": "Fix", "status": "ARCHIVED", "priority": "CRITICAL"});
        let unified = unify(EntityType::WorkOrder, &odd).unwrap();
        assert_eq!(unified["status"], Value::Null, "an unknown word is null");
        assert_eq!(unified["remoteStatus"], "ARCHIVED");
        assert_eq!(unified["priority"], Value::Null);
        assert!(unify(EntityType::WorkOrder, &json!({"title": "no id"})).is_err());
        assert!(unify(EntityType::User, &json!({"id": 1})).is_err());
    }

    #[test]
    fn unified_work_orders_become_maintainx_fields() {
        let record = json!({"key": "7", "title": "Fix", "instructions": "Carefully",
                            "priority": "URGENT", "status": "CANCELLED", "assetKey": "3",
                            "locationKey": 4, "dueAt": "2026-01-08T01:07:00+01:00",
                            "scheduledAt": "2026-01-07T00:00:00Z", "siteKey": null});
        let mapped = changes(&record).unwrap();
        assert_eq!(
            Value::Object(mapped.body),
            json!({"title": "Fix", "description": "Carefully", "priority": "HIGH",
                   "assetId": 3, "locationId": 4, "dueDate": "2026-01-08T00:07:00.000Z",
                   "startDate": "2026-01-07T00:00:00.000Z"})
        );
        assert_eq!(mapped.status, Some("CANCELED"));
        assert_eq!(
            changes(&json!({"status": "COMPLETED"})).unwrap().status,
            Some("DONE")
        );
        for (refused, why) in [
            (json!({"siteKey": "1"}), "siteKey"),
            (
                json!({"completedAt": "2026-01-01T00:00:00Z"}),
                "completedAt",
            ),
            (json!({"assetKey": "A-1"}), "assetKey"),
            (json!({"dueAt": "soon"}), "dueAt"),
            (json!({"priority": "CRITICAL"}), "priority"),
            (json!({"remoteStatus": "DONE"}), "remoteStatus"),
            (json!([1]), "object"),
        ] {
            let problem = changes(&refused).err().unwrap_or_default();
            assert!(problem.contains(why), "{refused}: {problem}");
        }
        assert_eq!(key(&json!({"key": " 12 "})), Ok("12".into()));
        assert!(key(&json!({"title": "no key"})).is_err());
        assert_eq!(status("CANCELED"), Some(WorkOrderStatus::Cancelled));
    }
}
