//! SAP S/4HANA and SAP ECC through OData V2.
//!
//! Sources: SAP's published API specifications of the S/4HANA A2X services
//! (`API_EQUIPMENT`, `API_FUNCTIONALLOCATION`, `API_MAINTENANCEORDER`, `API_PRODUCT_SRV`,
//! `API_PURCHASEORDER_PROCESS_SRV`, `API_BUSINESS_PARTNER`), the OData V2 JSON format
//! (verbose JSON: `{"d": {"results": […], "__count": "…", "__next": "…"}}`), and
//! SAP/python-pyodata's client (server-driven paging, refusing a `__next` on another origin).
//!
//! What it copes with: `$top`/`$skip` windows that the server cuts into pages of its own
//! (the `__next` link is followed whenever present, then the next window is asked for);
//! `__count` as a string; `/Date(ms)/` and `/Date(ms+0120)/` literals (the milliseconds are
//! UTC); `""` for every unset value; the error body `{"error": {"code", "message":
//! {"lang", "value"}}}` and a 401 that is an HTML logon page; OAuth access tokens that
//! expire (fetched again once on a 401). Incremental reads filter
//! `LastChangeDateTime gt datetimeoffset'…'`; suppliers have no change time, so their
//! deltas come through `A_BusinessPartner` (`LastChangeDate` + `LastChangeTime`).
//!
//! Writes (S/4HANA only): equipment through `API_EQUIPMENT` and maintenance orders through
//! version 0002 of `API_MAINTENANCEORDER` (SAP's spec `OP_API_MAINTENANCEORDER_0002`: POST
//! on `MaintenanceOrder`, PATCH on `MaintenanceOrder('…')`; version 0001 reads only), one
//! request per record under a CSRF token fetched with `X-CSRF-Token: Fetch` and sent back
//! with its session cookies. Neither service honours an idempotency key, so a create an
//! earlier attempt may have sent is reported as unknown rather than sent again.
//!
//! SAP ECC has no A2X services: installations expose SAP Gateway services of their own.
//! The ECC connector reads one with ABAP field names by default (see [`ecc_default`]) and
//! takes per-entity overrides of service path, entity set and field names in the `services`
//! credential. ECC keeps change DATES only, so its incremental reads ask for everything
//! changed on or after the last run's latest change date; the content hash sorts out what
//! really changed.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    Connector, ConnectorError, Pace, ReadRequest, RemotePage, RemoteRecord, WriteOperation,
    WriteOutcome, WriteReply, WriteRequest,
    http::{self, Outbound, Reply},
    mapping::{Fields, later},
};
use crate::{
    catalog::EntityType,
    error::AppError,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known, maybe_date},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    S4Hana,
    Ecc,
}

/// How a set says when a record last changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Edm.DateTimeOffset: filter `gt datetimeoffset'…'`.
    Instant,
    /// Edm.DateTime holding a date: filter `ge datetime'<date>T00:00:00'`.
    Date,
}

/// Where one entity is read from and what its fields are called there.
#[derive(Clone, Debug)]
struct SetSpec {
    /// The service's path, `/sap/opu/odata/sap/API_EQUIPMENT`.
    service: String,
    set: String,
    /// Logical field (`key`, `name`, …) → remote property.
    fields: BTreeMap<String, String>,
    change: Option<Change>,
    expand: Option<&'static str>,
}

impl SetSpec {
    fn field(&self, logical: &str) -> Option<&str> {
        self.fields.get(logical).map(String::as_str)
    }

    fn key(&self) -> &str {
        self.field("key").unwrap_or("key")
    }
}

/// The logical fields of each entity, as the `services` override names them.
const LOGICAL: &[(&str, EntityType, &[&str])] = &[
    (
        "asset",
        EntityType::Asset,
        &[
            "key",
            "name",
            "location",
            "plant",
            "serial",
            "manufacturer",
            "model",
            "parent",
            "inactive",
            "created",
            "changed",
        ],
    ),
    (
        "location",
        EntityType::Location,
        &["key", "name", "parent", "plant", "changed"],
    ),
    (
        "work_order",
        EntityType::WorkOrder,
        &[
            "key",
            "title",
            "status",
            "priority",
            "equipment",
            "location",
            "plant",
            "due",
            "completed",
            "created",
            "changed",
        ],
    ),
    (
        "part",
        EntityType::Part,
        &["key", "name", "unit_cost", "quantity", "changed"],
    ),
    (
        "purchase_order",
        EntityType::PurchaseOrder,
        &["key", "vendor", "total", "status", "created", "changed"],
    ),
    (
        "vendor",
        EntityType::Vendor,
        &["key", "name", "email", "created", "changed"],
    ),
];

fn spec(
    service: &str,
    set: &str,
    fields: &[(&str, &str)],
    change: Option<Change>,
    expand: Option<&'static str>,
) -> SetSpec {
    SetSpec {
        service: service.to_owned(),
        set: set.to_owned(),
        fields: fields
            .iter()
            .map(|(l, r)| ((*l).to_owned(), (*r).to_owned()))
            .collect(),
        change,
        expand,
    }
}

/// The S/4HANA A2X services.
fn s4_default(entity: EntityType) -> Option<SetSpec> {
    const ROOT: &str = "/sap/opu/odata/sap/";
    let service = |name: &str| format!("{ROOT}{name}");
    Some(match entity {
        EntityType::Asset => spec(
            &service("API_EQUIPMENT"),
            "Equipment",
            &[
                ("key", "Equipment"),
                ("name", "EquipmentName"),
                ("location", "FunctionalLocation"),
                ("plant", "MaintenancePlant"),
                ("serial", "SerialNumber"),
                ("manufacturer", "AssetManufacturerName"),
                ("model", "ManufacturerPartTypeName"),
                ("parent", "SuperordinateEquipment"),
                ("inactive", "EquipmentIsInactive"),
                ("created", "CreationDate"),
                ("changed", "LastChangeDateTime"),
            ],
            Some(Change::Instant),
            None,
        ),
        EntityType::Location => spec(
            &service("API_FUNCTIONALLOCATION"),
            "FunctionalLocation",
            &[
                ("key", "FunctionalLocation"),
                ("name", "FunctionalLocationName"),
                ("parent", "SuperiorFunctionalLocation"),
                ("plant", "MaintenancePlant"),
                ("changed", "LastChangeDateTime"),
            ],
            Some(Change::Instant),
            None,
        ),
        EntityType::WorkOrder => spec(
            &service("API_MAINTENANCEORDER"),
            "MaintenanceOrder",
            &[
                ("key", "MaintenanceOrder"),
                ("title", "MaintenanceOrderDesc"),
                ("status", "SystemStatusText"),
                ("priority", "MaintPriority"),
                ("equipment", "Equipment"),
                ("location", "FunctionalLocation"),
                ("plant", "MaintenancePlant"),
                ("due", "LatestAcceptableCompletionDate"),
                ("completed", "MaintOrdBasicEndDateTime"),
                ("changed", "LastChangeDateTime"),
            ],
            Some(Change::Instant),
            None,
        ),
        EntityType::Part => spec(
            &service("API_PRODUCT_SRV"),
            "A_Product",
            &[
                ("key", "Product"),
                ("created", "CreationDate"),
                ("changed", "LastChangeDateTime"),
            ],
            Some(Change::Instant),
            Some("to_Description"),
        ),
        EntityType::PurchaseOrder => spec(
            &service("API_PURCHASEORDER_PROCESS_SRV"),
            "A_PurchaseOrder",
            &[
                ("key", "PurchaseOrder"),
                ("vendor", "Supplier"),
                ("status", "PurchasingProcessingStatus"),
                ("created", "PurchaseOrderDate"),
                ("changed", "LastChangeDateTime"),
            ],
            Some(Change::Instant),
            None,
        ),
        // Suppliers have no change time; incremental reads go through A_BusinessPartner.
        EntityType::Vendor => spec(
            &service("API_BUSINESS_PARTNER"),
            "A_Supplier",
            &[
                ("key", "Supplier"),
                ("name", "SupplierName"),
                ("created", "CreationDate"),
            ],
            None,
            None,
        ),
        EntityType::Site | EntityType::User => return None,
    })
}

