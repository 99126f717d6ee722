//! The demo system: a deterministic simulated CMMS inside the server, so that everything can
//! be tried without an external system.
//!
//! Its data is a pure function of the API key, `scale` and a generation number. Each sync
//! session (`Connector::begin_sync`) after the first moves to the next generation:
//! about 1 % of the records change, a few are added and a few deleted (reported as
//! tombstones to incremental reads). `simulate` makes the remote answer 401, be unreachable,
//! rate limit every other request, or fail one request in ten.

use sea_orm::ActiveEnum as _;
use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Connector, ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteOperation, WriteOutcome,
};
use crate::{
    catalog::EntityType,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known},
};

const DEFAULT_SCALE: u64 = 100;
const DEFAULT_PAGE_SIZE: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simulate {
    None,
    AuthExpired,
    Offline,
    RateLimited,
    Flaky,
}

/// What the simulated remote remembers about one connection while the process runs.
#[derive(Default)]
struct RemoteState {
    requests: AtomicU64,
    generation: AtomicU64,
    session_started: AtomicBool,
    writes: Mutex<Writes>,
}

#[derive(Default)]
struct Writes {
    sequence: u64,
    /// Records written through the API: `None` once deleted; with the write sequence.
    records: HashMap<(EntityType, String), (Option<Value>, u64)>,
}

static REMOTES: LazyLock<Mutex<HashMap<Uuid, Arc<RemoteState>>>> = LazyLock::new(Default::default);

fn remote_state(connection_id: Uuid) -> Arc<RemoteState> {
    let mut remotes = REMOTES.lock().unwrap_or_else(|e| e.into_inner());
    remotes.entry(connection_id).or_default().clone()
}

/// Forgets a connection's simulated remote (after disconnect).
pub fn forget(connection_id: Uuid) {
    REMOTES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&connection_id);
}

pub struct DemoConnector {
    state: Arc<RemoteState>,
    seed: u64,
    scale: u64,
    simulate: Simulate,
}

