//! IBM Maximo (Manage) through its JSON API.
//!
//! Source: IBM's Maximo REST API guide (ibm-maximo-dev/maximo-restapi-documentation):
//! object structures under `{base_url}/api/os/<structure>` with the API key in the `apikey`
//! header; `lean=1` for plain JSON; `oslc.select`, `oslc.where`, `oslc.orderBy`,
//! `oslc.pageSize`; records in `member`, the next page's URL in
//! `responseInfo.nextPage.href` (absent on the last page); null attributes are omitted;
//! dates are ISO-8601 in the server's zone with an offset; errors are
//! `{"Error": {"reasonCode": "BMXAA…", "message": …, "statusCode": "400"}}` (a string).
//!
//! Incremental reads ask for `oslc.where=changedate>"<the last run's latest changedate>"`
//! where the structure has `changedate`; the others (sites, items, people) are read in
//! full and the content hash decides. Site-scoped records (locations, assets, work orders,
//! purchase orders) are keyed `SITEID/NUMBER`, as Maximo keys them.
//!
//! Work orders are written back (created, updated, deleted) by the `write` module.

mod write;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::{
    Connector, ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteReply, WriteRequest,
    http::{self, Outbound, Reply},
    mapping::{Fields, later},
};
use crate::{
    catalog::EntityType,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known, maybe_date},
};

/// The most records Maximo returns per page here.
const MAX_PAGE_SIZE: usize = 1000;

/// How one entity is read: its object structure, key attributes and selected attributes.
struct Structure {
    name: &'static str,
    /// The record's number attribute; site-scoped ones are keyed `SITEID/NUMBER`.
    key: &'static str,
    site_scoped: bool,
    select: &'static str,
    /// The structure has `changedate`, so incremental reads filter on it.
    changedate: bool,
    created: Option<&'static str>,
}

fn structure(entity: EntityType) -> Structure {
    let s = |name, key, site_scoped, select, changedate, created| Structure {
        name,
        key,
        site_scoped,
        select,
        changedate,
        created,
    };
    match entity {
        EntityType::Site => s(
            "mxapisite",
            "siteid",
            false,
            "siteid,description,orgid,active",
            false,
            None,
        ),
        EntityType::Location => s(
            "mxapioperloc",
            "location",
            true,
            "location,siteid,description,status,type,parent,changedate",
            true,
            None,
        ),
        EntityType::Asset => s(
            "mxapiasset",
            "assetnum",
            true,
            "assetnum,siteid,description,description_longdescription,serialnum,manufacturer,\
             location,parent,status,isrunning,installdate,changedate",
            true,
            Some("installdate"),
        ),
        EntityType::WorkOrder => s(
            "mxapiwodetail",
            "wonum",
            true,
            "wonum,siteid,description,description_longdescription,status,wopriority,assetnum,\
             location,worktype,targcompdate,schedstart,actfinish,reportdate,changedate",
            true,
            Some("reportdate"),
        ),
        EntityType::Part => s(
            "mxapiitem",
            "itemnum",
            false,
            "itemnum,itemsetid,description,status,orderunit,avgcost,curbaltotal",
            false,
            None,
        ),
        EntityType::Vendor => s(
            "mxapivendor",
            "company",
            false,
            "company,name,type,orgid,changedate",
            true,
            None,
        ),
        EntityType::PurchaseOrder => s(
            "mxapipo",
            "ponum",
            true,
            "ponum,siteid,revisionnum,vendor,status,totalcost,orderdate,changedate",
            true,
            Some("orderdate"),
        ),
        EntityType::User => s(
            "mxapiperson",
            "personid",
            false,
            "personid,displayname,primaryemail,status,title",
            false,
            None,
        ),
    }
}

pub struct Maximo {
    base: Option<Url>,
    api_key: String,
    outbound: Outbound,
}

/// Where a pass stands: the next page's URL, the latest `changedate` seen so far, and when
/// the pass started by Maximo's clock.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    next: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<DateTime<Utc>>,
}