/// The ECC service read unless a connection's `services` says otherwise.
pub const ECC_DEFAULT_SERVICE: &str = "/sap/opu/odata/sap/ZPM_MILLWRIGHT_SRV";

/// SAP ECC through a Gateway service with ABAP field names.
fn ecc_default(entity: EntityType) -> Option<SetSpec> {
    let s = |set: &str, fields: &[(&str, &str)], dated: bool| {
        spec(
            ECC_DEFAULT_SERVICE,
            set,
            fields,
            dated.then_some(Change::Date),
            None,
        )
    };
    Some(match entity {
        EntityType::Asset => s(
            "EquipmentSet",
            &[
                ("key", "EQUNR"),
                ("name", "EQKTX"),
                ("location", "TPLNR"),
                ("plant", "SWERK"),
                ("serial", "SERGE"),
                ("manufacturer", "HERST"),
                ("model", "TYPBZ"),
                ("parent", "HEQUI"),
                ("inactive", "INACT"),
                ("created", "ERDAT"),
                ("changed", "AEDAT"),
            ],
            true,
        ),
        EntityType::Location => s(
            "FunctionalLocationSet",
            &[
                ("key", "TPLNR"),
                ("name", "PLTXT"),
                ("parent", "TPLMA"),
                ("plant", "SWERK"),
                ("changed", "AEDAT"),
            ],
            true,
        ),
        EntityType::WorkOrder => s(
            "OrderSet",
            &[
                ("key", "AUFNR"),
                ("title", "KTEXT"),
                ("status", "STTXT"),
                ("priority", "PRIOK"),
                ("equipment", "EQUNR"),
                ("location", "TPLNR"),
                ("plant", "IWERK"),
                ("due", "GLTRP"),
                ("completed", "GETRI"),
                ("created", "ERDAT"),
                ("changed", "AEDAT"),
            ],
            true,
        ),
        EntityType::Part => s(
            "MaterialSet",
            &[
                ("key", "MATNR"),
                ("name", "MAKTX"),
                ("unit_cost", "STPRS"),
                ("quantity", "LABST"),
                ("changed", "LAEDA"),
            ],
            true,
        ),
        EntityType::PurchaseOrder => s(
            "PurchaseOrderSet",
            &[
                ("key", "EBELN"),
                ("vendor", "LIFNR"),
                ("total", "NETWR"),
                ("status", "PROCSTAT"),
                ("created", "BEDAT"),
                ("changed", "AEDAT"),
            ],
            true,
        ),
        EntityType::Vendor => s(
            "VendorSet",
            &[
                ("key", "LIFNR"),
                ("name", "NAME1"),
                ("email", "SMTP_ADDR"),
                ("created", "ERDAT"),
            ],
            false,
        ),
        EntityType::Site | EntityType::User => return None,
    })
}