impl DemoConnector {
    pub fn new(connection_id: Uuid, credentials: &Map<String, Value>) -> Self {
        let api_key = credentials
            .get("api_key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let simulate = match credentials.get("simulate").and_then(Value::as_str) {
            Some("auth_expired") => Simulate::AuthExpired,
            Some("offline") => Simulate::Offline,
            Some("rate_limited") => Simulate::RateLimited,
            Some("flaky") => Simulate::Flaky,
            _ => Simulate::None,
        };
        Self {
            state: remote_state(connection_id),
            seed: hash(&[api_key.as_bytes()]),
            scale: credentials
                .get("scale")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_SCALE),
            simulate,
        }
    }

    /// Marks the start of a sync: the remote has moved on since the previous one.
    fn start_session(&self) {
        if self.state.session_started.swap(true, Ordering::SeqCst) {
            self.state.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Every request passes here first, as it would pass the remote's front door.
    fn gate(&self) -> Result<(), ConnectorError> {
        let n = self.state.requests.fetch_add(1, Ordering::SeqCst);
        match self.simulate {
            Simulate::None => Ok(()),
            Simulate::AuthExpired => Err(ConnectorError::AuthRejected(
                "401 Unauthorized: the API key has expired".into(),
            )),
            Simulate::Offline => Err(ConnectorError::Unreachable("connection refused".into())),
            Simulate::RateLimited if n % 2 == 1 => Err(ConnectorError::RateLimited {
                retry_after: Duration::from_secs(1),
            }),
            Simulate::Flaky if n % 10 == 9 => Err(ConnectorError::RemoteFault(
                "503 Service Unavailable".into(),
            )),
            Simulate::RateLimited | Simulate::Flaky => Ok(()),
        }
    }

    fn dataset(&self) -> Dataset {
        Dataset {
            seed: self.seed,
            scale: self.scale,
            generation: self.state.generation.load(Ordering::SeqCst),
        }
    }
}

#[async_trait]
impl Connector for DemoConnector {
    async fn check(&self) -> Result<(), ConnectorError> {
        self.gate()
    }

    fn begin_sync(&self) {
        self.start_session();
    }

    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String> {
        unify(entity, remote)
    }

    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        self.gate()?;
        let data = self.dataset();
        let cursor = match request.cursor.as_deref() {
            Some(text) => Cursor::parse(text)?,
            None => Cursor {
                generation: data.generation,
                next: 1,
            },
        };
        let since = request
            .modified_since
            .as_deref()
            .map(Mark::parse)
            .transpose()?;
        let page_size = if request.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            request.page_size
        };
        let data = Dataset {
            generation: cursor.generation,
            ..data
        };
        let writes = self.state.writes.lock().unwrap_or_else(|e| e.into_inner());
        let mut records = Vec::with_capacity(page_size);
        let mut index = cursor.next;
        let last = data.max_index(entity);
        while index <= last && records.len() < page_size {
            if let Some(record) = data.record(entity, index, since, &writes) {
                records.push(record);
            }
            index += 1;
        }
        let done = index > last;
        if done {
            records.extend(written_since(&writes, entity, since, cursor.generation));
        }
        Ok(RemotePage {
            records,
            next_cursor: (!done).then(|| {
                Cursor {
                    generation: cursor.generation,
                    next: index,
                }
                .to_string()
            }),
            high_water_mark: done.then(|| {
                Mark {
                    generation: cursor.generation,
                    write: writes.sequence,
                }
                .to_string()
            }),
        })
    }

    async fn write_batch(
        &self,
        entity: EntityType,
        operation: WriteOperation,
        records: &[Value],
    ) -> Result<Vec<WriteOutcome>, ConnectorError> {
        self.gate()?;
        if !matches!(entity, EntityType::Asset | EntityType::WorkOrder) {
            return Err(ConnectorError::Validation(format!(
                "{entity} is read-only in the demo system"
            )));
        }
        let mut writes = self.state.writes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(records
            .iter()
            .map(|record| write_one(&mut writes, entity, operation, record))
            .collect())
    }
}

fn write_one(
    writes: &mut Writes,
    entity: EntityType,
    operation: WriteOperation,
    record: &Value,
) -> WriteOutcome {
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
    writes.sequence += 1;
    let sequence = writes.sequence;
    let key = match operation {
        WriteOperation::Create => {
            if title.is_none_or(|t| t.trim().is_empty()) {
                return Err(format!("validation failed: {title_field} is required"));
            }
            format!("{}-W{sequence:06}", prefix(entity))
        }
        WriteOperation::Update | WriteOperation::Delete => {
            match fields.get("key").and_then(Value::as_str) {
                Some(key) if !key.is_empty() && key.len() <= 64 => key.to_owned(),
                _ => return Err("validation failed: key is required".into()),
            }
        }
    };
    let stored = match operation {
        WriteOperation::Delete => None,
        _ => {
            let mut stored = fields.clone();
            stored.insert("id".into(), Value::from(key.clone()));
            stored.remove("key");
            Some(Value::Object(stored))
        }
    };
    writes
        .records
        .insert((entity, key.clone()), (stored, sequence));
    Ok(key)
}

/// Records written through the API since the mark, after the generated ones.
fn written_since(
    writes: &Writes,
    entity: EntityType,
    since: Option<Mark>,
    generation: u64,
) -> Vec<RemoteRecord> {
    let mut written: Vec<_> = writes
        .records
        .iter()
        .filter(|((e, key), (_, seq))| {
            *e == entity && key.contains("-W") && since.is_none_or(|m| *seq > m.write)
        })
        .filter_map(|((_, key), (value, _))| match (value, since) {
            (Some(value), _) => Some(remote_record(key.clone(), generation, value.clone())),
            (None, Some(_)) => Some(tombstone(key.clone(), generation)),
            (None, None) => None,
        })
        .collect();
    written.sort_by(|a, b| a.key.cmp(&b.key));
    written
}