impl Maximo {
    pub fn new(credentials: &Map<String, Value>, outbound: Outbound) -> Self {
        let text = |name: &str| credentials.get(name).and_then(Value::as_str);
        Self {
            base: text("base_url").and_then(|u| Url::parse(u).ok()),
            api_key: text("api_key").unwrap_or_default().to_owned(),
            outbound,
        }
    }

    fn base(&self) -> Result<&Url, ConnectorError> {
        self.base
            .as_ref()
            .ok_or_else(|| ConnectorError::Validation("`base_url` is not a valid URL".into()))
    }

    fn first_page(
        &self,
        structure: &Structure,
        page_size: usize,
        since: Option<DateTime<Utc>>,
        stable: bool,
    ) -> Result<Url, ConnectorError> {
        let mut url = http::join(self.base()?, &format!("api/os/{}", structure.name));
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE).to_string();
        // Site-scoped numbers repeat across sites: the site orders first.
        let order = if structure.site_scoped {
            format!("+siteid,+{}", structure.key)
        } else {
            format!("+{}", structure.key)
        };
        // Stable paging keeps the first page's result set for the following pages, so a
        // record deleted meanwhile shifts nothing (no record is skipped, then taken for
        // deleted).
        let mut query = vec![
            ("lean", "1"),
            ("stablepaging", if stable { "1" } else { "0" }),
            ("oslc.select", structure.select),
            ("oslc.pageSize", &page_size),
            ("oslc.orderBy", &order),
        ];
        let filter = since.filter(|_| structure.changedate).map(|since| {
            let literal = since.format("%Y-%m-%dT%H:%M:%S+00:00");
            format!("changedate>\"{literal}\"")
        });
        if let Some(filter) = &filter {
            query.push(("oslc.where", filter));
        }
        http::append_query(&mut url, &query);
        Ok(url)
    }

    async fn get(&self, url: Url) -> Result<(Value, Option<DateTime<Utc>>), ConnectorError> {
        let request = self
            .outbound
            .request(Method::GET, url)
            .header("apikey", &self.api_key)
            .header("accept", "application/json");
        let reply = self.outbound.send(request).await?;
        if !reply.status.is_success() {
            return Err(error(&reply));
        }
        Ok((reply.json()?, http::server_date(&reply.headers)))
    }
}

/// Maximo's error body: `{"Error": {"reasonCode", "message", "statusCode"}}`.
fn error(reply: &Reply) -> ConnectorError {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let message = body.as_ref().and_then(|b| {
        let error = b.get("Error").or_else(|| b.get("oslc:Error"))?;
        let text = error
            .get("message")
            .or_else(|| error.get("oslc:message"))
            .and_then(Value::as_str)?;
        let code = error.get("reasonCode").and_then(Value::as_str);
        Some(match code {
            Some(code) if !text.contains(code) => format!("{code} {text}"),
            _ => text.to_owned(),
        })
    });
    http::error_for(reply, message, None)
}