fn is_identifier(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_service_path(text: &str) -> bool {
    text.starts_with('/')
        && text.len() <= 256
        && text.split('/').skip(1).all(|segment| {
            (1..=64).contains(&segment.len())
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.;=".contains(&b))
                && segment != ".."
        })
}

/// The ECC sets of a connection: the defaults with its `services` overrides applied.
fn ecc_sets(services: Option<&Value>) -> Result<BTreeMap<EntityType, SetSpec>, AppError> {
    let bad = |why: String| AppError::bad_input(format!("`credentials.services`{why}"));
    let mut sets: BTreeMap<EntityType, SetSpec> = LOGICAL
        .iter()
        .filter_map(|(_, entity, _)| Some((*entity, ecc_default(*entity)?)))
        .collect();
    let Some(services) = services else {
        return Ok(sets);
    };
    let Value::Object(services) = services else {
        return Err(bad(" must be a JSON object".into()));
    };
    for (name, value) in services {
        let Some((_, entity, logical)) = LOGICAL.iter().find(|(n, ..)| n == name) else {
            let names: Vec<_> = LOGICAL.iter().map(|(n, ..)| *n).collect();
            return Err(bad(format!(
                ": `{name:.64}` is not an entity; use one of {}",
                names.join(", ")
            )));
        };
        let Value::Object(value) = value else {
            return Err(bad(format!(".{name} must be a JSON object")));
        };
        let set = sets
            .get_mut(entity)
            .expect("every logical entity has a default");
        for (option, v) in value {
            let text = || {
                v.as_str()
                    .ok_or_else(|| bad(format!(".{name}.{option:.64} must be a string")))
            };
            match option.as_str() {
                "service" => {
                    let path = text()?;
                    if !is_service_path(path) {
                        return Err(bad(format!(
                            ".{name}.service must be a path such as {ECC_DEFAULT_SERVICE}"
                        )));
                    }
                    set.service = path.trim_end_matches('/').to_owned();
                }
                "entity_set" => {
                    let set_name = text()?;
                    if !is_identifier(set_name) {
                        return Err(bad(format!(".{name}.entity_set must be a name")));
                    }
                    set.set = set_name.to_owned();
                }
                "fields" => {
                    let Value::Object(fields) = v else {
                        return Err(bad(format!(".{name}.fields must be a JSON object")));
                    };
                    for (field, remote) in fields {
                        if !logical.contains(&field.as_str()) {
                            return Err(bad(format!(
                                ".{name}.fields: `{field:.64}` is not a field; use one of {}",
                                logical.join(", ")
                            )));
                        }
                        match remote.as_str().filter(|r| is_identifier(r)) {
                            Some(remote) => {
                                set.fields.insert(field.clone(), remote.to_owned());
                            }
                            None => {
                                return Err(bad(format!(
                                    ".{name}.fields.{field} must be a property name"
                                )));
                            }
                        }
                    }
                }
                other => {
                    return Err(bad(format!(
                        ".{name}: `{other:.64}` is not an option; use service, entity_set, fields"
                    )));
                }
            }
        }
        set.change = set.field("changed").map(|_| Change::Date);
    }
    Ok(sets)
}

/// Checks the SAP credentials beyond their fields: the authentication's own fields, and
/// for ECC the `services` overrides.
pub fn validate(flavor: Flavor, credentials: &Map<String, Value>) -> Result<(), AppError> {
    let has = |name: &str| credentials.get(name).is_some_and(|v| !v.is_null());
    let needed: &[&str] = match credentials.get("auth").and_then(Value::as_str) {
        Some("oauth_client_credentials") => &["token_url", "client_id", "client_secret"],
        _ => &["username", "password"],
    };
    if let Some(missing) = needed.iter().find(|name| !has(name)) {
        return Err(AppError::bad_input(format!(
            "`credentials.{missing}` is required with auth `{}`",
            credentials
                .get("auth")
                .and_then(Value::as_str)
                .unwrap_or("basic")
        )));
    }
    if flavor == Flavor::Ecc {
        ecc_sets(credentials.get("services"))?;
    }
    if let Some(order_type) = credentials.get("maintenance_order_type")
        && !order_type.is_null()
        && !order_type.as_str().is_some_and(|t| {
            (1..=4).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    {
        return Err(AppError::bad_input(
            "`credentials.maintenance_order_type` must be an order type of 1 to 4 letters and \
             digits, such as PM01",
        ));
    }
    Ok(())
}

enum Auth {
    Basic {
        username: String,
        password: String,
    },
    OAuth {
        token_url: String,
        client_id: String,
        client_secret: String,
    },
}

pub struct Sap {
    flavor: Flavor,
    connection_id: Uuid,
    base: Option<Url>,
    auth: Auth,
    sap_client: Option<String>,
    /// `MaintenanceOrderType` of created maintenance orders.
    order_type: String,
    sets: BTreeMap<EntityType, SetSpec>,
    outbound: Outbound,
}

/// Where a pass stands. Windows are read by key (`<key> gt '<last key read>'`), not by
/// position: a record deleted or added while a pass reads shifts nothing, so none is
/// skipped (and then taken for deleted). Inside a window the server's own `__next` links are
/// followed.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Cursor {
    /// The server's next page of the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    /// The last key read: the next window starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// Records of the current window read so far.
    got: u64,
    /// The server's own page size, once it cut a window: later windows ask for no more, so
    /// the server's position-based `__next` pages are needed for the first window only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top: Option<u64>,
    /// The latest change seen, and when the pass started by the server's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<DateTime<Utc>>,
}

/// An OData string literal: quotes doubled.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `$filter` from its parts, each in parentheses when there are several.
fn conjunction(parts: &[String]) -> Option<String> {
    match parts {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(
            many.iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" and "),
        ),
    }
}

impl Sap {
    pub fn new(
        flavor: Flavor,
        connection_id: Uuid,
        credentials: &Map<String, Value>,
        outbound: Outbound,
    ) -> Self {
        let text = |name: &str| {
            credentials
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let auth = match credentials.get("auth").and_then(Value::as_str) {
            Some("oauth_client_credentials") => Auth::OAuth {
                token_url: text("token_url"),
                client_id: text("client_id"),
                client_secret: text("client_secret"),
            },
            _ => Auth::Basic {
                username: text("username"),
                password: text("password"),
            },
        };
        let sets = match flavor {
            Flavor::S4Hana => LOGICAL
                .iter()
                .filter_map(|(_, e, _)| Some((*e, s4_default(*e)?)))
                .collect(),
            // Validated at connect time; a stored value that no longer parses reads the defaults.
            Flavor::Ecc => ecc_sets(credentials.get("services"))
                .unwrap_or_else(|_| ecc_sets(None).expect("the defaults are valid")),
        };
        Self {
            flavor,
            connection_id,
            base: Url::parse(&text("base_url")).ok(),
            auth,
            sap_client: Some(text("sap_client")).filter(|c| !c.is_empty()),
            order_type: Some(text("maintenance_order_type"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| DEFAULT_ORDER_TYPE.to_owned()),
            sets,
            outbound,
        }
    }

    fn base(&self) -> Result<&Url, ConnectorError> {
        self.base
            .as_ref()
            .ok_or_else(|| ConnectorError::Validation("`base_url` is not a valid URL".into()))
    }

    fn set_url(&self, spec: &SetSpec, set: &str) -> Result<Url, ConnectorError> {
        self.service_url(&spec.service, set)
    }

    /// The first request of a window: `$top`/`$skip`, the count, order, filter, expand.
    fn window(
        &self,
        spec: &SetSpec,
        page_size: usize,
        after: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Url, ConnectorError> {
        let mut url = self.set_url(spec, &spec.set)?;
        let top = page_size.max(1).to_string();
        let mut query = vec![
            ("$top", top.as_str()),
            ("$inlinecount", "allpages"),
            ("$orderby", spec.key()),
        ];
        let mut parts = Vec::new();
        if let Some(after) = after {
            parts.push(format!("{} gt {}", spec.key(), literal(after)));
        }
        if let (Some(since), Some(change), Some(field)) =
            (since, spec.change, spec.field("changed"))
        {
            parts.push(change_filter(field, change, since));
        }
        let filter = conjunction(&parts);
        if let Some(filter) = &filter {
            query.push(("$filter", filter));
        }
        let select = spec
            .fields
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",");
        match spec.expand {
            Some(expand) => query.push(("$expand", expand)),
            None => query.push(("$select", &select)),
        }
        http::append_query(&mut url, &query);
        Ok(url)
    }

    /// Supplier deltas: business partners changed on or after the mark's date, with their
    /// supplier.
    fn partner_window(
        &self,
        page_size: usize,
        after: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Url, ConnectorError> {
        let spec = &self.sets[&EntityType::Vendor];
        let mut url = self.set_url(spec, "A_BusinessPartner")?;
        let mut parts = Vec::new();
        if let Some(after) = after {
            parts.push(format!("BusinessPartner gt {}", literal(after)));
        }
        parts.push(change_filter("LastChangeDate", Change::Date, since));
        let filter = conjunction(&parts).unwrap_or_default();
        http::append_query(
            &mut url,
            &[
                ("$top", &page_size.max(1).to_string()),
                ("$inlinecount", "allpages"),
                ("$orderby", "BusinessPartner"),
                ("$filter", &filter),
                ("$expand", "to_Supplier"),
            ],
        );
        Ok(url)
    }

    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        fresh: bool,
    ) -> Result<reqwest::RequestBuilder, ConnectorError> {
        Ok(match &self.auth {
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
            Auth::OAuth { .. } => request.bearer_auth(self.access_token(fresh).await?),
        })
    }

    /// An OAuth access token: the cached one unless `fresh`, else a new one.
    async fn access_token(&self, fresh: bool) -> Result<String, ConnectorError> {
        let Auth::OAuth {
            token_url,
            client_id,
            client_secret,
        } = &self.auth
        else {
            return Ok(String::new());
        };
        let fingerprint = http::fingerprint(&[token_url, client_id, client_secret]);
        if !fresh && let Some(token) = self.outbound.cached_token(self.connection_id, fingerprint) {
            return Ok(token);
        }
        let url = Url::parse(token_url)
            .map_err(|_| ConnectorError::Validation("`token_url` is not a valid URL".into()))?;
        let request = self
            .outbound
            .request(Method::POST, url)
            .basic_auth(client_id, Some(client_secret))
            .header("accept", "application/json")
            .form(&[("grant_type", "client_credentials")]);
        let reply = self.outbound.send(request).await?;
        if !reply.status.is_success() {
            let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
            let message = body.as_ref().map(|b| {
                let error = b.get("error").and_then(Value::as_str).unwrap_or("error");
                match b.get("error_description").and_then(Value::as_str) {
                    Some(description) => format!("{error}: {description}"),
                    None => error.to_owned(),
                }
            });
            let message = format!(
                "the token endpoint refused the client credentials ({})",
                message.unwrap_or_else(|| reply.status.to_string())
            );
            return Err(match reply.status.as_u16() {
                400 | 401 | 403 => ConnectorError::AuthRejected(http::clip(&message)),
                _ => http::error_for(&reply, Some(message), None),
            });
        }
        let body = reply.json()?;
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::RemoteFault("the token endpoint returned no access_token".into())
            })?
            .to_owned();
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3600);
        // Renewed a little before it runs out; a short-lived token is used for half its life.
        let lifetime = lifetime.min(86_400);
        let keep = if lifetime > 120 {
            lifetime - 60
        } else {
            lifetime / 2
        };
        self.outbound.store_token(
            self.connection_id,
            fingerprint,
            token.clone(),
            std::time::Duration::from_secs(keep),
        );
        Ok(token)
    }

    /// GETs `url`; with OAuth, a 401 fetches a new token and tries once more. Returns the
    /// body and the server's `Date`.
    async fn get(&self, url: Url) -> Result<(Value, Option<DateTime<Utc>>), ConnectorError> {
        let mut fresh = false;
        loop {
            let request = self
                .outbound
                .request(Method::GET, url.clone())
                .header("accept", "application/json");
            let request = self.authorize(request, fresh).await?;
            let reply = self.outbound.send(request).await?;
            if reply.status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, Auth::OAuth { .. })
                && !fresh
            {
                self.outbound.forget_token(self.connection_id);
                fresh = true;
                continue;
            }
            if !reply.status.is_success() {
                return Err(error(&reply));
            }
            return Ok((reply.json()?, http::server_date(&reply.headers)));
        }
    }

    fn spec(&self, entity: EntityType) -> Option<&SetSpec> {
        self.sets.get(&entity)
    }
}