#[derive(Clone, Copy)]
struct Cursor {
    generation: u64,
    next: u64,
}

impl Cursor {
    fn parse(text: &str) -> Result<Self, ConnectorError> {
        let invalid =
            || ConnectorError::Validation(format!("invalid continuation token `{text:.40}`"));
        let (generation, next) = text
            .strip_prefix('g')
            .and_then(|t| t.split_once(":o"))
            .ok_or_else(invalid)?;
        Ok(Self {
            generation: generation.parse().map_err(|_| invalid())?,
            next: next.parse().map_err(|_| invalid())?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}:o{}", self.generation, self.next)
    }
}

/// A modification mark: the generation and the write sequence a read has seen.
#[derive(Clone, Copy)]
struct Mark {
    generation: u64,
    write: u64,
}

impl Mark {
    fn parse(text: &str) -> Result<Self, ConnectorError> {
        let invalid =
            || ConnectorError::Validation(format!("invalid modification mark `{text:.40}`"));
        let (generation, write) = text
            .strip_prefix('g')
            .and_then(|t| t.split_once(".w"))
            .ok_or_else(invalid)?;
        Ok(Self {
            generation: generation.parse().map_err(|_| invalid())?,
            write: write.parse().map_err(|_| invalid())?,
        })
    }
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}.w{}", self.generation, self.write)
    }
}

/// The generated data of one connection at one generation.
#[derive(Clone, Copy)]
struct Dataset {
    seed: u64,
    scale: u64,
    generation: u64,
}

impl Dataset {
    /// Records added per generation: a few.
    fn additions(&self) -> u64 {
        if self.scale == 0 {
            0
        } else {
            (self.scale / 500).max(1)
        }
    }

    fn max_index(&self, _entity: EntityType) -> u64 {
        self.scale + self.generation * self.additions()
    }

    fn born(&self, index: u64) -> u64 {
        if index <= self.scale {
            0
        } else {
            (index - self.scale).div_ceil(self.additions())
        }
    }

    fn roll(&self, entity: EntityType, index: u64, generation: u64) -> u64 {
        hash(&[
            &self.seed.to_le_bytes(),
            entity.to_value().as_bytes(),
            &index.to_le_bytes(),
            &generation.to_le_bytes(),
        ])
    }

    /// (deleted at, last changed at, version) as of this generation.
    fn history(&self, entity: EntityType, index: u64) -> (Option<u64>, u64, u64) {
        let born = self.born(index);
        let (mut changed_at, mut version) = (born, 0);
        for generation in born + 1..=self.generation {
            let roll = self.roll(entity, index, generation) % 1000;
            if roll < 2 {
                return (Some(generation), changed_at, version);
            }
            if roll < 12 {
                changed_at = generation;
                version += 1;
            }
        }
        (None, changed_at, version)
    }

    /// The record at `index` as a read since `since` sees it, if it sees it at all.
    fn record(
        &self,
        entity: EntityType,
        index: u64,
        since: Option<Mark>,
        writes: &Writes,
    ) -> Option<RemoteRecord> {
        let key = format!("{}-{index:06}", prefix(entity));
        if let Some((written, seq)) = writes.records.get(&(entity, key.clone())) {
            let changed = since.is_none_or(|m| *seq > m.write);
            return match written {
                Some(value) if changed || since.is_none() => {
                    Some(remote_record(key, self.generation, value.clone()))
                }
                None if since.is_some() && changed => Some(tombstone(key, self.generation)),
                _ => None,
            };
        }
        let (deleted_at, changed_at, version) = self.history(entity, index);
        match (deleted_at, since) {
            (Some(at), Some(mark)) if at > mark.generation => return Some(tombstone(key, at)),
            (Some(_), _) => return None,
            (None, Some(mark)) if changed_at <= mark.generation => return None,
            _ => {}
        }
        let data = generate(entity, &key, index, version, self.scale.max(1));
        let created = timestamp(self.born(index), index);
        Some(RemoteRecord {
            key,
            created_at: Some(created),
            updated_at: Some(timestamp(changed_at, index)),
            data,
        })
    }
}