#[async_trait]
impl Connector for Maximo {
    async fn check(&self) -> Result<(), ConnectorError> {
        // One record, without stable paging: a probe keeps no result set on the server.
        let url = self.first_page(&structure(EntityType::Asset), 1, None, false)?;
        self.get(url).await.map(drop)
    }

    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        let structure = structure(entity);
        let since = http::since(request)?;
        let (url, seen, started) = match &request.cursor {
            Some(token) => {
                let cursor: Cursor = serde_json::from_str(token).map_err(|_| {
                    ConnectorError::Validation(format!("invalid continuation token `{token:.40}`"))
                })?;
                let url = http::saved_next(self.base(), &cursor.next)?;
                (url, cursor.seen, cursor.started)
            }
            None => (
                self.first_page(&structure, request.page_size, since, true)?,
                None,
                None,
            ),
        };
        let (mut body, date) = self.get(url).await?;
        let started = started.or(date).or_else(|| Some(Utc::now()));
        // Taken out of the answer, not copied: each member becomes its record's remote data.
        let members = match body.get_mut("member").map(Value::take) {
            Some(Value::Array(members)) => members,
            _ => {
                return Err(ConnectorError::RemoteFault(
                    "Maximo's answer has no `member` list (is it lean JSON?)".into(),
                ));
            }
        };
        let mut latest = seen;
        let read = members.len();
        let records: Vec<RemoteRecord> = members
            .into_iter()
            .map(|member| {
                let record = remote_record(&structure, member);
                latest = later(latest, record.updated_at);
                record
            })
            .collect();
        let next = body
            .pointer("/responseInfo/nextPage/href")
            .and_then(Value::as_str);
        let next_cursor = match next {
            Some(href) => {
                let next = Url::parse(href).map_err(|_| {
                    ConnectorError::RemoteFault("`nextPage.href` is not a URL".into())
                })?;
                if !http::same_origin(self.base()?, &next) {
                    return Err(ConnectorError::RemoteFault(format!(
                        "Maximo's next page is on another origin ({}); set `x-public-uri` on \
                         the server or use its public address as base_url",
                        next.host_str().unwrap_or("?")
                    )));
                }
                if read == 0 {
                    return Err(ConnectorError::RemoteFault(
                        "Maximo sent an empty page with a next page".into(),
                    ));
                }
                let cursor = Cursor {
                    next: next.into(),
                    seen: latest,
                    started,
                };
                Some(serde_json::to_string(&cursor).expect("a cursor serializes"))
            }
            None => None,
        };
        // The mark moves only where the structure is filtered by it.
        let high_water_mark = (next_cursor.is_none() && structure.changedate)
            .then(|| http::mark(latest, since, started))
            .flatten();
        Ok(RemotePage {
            records,
            next_cursor,
            high_water_mark,
        })
    }

    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String> {
        unify(entity, remote)
    }

    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply {
        match request.entity {
            EntityType::WorkOrder => self.write_work_orders(request).await,
            entity => super::not_writable("IBM Maximo", entity),
        }
    }
}

/// `SITEID/NUMBER` for site-scoped records, else the number.
fn scoped(site: Option<String>, number: Option<String>) -> Option<String> {
    match (site, number?) {
        (Some(site), number) => Some(format!("{site}/{number}")),
        (None, number) => Some(number),
    }
}

fn remote_record(structure: &Structure, member: Value) -> RemoteRecord {
    let fields = Fields::of(&member).ok();
    let key = fields
        .and_then(|f| {
            let site = structure.site_scoped.then(|| f.text("siteid")).flatten();
            scoped(site, f.text(structure.key))
        })
        .unwrap_or_default();
    let created_at = fields.and_then(|f| structure.created.and_then(|c| f.date(c)));
    let updated_at = fields.and_then(|f| f.date("changedate"));
    RemoteRecord {
        key,
        created_at,
        updated_at,
        data: member,
    }
}

/// Maximo's work order statuses (the shipped synonyms) in the unified model.
pub fn status(remote: &str) -> Option<WorkOrderStatus> {
    Some(match remote {
        "WAPPR" | "APPR" | "WSCH" => WorkOrderStatus::Open,
        "WMATL" | "WPCOND" => WorkOrderStatus::OnHold,
        "INPRG" => WorkOrderStatus::InProgress,
        "COMP" | "CLOSE" => WorkOrderStatus::Completed,
        "CAN" => WorkOrderStatus::Cancelled,
        _ => return None,
    })
}

/// Maximo's `wopriority` (1 most urgent) in the unified model.
pub fn priority(remote: f64) -> Option<WorkOrderPriority> {
    Some(match remote as i64 {
        1 => WorkOrderPriority::Urgent,
        2 => WorkOrderPriority::High,
        3 => WorkOrderPriority::Medium,
        4 | 5 => WorkOrderPriority::Low,
        _ => return None,
    })
}