/// `$filter` for changes after `since`.
fn change_filter(field: &str, change: Change, since: DateTime<Utc>) -> String {
    match change {
        Change::Instant => format!(
            "{field} gt datetimeoffset'{}'",
            since.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        Change::Date => format!(
            "{field} ge datetime'{}T00:00:00'",
            since.date_naive().format("%Y-%m-%d")
        ),
    }
}

/// SAP's error body: `{"error": {"code", "message": {"lang", "value"}}}`.
fn error(reply: &Reply) -> ConnectorError {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let message = body.as_ref().and_then(|b| {
        let error = b.get("error")?;
        let text = error
            .pointer("/message/value")
            .or_else(|| error.get("message"))
            .and_then(Value::as_str)?;
        Some(match error.get("code").and_then(Value::as_str) {
            Some(code) => format!("{code}: {text}"),
            None => text.to_owned(),
        })
    });
    http::error_for(reply, message, None)
}

/// An Edm.Time literal (`PT15H51M04S`) as a duration; at most a few days of it.
fn parse_time(text: &str) -> Option<ChronoDuration> {
    let rest = text.trim().strip_prefix("PT")?;
    let (mut total, mut number) = (0f64, String::new());
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' | 'M' | 'S' => {
                let value: f64 = number.parse().ok()?;
                number.clear();
                let unit = match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                total += value * unit;
            }
            _ => return None,
        }
    }
    (number.is_empty() && total.is_finite() && (0.0..=1e6).contains(&total))
        .then(|| ChronoDuration::seconds(total as i64))
}

/// The OData protocol's own properties (`__metadata`, unexpanded `__deferred` links) are
/// not the record's data: they carry the server's address, which would change every
/// record's content hash with the `base_url`.
fn strip_protocol(value: &mut Value) {
    if let Value::Object(map) = value {
        map.remove("__metadata");
        map.retain(|_, v| v.get("__deferred").is_none());
        for v in map.values_mut() {
            match v {
                Value::Object(_) => strip_protocol(v),
                Value::Array(items) => items.iter_mut().for_each(strip_protocol),
                _ => {}
            }
            if let Some(Value::Array(items)) = v.get_mut("results") {
                items.iter_mut().for_each(strip_protocol);
            }
        }
    }
}