fn remote_record(key: String, generation: u64, data: Value) -> RemoteRecord {
    let at = timestamp(generation, 0);
    RemoteRecord {
        key,
        created_at: Some(at),
        updated_at: Some(at),
        data,
    }
}

fn tombstone(key: String, generation: u64) -> RemoteRecord {
    let at = timestamp(generation, 0);
    RemoteRecord {
        data: json!({ "id": key, "deleted": true }),
        key,
        created_at: None,
        updated_at: Some(at),
    }
}

/// Simulated remote clock: generation g is g hours after 2026-01-01.
fn timestamp(generation: u64, index: u64) -> DateTime<Utc> {
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    base + chrono::Duration::hours(generation as i64)
        + chrono::Duration::seconds((index % 3600) as i64)
}

fn prefix(entity: EntityType) -> &'static str {
    match entity {
        EntityType::Site => "SITE",
        EntityType::Location => "LOC",
        EntityType::Asset => "AST",
        EntityType::WorkOrder => "WO",
        EntityType::Part => "PRT",
        EntityType::PurchaseOrder => "PO",
        EntityType::Vendor => "VEN",
        EntityType::User => "USR",
    }
}

/// A reference to another generated record, among the first `scale` (never deleted sites).
fn reference(entity: EntityType, index: u64, modulus: u64) -> String {
    format!("{}-{:06}", prefix(entity), (index % modulus.max(1)) + 1)
}

fn generate(entity: EntityType, key: &str, i: u64, version: u64, scale: u64) -> Value {
    let sites = (scale / 50).max(1);
    let locations = (scale / 10).max(1);
    match entity {
        EntityType::Site => {
            json!({ "id": key, "name": format!("Site {i}"), "code": format!("S{i}"),
            "timezone": "Europe/Berlin", "rev": version })
        }
        EntityType::Location => json!({ "id": key, "name": format!("Location {i}"),
            "site_id": reference(EntityType::Site, i, sites), "rev": version }),
        EntityType::Asset => json!({ "id": key, "name": format!("Asset {i}"),
            "description": format!("Centrifugal pump {i}, revision {version}"),
            "serial_number": format!("SN-{:08}", i * 7919 % 100_000_000),
            "manufacturer": pick(&["Grundfos", "KSB", "Sulzer"], i % 3), "model": format!("M{}", i % 40),
            "criticality": pick(&["low", "medium", "high"], i % 3), "active": !i.is_multiple_of(17),
            "site_id": reference(EntityType::Site, i, sites), "location_id": reference(EntityType::Location, i, locations),
            "parent_id": (i.is_multiple_of(5) && i > 1).then(|| reference(EntityType::Asset, i - 1, i - 1)) }),
        EntityType::WorkOrder => json!({ "id": key, "title": format!("Inspect asset {i}"),
            "instructions": format!("Check seals and vibration (rev {version})"),
            "status": pick(&["open", "in_progress", "on_hold", "done"], (i + version) % 4),
            "priority": pick(&["low", "medium", "high", "urgent"], i % 4),
            "asset_id": reference(EntityType::Asset, i, scale), "site_id": reference(EntityType::Site, i, sites),
            "location_id": reference(EntityType::Location, i, locations),
            "due_date": timestamp(i % 48, i).to_rfc3339() }),
        EntityType::Part => {
            json!({ "id": key, "name": format!("Part {i}"), "part_number": format!("P-{i:05}"),
            "unit_cost": (i % 500) as f64 + 0.5, "quantity": (i + version) % 90 })
        }
        EntityType::PurchaseOrder => json!({ "id": key, "number": format!("PO-{i:06}"),
            "vendor_id": reference(EntityType::Vendor, i, scale), "status": pick(&["draft", "sent", "received"], (i + version) % 3),
            "total": (i % 10_000) as f64 }),
        EntityType::Vendor => {
            json!({ "id": key, "name": format!("Vendor {i}"), "email": format!("sales{i}@vendor.example"), "rev": version })
        }
        EntityType::User => {
            json!({ "id": key, "name": format!("Technician {i}"), "email": format!("tech{i}@plant.example"),
            "role": pick(&["technician", "planner", "manager"], i % 3), "rev": version })
        }
    }
}

