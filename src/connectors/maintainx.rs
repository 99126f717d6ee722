//! MaintainX, a cloud CMMS, through its REST API v1.
//!
//! Sources: MaintainX publishes no public reference in our reach; the wire form follows the
//! working public clients (PipedreamHQ/pipedream `components/maintainx`, and others): base
//! `https://api.getmaintainx.com/v1`, `Authorization: Bearer <api key>`; `GET /assets`,
//! `/workorders`, `/locations`, `/parts`, `/vendors`, `/purchaseorders`, `/users` with `limit`
//! and `cursor`; lists as `{"<resource>": […], "nextCursor": "…"}` (null or absent on the
//! last page); ids are integers; 429 with `X-Rate-Limit-Reset` in seconds.
//!
//! There is no documented modified-since filter, so every read is a full read: incremental
//! runs read everything and the content hash decides what changed (which also lets them
//! notice deletions). MaintainX has no sites: locations nest instead.

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::{
    Connector, ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteReply, WriteRequest,
    http::{self, Outbound, Reply},
    mapping::Fields,
};
use crate::{
    catalog::EntityType,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known, maybe_date},
};

pub const DEFAULT_BASE_URL: &str = "https://api.getmaintainx.com/v1";
/// The most records MaintainX returns per page.
const MAX_LIMIT: usize = 100;
const RESET_HEADER: &str = "x-rate-limit-reset";

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

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ConnectorError> {
        let base = self
            .base
            .as_ref()
            .ok_or_else(|| ConnectorError::Validation("`base_url` is not a valid URL".into()))?;
        let request = self
            .outbound
            .request(Method::GET, http::join(base, path))
            .query(query)
            .bearer_auth(&self.api_key)
            .header("accept", "application/json");
        let reply = self.outbound.send(request).await?;
        if !reply.status.is_success() {
            return Err(error(&reply));
        }
        reply.json()
    }
}

/// MaintainX's error body: `{"errors": [{"message": …}]}` (also `{"message": …}`).
fn error(reply: &Reply) -> ConnectorError {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let message = body.as_ref().and_then(|b| {
        b.pointer("/errors/0/message")
            .or_else(|| b.get("message"))
            .or_else(|| b.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
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

    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply {
        super::not_writable("MaintainX", request.entity)
    }
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
}