#[async_trait]
impl Connector for Sap {
    async fn check(&self) -> Result<(), ConnectorError> {
        let spec = self
            .spec(EntityType::Asset)
            .ok_or_else(|| ConnectorError::Validation("no equipment service".into()))?;
        let mut url = self.set_url(spec, &spec.set)?;
        http::append_query(&mut url, &[("$top", "1")]);
        self.get(url).await.map(drop)
    }

    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        let Some(spec) = self.spec(entity) else {
            return Ok(RemotePage {
                records: Vec::new(),
                next_cursor: None,
                high_water_mark: None,
            });
        };
        let since = http::since(request)?;
        let partners = entity == EntityType::Vendor && self.flavor == Flavor::S4Hana;
        let incremental = since.is_some() && (spec.change.is_some() || partners);
        let since = since.filter(|_| incremental);
        let cursor: Cursor = match &request.cursor {
            Some(token) => serde_json::from_str(token).map_err(|_| {
                ConnectorError::Validation(format!("invalid continuation token `{token:.40}`"))
            })?,
            None => Cursor::default(),
        };
        let page_size = cursor
            .top
            .map_or(request.page_size.max(1), |top| top.max(1) as usize);
        let url = match &cursor.next {
            Some(next) => http::saved_next(self.base(), next)?,
            None => match since {
                Some(since) if partners => {
                    self.partner_window(page_size, cursor.after.as_deref(), since)?
                }
                _ => self.window(spec, page_size, cursor.after.as_deref(), since)?,
            },
        };
        let (mut body, date) = self.get(url).await?;
        let started = cursor.started.or(date).or_else(|| Some(Utc::now()));
        let d = body.get_mut("d").ok_or_else(|| {
            ConnectorError::RemoteFault("the answer has no `d` (not OData V2 JSON)".into())
        })?;
        // Taken out of the answer, not copied: each result becomes its record's remote data.
        let results = match d.get_mut("results").map(Value::take) {
            Some(Value::Array(results)) => results,
            _ => {
                return Err(ConnectorError::RemoteFault(
                    "the answer has no `d.results` list".into(),
                ));
            }
        };
        let count = match d.get("__count") {
            Some(Value::String(s)) => Some(s.trim().parse::<u64>().map_err(|_| {
                ConnectorError::RemoteFault(format!("`__count` is not a number: {s:.40}"))
            })?),
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        };
        let reading_partners = partners && since.is_some();
        let key_field = if reading_partners {
            "BusinessPartner"
        } else {
            spec.key()
        };
        let mut seen = cursor.seen;
        let mut after = cursor.after.clone();
        let read = results.len() as u64;
        let mut records = Vec::with_capacity(results.len());
        for result in results {
            if let Some(key) = result.get(key_field).and_then(Value::as_str) {
                if after.as_deref().is_some_and(|a| key <= a) {
                    return Err(ConnectorError::RemoteFault(format!(
                        "the server returned {key_field} {key:.40} again, or out of order"
                    )));
                }
                after = Some(key.to_owned());
            }
            let record = if reading_partners {
                match partner_change(&result, since) {
                    Some(record) => record,
                    None => continue,
                }
            } else {
                remote_record(spec, result)
            };
            seen = later(seen, record.updated_at);
            records.push(record);
        }
        let got = cursor.got + read;
        let next = match d.get("__next") {
            Some(Value::String(next)) if !next.is_empty() => {
                let url = self
                    .base()?
                    .join(next)
                    .map_err(|_| ConnectorError::RemoteFault("`__next` is not a URL".into()))?;
                if !http::same_origin(self.base()?, &url) {
                    return Err(ConnectorError::RemoteFault(format!(
                        "the server's next page (__next) is on another origin ({}); refused",
                        url.host_str().unwrap_or("?")
                    )));
                }
                if read == 0 {
                    return Err(ConnectorError::RemoteFault(
                        "the server sent an empty page with a next link".into(),
                    ));
                }
                let cap = read;
                Some(Cursor {
                    next: Some(url.into()),
                    after,
                    got,
                    top: Some(cursor.top.map_or(cap, |top| top.min(cap))),
                    seen,
                    started,
                })
            }
            _ => {
                // The window is over: more follow if its count says so (it counts what the
                // window's filter matches), or, without a count, if the window was full.
                let more = got > 0 && count.map_or(got >= page_size as u64, |count| got < count);
                more.then_some(Cursor {
                    next: None,
                    after,
                    got: 0,
                    top: cursor.top,
                    seen,
                    started,
                })
            }
        };
        let high_water_mark = (next.is_none() && (spec.change.is_some() || partners))
            .then(|| http::mark(seen, since, started))
            .flatten();
        Ok(RemotePage {
            records,
            next_cursor: next.map(|c| serde_json::to_string(&c).expect("a cursor serializes")),
            high_water_mark,
        })
    }

    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String> {
        let spec = self
            .spec(entity)
            .ok_or_else(|| format!("{entity} is not read from SAP"))?;
        unify(spec, entity, remote)
    }

    /// Writes equipment through `API_EQUIPMENT` and maintenance orders through
    /// `API_MAINTENANCEORDER;v=0002` (S/4HANA), one request per record: creates (POST) and
    /// updates (PATCH) under a CSRF token and its session cookies; a stale token (403
    /// `X-CSRF-Token: Required`) is fetched again once, an expired OAuth token (401) too.
    /// SAP deletes neither through these APIs: a delete is a per-record error. A create an
    /// earlier attempt may have sent (`sent_since`) is not sent again: neither service
    /// honours an idempotency key, so its outcome is reported as unknown.
    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply {
        let writable = self.flavor == Flavor::S4Hana
            && matches!(request.entity, EntityType::Asset | EntityType::WorkOrder);
        let spec = match self.spec(request.entity) {
            Some(spec) if writable => spec,
            _ => return super::not_writable(self.system_name(), request.entity),
        };
        let mut reply = WriteReply::default();
        for record in request.records {
            if request.sent_since.is_some() && request.operation == WriteOperation::Create {
                reply.outcomes.push(Err(super::OUTCOME_UNKNOWN.to_owned()));
                continue;
            }
            let prepared = match request.entity {
                EntityType::Asset => self.equipment_write(spec, request.operation, &record.fields),
                _ => self.order_write(request.operation, &record.fields),
            };
            let outcome = match prepared {
                Ok(write) => self.send_write(&write, request.pace).await,
                Err(refusal) => Ok(Err(refusal)),
            };
            match outcome {
                Ok(outcome) => reply.outcomes.push(outcome),
                Err(err) => {
                    reply.stopped = Some(err);
                    break;
                }
            }
        }
        reply
    }
}

/// One record's request, ready to send.
struct RecordWrite {
    /// The service path whose CSRF token the request carries.
    service: String,
    method: Method,
    url: Url,
    body: Map<String, Value>,
    /// An update's key (the answer is a bodiless 204); `None` for a create, whose key comes
    /// back as `d.<key_field>`.
    key: Option<String>,
    key_field: &'static str,
    /// What SAP calls the record, for messages.
    what: &'static str,
}

/// The service of maintenance-order writes: version 0002 of `API_MAINTENANCEORDER` (SAP's
/// spec `OP_API_MAINTENANCEORDER_0002`, S/4HANA 2023 on) creates (POST on the set) and
/// updates (PATCH on `MaintenanceOrder('…')`); version 0001, which reads use, writes
/// nothing.
pub const ORDER_WRITE_SERVICE: &str = "/sap/opu/odata/sap/API_MAINTENANCEORDER;v=0002";

/// The order type of created maintenance orders unless a connection says otherwise:
/// SAP's standard corrective maintenance order.
pub const DEFAULT_ORDER_TYPE: &str = "PM01";

/// A key SAP could have given: 1 to `max` letters and digits (quotes and the like would
/// change the URL's meaning).
fn sap_key(fields: &Map<String, Value>, max: usize) -> Option<&str> {
    fields
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= max && k.bytes().all(|b| b.is_ascii_alphanumeric()))
}