/// The demo's fields in the unified model (names follow the Makini unified model).
fn unify(entity: EntityType, remote: &Value) -> Result<Value, String> {
    let Value::Object(r) = remote else {
        return Err("the remote record is not an object".into());
    };
    let text = |name: &str| r.get(name).and_then(Value::as_str).map(str::to_owned);
    let required =
        |name: &str| text(name).ok_or_else(|| format!("the remote record has no `{name}`"));
    Ok(match entity {
        EntityType::Site => {
            json!({ "name": required("name")?, "code": text("code"), "timezone": text("timezone") })
        }
        EntityType::Location => json!({ "name": required("name")?, "siteKey": text("site_id") }),
        EntityType::Asset => json!({
            "name": required("name")?, "description": text("description"), "serialNumber": text("serial_number"),
            "makeName": text("manufacturer"), "modelName": text("model"), "criticality": text("criticality"),
            "isActive": r.get("active").and_then(Value::as_bool), "siteKey": text("site_id"),
            "locationKey": text("location_id"), "parentKey": text("parent_id"),
        }),
        EntityType::WorkOrder => json!({
            "title": required("title")?, "instructions": text("instructions"),
            "status": known(text("status").as_deref().and_then(demo_status)),
            "remoteStatus": text("status"),
            "priority": known(text("priority").as_deref().and_then(demo_priority)),
            "remotePriority": text("priority"), "assetKey": text("asset_id"), "locationKey": text("location_id"),
            "siteKey": text("site_id"), "dueAt": text("due_date"), "scheduledAt": text("scheduled_date"),
            "completedAt": text("completed_date"),
        }),
        EntityType::Part => json!({ "name": required("name")?, "partNumber": text("part_number"),
            "unitCost": r.get("unit_cost"), "quantity": r.get("quantity") }),
        EntityType::PurchaseOrder => {
            json!({ "number": required("number")?, "vendorKey": text("vendor_id"),
            "status": text("status"), "total": r.get("total") })
        }
        EntityType::Vendor => json!({ "name": required("name")?, "email": text("email") }),
        EntityType::User => {
            json!({ "name": required("name")?, "email": text("email"), "role": text("role") })
        }
    })
}

/// The demo's work order states (lower case) in the unified model.
pub fn demo_status(remote: &str) -> Option<WorkOrderStatus> {
    Some(match remote {
        "open" => WorkOrderStatus::Open,
        "in_progress" => WorkOrderStatus::InProgress,
        "on_hold" => WorkOrderStatus::OnHold,
        "done" => WorkOrderStatus::Completed,
        "cancelled" => WorkOrderStatus::Cancelled,
        _ => return None,
    })
}

/// The demo's priorities (lower case) in the unified model.
pub fn demo_priority(remote: &str) -> Option<WorkOrderPriority> {
    Some(match remote {
        "none" => WorkOrderPriority::None,
        "low" => WorkOrderPriority::Low,
        "medium" => WorkOrderPriority::Medium,
        "high" => WorkOrderPriority::High,
        "urgent" => WorkOrderPriority::Urgent,
        _ => return None,
    })
}