fn unify(entity: EntityType, remote: &Value) -> Result<Value, String> {
    let f = Fields::of(remote)?;
    let t = |name: &str| f.text(name);
    let site = t("siteid");
    let in_site = |name: &str| scoped(site.clone(), t(name));
    let structure = structure(entity);
    f.required(structure.key)?;
    if structure.site_scoped {
        f.required("siteid")?;
    }
    Ok(match entity {
        EntityType::Site => json!({
            "name": t("description").or_else(|| t("siteid")), "code": t("siteid"), "timezone": null,
        }),
        EntityType::Location => json!({
            "name": t("description").or_else(|| t("location")), "siteKey": site,
        }),
        EntityType::Asset => json!({
            "name": t("description").or_else(|| t("assetnum")),
            "description": t("description_longdescription"),
            "serialNumber": t("serialnum"), "makeName": t("manufacturer"), "modelName": null,
            "criticality": null,
            "isActive": t("status").map(|s| s != "DECOMMISSIONED"),
            "siteKey": site, "locationKey": in_site("location"), "parentKey": in_site("parent"),
        }),
        EntityType::WorkOrder => {
            let remote_status = t("status");
            let remote_priority = f.number("wopriority");
            json!({
                "title": t("description").or_else(|| t("wonum")),
                "instructions": t("description_longdescription"),
                "status": known(remote_status.as_deref().and_then(status)),
                "remoteStatus": remote_status,
                "priority": known(remote_priority.and_then(priority)),
                "remotePriority": t("wopriority"),
                "assetKey": in_site("assetnum"), "locationKey": in_site("location"), "siteKey": site,
                "dueAt": maybe_date(f.date("targcompdate")), "scheduledAt": maybe_date(f.date("schedstart")),
                "completedAt": maybe_date(f.date("actfinish")),
            })
        }
        EntityType::Part => json!({
            "name": t("description").or_else(|| t("itemnum")), "partNumber": t("itemnum"),
            "unitCost": f.number("avgcost"), "quantity": f.number("curbaltotal"),
        }),
        EntityType::PurchaseOrder => json!({
            "number": t("ponum"), "vendorKey": t("vendor"), "status": t("status"),
            "total": f.number("totalcost"),
        }),
        EntityType::Vendor => json!({ "name": t("name").or_else(|| t("company")), "email": null }),
        EntityType::User => json!({
            "name": t("displayname").or_else(|| t("personid")), "email": t("primaryemail"),
            "role": t("title"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_orders_map_maximo_words() {
        let wo = json!({"wonum": "1007", "siteid": "S01", "description": "Inspect",
                        "status": "WMATL", "wopriority": 1, "assetnum": "A00007",
                        "targcompdate": "2026-01-08T19:07:00-05:00"});
        let unified = unify(EntityType::WorkOrder, &wo).unwrap();
        assert_eq!(unified["status"], "ON_HOLD");
        assert_eq!(unified["priority"], "URGENT");
        assert_eq!(unified["remotePriority"], "1");
        assert_eq!(unified["assetKey"], "S01/A00007");
        assert_eq!(unified["dueAt"], "2026-01-09T00:07:00Z");
        assert_eq!(
            unified["locationKey"],
            Value::Null,
            "omitted attributes are null"
        );
        for (word, expected) in [
            ("WAPPR", "OPEN"),
            ("APPR", "OPEN"),
            ("WSCH", "OPEN"),
            ("WPCOND", "ON_HOLD"),
            ("INPRG", "IN_PROGRESS"),
            ("COMP", "COMPLETED"),
            ("CLOSE", "COMPLETED"),
            ("CAN", "CANCELLED"),
        ] {
            assert_eq!(known(status(word)), expected);
        }
        assert_eq!(status("HISTEDIT"), None);
        assert_eq!(priority(5.0), Some(WorkOrderPriority::Low));
        assert_eq!(priority(9.0), None);
        assert!(
            unify(EntityType::WorkOrder, &json!({"wonum": "1"})).is_err(),
            "no site"
        );
    }
}