impl Sap {
    fn system_name(&self) -> &'static str {
        match self.flavor {
            Flavor::S4Hana => "SAP S/4HANA",
            Flavor::Ecc => "SAP ECC",
        }
    }

    fn service_url(&self, service: &str, resource: &str) -> Result<Url, ConnectorError> {
        let mut url = http::join(self.base()?, &format!("{service}/{resource}"));
        http::append_query(&mut url, &[("$format", "json")]);
        if let Some(client) = &self.sap_client {
            http::append_query(&mut url, &[("sap-client", client)]);
        }
        Ok(url)
    }

    /// The service's CSRF token and session cookies: the kept ones unless `fresh`.
    async fn csrf(
        &self,
        service: &str,
        fresh: bool,
        pace: &Pace,
    ) -> Result<http::Session, ConnectorError> {
        if !fresh && let Some(session) = self.outbound.session(self.connection_id) {
            return Ok(session);
        }
        let mut url = http::join(self.base()?, &format!("{service}/"));
        if let Some(client) = &self.sap_client {
            http::append_query(&mut url, &[("sap-client", client)]);
        }
        let request = self
            .outbound
            .request(Method::GET, url)
            .header("x-csrf-token", "Fetch")
            .header("accept", "application/json");
        pace.ready().await;
        let reply = self
            .outbound
            .send(self.authorize(request, false).await?)
            .await?;
        if !reply.status.is_success() {
            return Err(error(&reply));
        }
        let token = reply
            .header("x-csrf-token")
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("required"))
            .ok_or_else(|| {
                ConnectorError::RemoteFault("the service handed out no CSRF token".into())
            })?
            .to_owned();
        let cookies = reply
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next())
            .map(str::trim)
            .filter(|c| c.contains('='))
            .collect::<Vec<_>>()
            .join("; ");
        let session = http::Session { token, cookies };
        self.outbound
            .store_session(self.connection_id, session.clone());
        Ok(session)
    }

    /// An equipment write; `Err` is the record's refusal, found before sending.
    fn equipment_write(
        &self,
        spec: &SetSpec,
        operation: WriteOperation,
        record: &Value,
    ) -> Result<RecordWrite, String> {
        let Value::Object(fields) = record else {
            return Err("validation failed: a record must be a JSON object".into());
        };
        // Not read from SAP either: written, they would be dropped without a word.
        if let Some(field) = ["description", "criticality"]
            .into_iter()
            .find(|f| fields.get(*f).is_some_and(|v| !v.is_null()))
        {
            return Err(format!(
                "validation failed: {field} cannot be written to SAP: API_EQUIPMENT has no \
                 such property (the name is the equipment's description)"
            ));
        }
        let body = equipment_body(fields);
        let (method, resource, key) = match operation {
            WriteOperation::Delete => {
                return Err(
                    "SAP's API_EQUIPMENT deletes no equipment (mark it for deletion in SAP)".into(),
                );
            }
            WriteOperation::Create => {
                if body.get("EquipmentName").is_none() {
                    return Err("validation failed: name is required".into());
                }
                (Method::POST, spec.set.clone(), None)
            }
            WriteOperation::Update => {
                let Some(key) = sap_key(fields, 18) else {
                    return Err("validation failed: key must be an equipment number".into());
                };
                let resource = format!(
                    "{}(Equipment='{key}',ValidityEndDate=datetime'9999-12-31T00%3A00%3A00')",
                    spec.set
                );
                (Method::PATCH, resource, Some(key.to_owned()))
            }
        };
        Ok(RecordWrite {
            service: spec.service.clone(),
            method,
            url: self
                .service_url(&spec.service, &resource)
                .map_err(|e| e.message())?,
            body,
            key,
            key_field: "Equipment",
            what: "equipment",
        })
    }

    /// A maintenance-order write; `Err` is the record's refusal, found before sending.
    fn order_write(
        &self,
        operation: WriteOperation,
        record: &Value,
    ) -> Result<RecordWrite, String> {
        let Value::Object(fields) = record else {
            return Err("validation failed: a record must be a JSON object".into());
        };
        let mut body = order_body(fields)?;
        let (method, resource, key) = match operation {
            WriteOperation::Delete => {
                return Err(
                    "SAP's API_MAINTENANCEORDER deletes no maintenance order (it is \
                            marked for deletion with the action SetMaintOrdStsToMrkdForDeltn)"
                        .into(),
                );
            }
            WriteOperation::Create => {
                if body.get("MaintenanceOrderDesc").is_none_or(|d| d == "") {
                    return Err("validation failed: title is required".into());
                }
                body.insert(
                    "MaintenanceOrderType".into(),
                    Value::from(self.order_type.as_str()),
                );
                (Method::POST, "MaintenanceOrder".to_owned(), None)
            }
            WriteOperation::Update => {
                let Some(key) = sap_key(fields, 12) else {
                    return Err("validation failed: key must be a maintenance order number".into());
                };
                (
                    Method::PATCH,
                    format!("MaintenanceOrder('{key}')"),
                    Some(key.to_owned()),
                )
            }
        };
        Ok(RecordWrite {
            service: ORDER_WRITE_SERVICE.to_owned(),
            method,
            url: self
                .service_url(ORDER_WRITE_SERVICE, &resource)
                .map_err(|e| e.message())?,
            body,
            key,
            key_field: "MaintenanceOrder",
            what: "maintenance order",
        })
    }

    /// Sends one record's write under the service's CSRF token. `Ok` is the record's
    /// outcome (its key, or SAP's refusal of it); `Err` stops the batch (rejected
    /// credentials, a rate limit, an unreachable or failing remote).
    async fn send_write(
        &self,
        write: &RecordWrite,
        pace: &Pace,
    ) -> Result<WriteOutcome, ConnectorError> {
        // Once each: a new CSRF token (403 Required), a new OAuth access token (401).
        let (mut fresh, mut fresh_token) = (false, false);
        loop {
            let session = self.csrf(&write.service, fresh, pace).await?;
            let mut request = self
                .outbound
                .request(write.method.clone(), write.url.clone())
                .header("x-csrf-token", &session.token)
                .header("accept", "application/json")
                .json(&Value::Object(write.body.clone()));
            if !session.cookies.is_empty() {
                request = request.header("cookie", &session.cookies);
            }
            // After a 401 the token is forgotten: the CSRF fetch above already took a new one.
            let request = self.authorize(request, false).await?;
            pace.ready().await;
            let reply = self.outbound.send(request).await?;
            if reply.status == StatusCode::UNAUTHORIZED
                && matches!(self.auth, Auth::OAuth { .. })
                && !fresh_token
            {
                self.outbound.forget_token(self.connection_id);
                (fresh, fresh_token) = (true, true);
                continue;
            }
            let csrf_required = reply.status == StatusCode::FORBIDDEN
                && reply
                    .header("x-csrf-token")
                    .is_some_and(|v| v.eq_ignore_ascii_case("required"));
            if csrf_required && !fresh {
                fresh = true;
                continue;
            }
            if csrf_required {
                return Ok(Err(
                    "SAP refused a fresh CSRF token too (403 X-CSRF-Token: Required)".into(),
                ));
            }
            if reply.status.is_success() {
                if let Some(key) = &write.key {
                    return Ok(Ok(key.clone()));
                }
                // Created already: whatever the answer says, this record is not retried.
                let created = reply.json().ok();
                let number = created
                    .as_ref()
                    .and_then(|c| c.pointer(&format!("/d/{}", write.key_field)))
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty());
                return Ok(number.map(str::to_owned).ok_or_else(|| {
                    format!("SAP created the {} but did not say its number", write.what)
                }));
            }
            return match error(&reply) {
                err @ (ConnectorError::AuthRejected(_)
                | ConnectorError::RateLimited { .. }
                | ConnectorError::RemoteFault(_)
                | ConnectorError::Unreachable(_)) => Err(err),
                err => Ok(Err(err.message())),
            };
        }
    }
}

/// The unified asset fields a write sets, as `API_EQUIPMENT` names them.
fn equipment_body(fields: &Map<String, Value>) -> Map<String, Value> {
    const NAMES: &[(&str, &str)] = &[
        ("name", "EquipmentName"),
        ("serialNumber", "SerialNumber"),
        ("makeName", "AssetManufacturerName"),
        ("modelName", "ManufacturerPartTypeName"),
        ("locationKey", "FunctionalLocation"),
        ("siteKey", "MaintenancePlant"),
        ("parentKey", "SuperordinateEquipment"),
    ];
    let mut body: Map<String, Value> = NAMES
        .iter()
        .filter_map(|(unified, sap)| {
            let value = fields.get(*unified)?.as_str()?;
            Some(((*sap).to_owned(), Value::from(value)))
        })
        .collect();
    if let Some(active) = fields.get("isActive").and_then(Value::as_bool) {
        body.insert("EquipmentIsInactive".into(), Value::from(!active));
    }
    body
}