fn pick(options: &[&'static str], n: u64) -> &'static str {
    options[(n % options.len() as u64) as usize]
}

fn hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(scale: u64, simulate: &str) -> DemoConnector {
        let credentials = json!({ "api_key": "k", "scale": scale, "simulate": simulate });
        DemoConnector::new(Uuid::now_v7(), credentials.as_object().unwrap())
    }

    async fn read_all(
        connector: &DemoConnector,
        since: Option<String>,
    ) -> (Vec<RemoteRecord>, String) {
        let mut request = ReadRequest {
            modified_since: since,
            page_size: 37,
            ..Default::default()
        };
        let mut all = Vec::new();
        loop {
            let page = connector
                .read_page(EntityType::Asset, &request)
                .await
                .unwrap();
            all.extend(page.records);
            match page.next_cursor {
                Some(cursor) => request.cursor = Some(cursor),
                None => return (all, page.high_water_mark.unwrap()),
            }
        }
    }

    #[tokio::test]
    async fn full_then_incremental_reads_follow_the_generations() {
        let connector = demo(1000, "none");
        connector.begin_sync();
        let (first, mark) = read_all(&connector, None).await;
        assert_eq!(first.len(), 1000);
        let (again, _) = read_all(&connector, None).await;
        assert_eq!(
            first.iter().map(|r| &r.data).collect::<Vec<_>>(),
            again.iter().map(|r| &r.data).collect::<Vec<_>>()
        );

        connector.begin_sync();
        let (changes, _) = read_all(&connector, Some(mark)).await;
        let deleted = changes.iter().filter(|r| r.data["deleted"] == true).count();
        assert!(
            (5..=40).contains(&changes.len()),
            "about 1 % changed: {}",
            changes.len()
        );
        assert!(
            changes
                .iter()
                .any(|r| r.key == "AST-001001" || r.key == "AST-001002"),
            "additions"
        );
        let (full, _) = read_all(&connector, None).await;
        assert_eq!(full.len(), 1000 + 2 - deleted);
    }

    #[test]
    fn malformed_records_are_refused_by_the_mapping() {
        assert!(
            unify(EntityType::Asset, &json!({ "id": "AST-1" }))
                .unwrap_err()
                .contains("name")
        );
        assert!(unify(EntityType::WorkOrder, &json!("text")).is_err());
        let asset = unify(
            EntityType::Asset,
            &json!({ "name": "Pump", "site_id": "SITE-000001" }),
        )
        .unwrap();
        assert_eq!(asset["siteKey"], "SITE-000001");
    }

    #[tokio::test]
    async fn simulated_faults() {
        assert!(matches!(
            demo(1, "auth_expired").check().await,
            Err(ConnectorError::AuthRejected(_))
        ));
        assert!(matches!(
            demo(1, "offline").check().await,
            Err(ConnectorError::Unreachable(_))
        ));
        let limited = demo(1, "rate_limited");
        assert!(limited.check().await.is_ok());
        assert!(matches!(
            limited.check().await,
            Err(ConnectorError::RateLimited { .. })
        ));
        let flaky = demo(1, "flaky");
        let failures = futures_util::future::join_all((0..20).map(|_| flaky.check())).await;
        assert_eq!(failures.iter().filter(|r| r.is_err()).count(), 2);
    }

    #[tokio::test]
    async fn writes_report_per_record_and_show_up_in_reads() {
        let connector = demo(10, "none");
        let outcomes = connector
            .write_batch(
                EntityType::Asset,
                WriteOperation::Create,
                &[
                    json!({"name": "New pump"}),
                    json!({"name": "reject"}),
                    json!(5),
                ],
            )
            .await
            .unwrap();
        assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_err());
        let (all, _) = read_all(&connector, None).await;
        assert_eq!(all.len(), 11);
        assert!(
            connector
                .write_batch(EntityType::Site, WriteOperation::Create, &[json!({})])
                .await
                .is_err()
        );
    }
}