/// Unified work-order fields that `API_MAINTENANCEORDER` cannot take as properties, and why.
const ORDER_FIELDS_NOT_WRITTEN: &[(&str, &str)] = &[
    (
        "status",
        "a maintenance order's status changes through SAP's actions \
         (SetMaintOrdToTechCompleted and the like), not through its properties",
    ),
    (
        "completedAt",
        "completion is SAP's technical completion action, not a property",
    ),
    (
        "instructions",
        "long texts are separate entities (to_MaintenanceOrderLongText)",
    ),
    ("scheduledAt", "it is not read from SAP either"),
];

/// The unified work-order fields of a write, as `API_MAINTENANCEORDER` names them (the
/// reverse of `unify`): title → `MaintenanceOrderDesc`, priority → `MaintPriority` (URGENT 1
/// … LOW 4, NONE blank), assetKey → `Equipment`, locationKey → `FunctionalLocation`,
/// siteKey → `MaintenancePlant`, dueAt → `LatestAcceptableCompletionDate` (its UTC date).
/// A field it cannot write refuses the record rather than being dropped.
fn order_body(fields: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    if let Some((field, why)) = ORDER_FIELDS_NOT_WRITTEN
        .iter()
        .find(|(field, _)| fields.get(*field).is_some_and(|v| !v.is_null()))
    {
        return Err(format!(
            "validation failed: {field} cannot be written to SAP: {why}"
        ));
    }
    const TEXTS: &[(&str, &str)] = &[
        ("title", "MaintenanceOrderDesc"),
        ("assetKey", "Equipment"),
        ("locationKey", "FunctionalLocation"),
        ("siteKey", "MaintenancePlant"),
    ];
    let mut body = Map::new();
    for (unified, sap) in TEXTS {
        match fields.get(*unified) {
            None => {}
            // SAP's unset value is blank.
            Some(Value::Null) => {
                body.insert((*sap).to_owned(), Value::from(""));
            }
            Some(Value::String(text)) => {
                body.insert((*sap).to_owned(), Value::from(text.as_str()));
            }
            Some(_) => return Err(format!("validation failed: {unified} must be a string")),
        }
    }
    if let Some(value) = fields.get("priority") {
        let digit = match value.as_str() {
            None if value.is_null() => "",
            Some("NONE") => "",
            Some("URGENT") => "1",
            Some("HIGH") => "2",
            Some("MEDIUM") => "3",
            Some("LOW") => "4",
            _ => {
                return Err(
                    "validation failed: priority must be NONE, LOW, MEDIUM, HIGH or URGENT".into(),
                );
            }
        };
        body.insert("MaintPriority".into(), Value::from(digit));
    }
    if let Some(value) = fields.get("dueAt") {
        let due = match value {
            Value::Null => Value::Null,
            Value::String(text) => {
                let at = DateTime::parse_from_rfc3339(text).map_err(|_| {
                    "validation failed: dueAt must be an RFC 3339 date-time".to_owned()
                })?;
                edm_date(at.with_timezone(&Utc))
            }
            _ => return Err("validation failed: dueAt must be an RFC 3339 date-time".into()),
        };
        body.insert("LatestAcceptableCompletionDate".into(), due);
    }
    Ok(body)
}

/// An Edm.DateTime holding the UTC date of `at`: `/Date(<ms of its midnight>)/`.
fn edm_date(at: DateTime<Utc>) -> Value {
    let midnight = at.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    Value::from(format!("/Date({})/", midnight.timestamp_millis()))
}

fn remote_record(spec: &SetSpec, result: Value) -> RemoteRecord {
    let mut data = result;
    strip_protocol(&mut data);
    let fields = Fields::of(&data).ok();
    let date =
        |logical: &str| fields.and_then(|f| spec.field(logical).and_then(|name| f.date(name)));
    RemoteRecord {
        key: fields.and_then(|f| f.text(spec.key())).unwrap_or_default(),
        created_at: date("created"),
        updated_at: date("changed"),
        data,
    }
}

/// A business partner changed after `since`, as its supplier record (what a full read
/// stores); `None` for an unchanged partner or one that is no supplier.
fn partner_change(partner: &Value, since: Option<DateTime<Utc>>) -> Option<RemoteRecord> {
    let fields = Fields::of(partner).ok()?;
    let day = fields.date("LastChangeDate")?;
    let time = fields
        .text("LastChangeTime")
        .and_then(|t| parse_time(&t))
        .unwrap_or_else(ChronoDuration::zero);
    let changed = day.checked_add_signed(time)?;
    if since.is_some_and(|since| changed <= since) {
        return None;
    }
    let mut supplier = partner
        .get("to_Supplier")
        .filter(|s| s.is_object())?
        .clone();
    strip_protocol(&mut supplier);
    Some(RemoteRecord {
        key: Fields::of(&supplier).ok()?.text("Supplier")?,
        created_at: Fields::of(&supplier).ok()?.date("CreationDate"),
        updated_at: Some(changed),
        data: supplier,
    })
}

/// SAP's system status text (`REL  PCNF PRC`) in the unified model: the most telling
/// status in it decides.
pub fn status(text: &str) -> Option<WorkOrderStatus> {
    let has = |word: &str| text.split_whitespace().any(|w| w == word);
    Some(if has("DLFL") {
        WorkOrderStatus::Cancelled
    } else if has("CLSD") || has("TECO") || has("CNF") {
        WorkOrderStatus::Completed
    } else if has("LKD") {
        WorkOrderStatus::OnHold
    } else if has("PCNF") {
        WorkOrderStatus::InProgress
    } else if has("REL") || has("CRTD") {
        WorkOrderStatus::Open
    } else {
        return None;
    })
}

/// SAP's maintenance priorities (1 very high … 4 low) in the unified model.
pub fn priority(text: &str) -> Option<WorkOrderPriority> {
    Some(match text.trim() {
        "1" => WorkOrderPriority::Urgent,
        "2" => WorkOrderPriority::High,
        "3" => WorkOrderPriority::Medium,
        "4" => WorkOrderPriority::Low,
        _ => return None,
    })
}

/// A product's description in English, else the first one.
fn description(product: &Value) -> Option<String> {
    let descriptions = product.pointer("/to_Description/results")?.as_array()?;
    let text = |d: &Value| {
        d.get("ProductDescription")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    descriptions
        .iter()
        .find(|d| d.get("Language").and_then(Value::as_str) == Some("EN"))
        .and_then(text)
        .or_else(|| descriptions.iter().find_map(text))
}

fn unify(spec: &SetSpec, entity: EntityType, remote: &Value) -> Result<Value, String> {
    let f = Fields::of(remote)?;
    let t = |logical: &str| spec.field(logical).and_then(|name| f.text(name));
    let date = |logical: &str| maybe_date(spec.field(logical).and_then(|name| f.date(name)));
    let key = f.required(spec.key())?;
    Ok(match entity {
        EntityType::Asset => json!({
            "name": t("name").unwrap_or_else(|| key.clone()), "description": null,
            "serialNumber": t("serial"), "makeName": t("manufacturer"), "modelName": t("model"),
            "criticality": null,
            "isActive": spec.field("inactive").and_then(|n| f.boolean(n)).map(|inactive| !inactive),
            "siteKey": t("plant"), "locationKey": t("location"), "parentKey": t("parent"),
        }),
        EntityType::Location => json!({
            "name": t("name").unwrap_or_else(|| key.clone()), "siteKey": t("plant"),
        }),
        EntityType::WorkOrder => {
            let remote_status = t("status");
            let remote_priority = t("priority");
            json!({
                "title": t("title").unwrap_or_else(|| key.clone()), "instructions": null,
                "status": known(remote_status.as_deref().and_then(status)),
                "remoteStatus": remote_status,
                "priority": known(remote_priority.as_deref().and_then(priority)),
                "remotePriority": remote_priority,
                "assetKey": t("equipment"), "locationKey": t("location"), "siteKey": t("plant"),
                "dueAt": date("due"), "scheduledAt": null, "completedAt": date("completed"),
            })
        }
        EntityType::Part => json!({
            "name": t("name").or_else(|| description(remote)).unwrap_or_else(|| key.clone()),
            "partNumber": key,
            "unitCost": spec.field("unit_cost").and_then(|n| f.number(n)),
            "quantity": spec.field("quantity").and_then(|n| f.number(n)),
        }),
        EntityType::PurchaseOrder => json!({
            "number": key, "vendorKey": t("vendor"), "status": t("status"),
            "total": spec.field("total").and_then(|n| f.number(n)),
        }),
        EntityType::Vendor => json!({
            "name": t("name").unwrap_or_else(|| key.clone()), "email": t("email"),
        }),
        EntityType::Site | EntityType::User => {
            return Err(format!("{entity} is not read from SAP"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_priorities_and_times() {
        assert_eq!(status("CRTD MANC NMAT"), Some(WorkOrderStatus::Open));
        assert_eq!(status("REL  PRC"), Some(WorkOrderStatus::Open));
        assert_eq!(status("REL  PCNF PRC"), Some(WorkOrderStatus::InProgress));
        assert_eq!(status("REL  LKD"), Some(WorkOrderStatus::OnHold));
        assert_eq!(status("TECO PRC"), Some(WorkOrderStatus::Completed));
        assert_eq!(status("CRTD DLFL"), Some(WorkOrderStatus::Cancelled));
        assert_eq!(status("XYZ"), None);
        assert_eq!(priority("1"), Some(WorkOrderPriority::Urgent));
        assert_eq!(priority(""), None);
        assert_eq!(
            parse_time("PT15H51M04S"),
            Some(ChronoDuration::seconds(57_064))
        );
        assert_eq!(parse_time("PT15H"), Some(ChronoDuration::hours(15)));
        assert_eq!(parse_time("15:51"), None);
    }

    #[test]
    fn order_fields_are_the_reverse_of_unify() {
        let fields = |v: Value| v.as_object().unwrap().clone();
        let body = order_body(&fields(json!({"title": "Fix", "priority": "HIGH",
            "assetKey": "10000001", "locationKey": null, "siteKey": "1010",
            "dueAt": "2026-05-01T23:30:00-02:00", "status": null})))
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"MaintenanceOrderDesc": "Fix", "MaintPriority": "2",
                "Equipment": "10000001", "FunctionalLocation": "", "MaintenancePlant": "1010",
                "LatestAcceptableCompletionDate": "/Date(1777680000000)/"})
        );
        for (unified, digit) in [("URGENT", "1"), ("MEDIUM", "3"), ("LOW", "4"), ("NONE", "")] {
            let body = order_body(&fields(json!({ "priority": unified }))).unwrap();
            assert_eq!(body["MaintPriority"], digit);
            let back = priority(digit).map(|p| serde_json::to_value(p).unwrap());
            assert_eq!(back.unwrap_or(json!("NONE")), unified);
        }
        for refused in [
            json!({"status": "COMPLETED"}),
            json!({"completedAt": "2026-01-01T00:00:00Z"}),
            json!({"instructions": "x"}),
            json!({"scheduledAt": "2026-01-01T00:00:00Z"}),
            json!({"priority": "SOON"}),
            json!({"dueAt": "tomorrow"}),
            json!({"title": 7}),
        ] {
            assert!(order_body(&fields(refused.clone())).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_order_type_is_checked() {
        let with = |order_type: Value| {
            let credentials = json!({"auth": "basic", "username": "u", "password": "p",
                "maintenance_order_type": order_type});
            validate(Flavor::S4Hana, credentials.as_object().unwrap())
        };
        assert!(with(json!("PM02")).is_ok());
        assert!(with(Value::Null).is_ok());
        for bad in [json!("PM 1"), json!("PM0001"), json!(""), json!(2)] {
            assert!(with(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_follow_the_change_kind() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T00:07:09.500Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            change_filter("LastChangeDateTime", Change::Instant, at),
            "LastChangeDateTime gt datetimeoffset'2026-01-02T00:07:09Z'"
        );
        assert_eq!(
            change_filter("AEDAT", Change::Date, at),
            "AEDAT ge datetime'2026-01-02T00:00:00'"
        );
    }

    #[test]
    fn ecc_overrides_are_checked() {
        let sets = ecc_sets(Some(&json!({"asset": {"service": "/sap/opu/odata/sap/ZEQUIPMENT_SRV",
            "entity_set": "Equipments", "fields": {"key": "Equnr", "name": "Eqktx", "changed": "Aedat"}}})))
        .unwrap();
        let asset = &sets[&EntityType::Asset];
        assert_eq!(asset.set, "Equipments");
        assert_eq!(asset.key(), "Equnr");
        assert_eq!(
            asset.field("plant"),
            Some("SWERK"),
            "fields not named keep their default"
        );
        for bad in [
            json!({"assets": {}}),
            json!({"asset": {"service": "https://evil.example.com/x"}}),
            json!({"asset": {"service": "/sap/../../etc"}}),
            json!({"asset": {"entity_set": "Set?$x=1"}}),
            json!({"asset": {"fields": {"colour": "X"}}}),
            json!({"asset": {"fields": {"key": "EQUNR desc"}}}),
            json!({"asset": {"speed": 1}}),
            json!([1]),
        ] {
            assert!(ecc_sets(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn protocol_properties_are_not_data() {
        let mut record = json!({"__metadata": {"uri": "http://h/x"}, "Product": "P-1",
            "to_Plant": {"__deferred": {"uri": "http://h/y"}},
            "to_Description": {"results": [{"__metadata": {}, "Language": "EN", "ProductDescription": "Kit"}]}});
        strip_protocol(&mut record);
        assert_eq!(
            record,
            json!({"Product": "P-1",
            "to_Description": {"results": [{"Language": "EN", "ProductDescription": "Kit"}]}})
        );
        assert_eq!(description(&record).as_deref(), Some("Kit"));
    }
}
