//! The demo system: a deterministic simulated CMMS inside the server, so that everything can
//! be tried without an external system.
//!
//! Its data is a pure function of the API key, `scale` and a generation number. Each sync
//! session (`Connector::begin_sync`) after the first moves to the next generation:
//! about 1 % of the records change, a few are added and a few deleted (reported as
//! tombstones to incremental reads). Records written to it (`write`) are shown
//! instead of the generated ones, and created ones after them. `simulate` makes the remote
//! answer 401, be unreachable, rate limit every other request, or fail one request in ten.
//!
//! What the remote remembers of a connection (its sessions, the requests it counted, what it
//! was written) is kept in the database ([`remote`]), so it survives restarts and every
//! process sees the same remote. A pass reads it once, at its first page; after that a
//! connection never written costs no query, and one that was costs one a page (two on the
//! page where the generated records end), never one a record.

mod remote;
mod writes;

use sea_orm::ActiveEnum as _;
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Connector, ConnectorError, ReadRequest, RemotePage, RemoteRecord, WriteOperation, WriteReply,
    WriteRequest,
};
use crate::{
    catalog::EntityType,
    db::Db,
    records::unified::{WorkOrderPriority, WorkOrderStatus, known},
};
use remote::{Remote, Written};
pub use remote::{forget, forget_statements};
use writes::Change;

const DEFAULT_SCALE: u64 = 100;
const DEFAULT_PAGE_SIZE: usize = 100;
/// Written generated records fetched per page, as a multiple of the page size: a page whose
/// range holds more ends early (at the last one fetched), so one query always covers it.
const OVERLAYS_PER_PAGE_RECORD: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Simulate {
    None,
    AuthExpired,
    Offline,
    RateLimited,
    Flaky,
}

pub struct DemoConnector {
    remote: Remote,
    /// Requests counted here while the connection has no state of its own: the probe of a
    /// connect runs before the connection exists, and leaves nothing behind.
    unsaved_requests: AtomicU64,
    seed: u64,
    scale: u64,
    simulate: Simulate,
}

impl DemoConnector {
    /// The demo remote of `connection_id`, whose state lives in `db`.
    pub fn new(db: &Db, connection_id: Uuid, credentials: &Map<String, Value>) -> Self {
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
            remote: Remote::new(db, connection_id),
            unsaved_requests: AtomicU64::new(0),
            seed: hash(&[api_key.as_bytes()]),
            scale: credentials
                .get("scale")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_SCALE),
            simulate,
        }
    }

    /// Every request passes here first, as it would pass the remote's front door.
    async fn gate(&self) -> Result<(), ConnectorError> {
        match self.simulate {
            Simulate::None => Ok(()),
            Simulate::AuthExpired => Err(ConnectorError::AuthRejected(
                "401 Unauthorized: the API key has expired".into(),
            )),
            Simulate::Offline => Err(ConnectorError::Unreachable("connection refused".into())),
            Simulate::RateLimited => match self.count_request().await? % 2 {
                1 => Err(ConnectorError::RateLimited {
                    retry_after: Duration::from_secs(1),
                }),
                _ => Ok(()),
            },
            Simulate::Flaky => match self.count_request().await? % 10 {
                9 => Err(ConnectorError::RemoteFault(
                    "503 Service Unavailable".into(),
                )),
                _ => Ok(()),
            },
        }
    }

    /// How many requests the remote answered before this one (for every process alike).
    async fn count_request(&self) -> Result<u64, ConnectorError> {
        match self.remote.count_request().await.map_err(unavailable)? {
            Some(before) => Ok(before),
            None => Ok(self.unsaved_requests.fetch_add(1, Ordering::SeqCst)),
        }
    }

    /// The generated records of one page from `next` on, with the written ones in their
    /// place: the records, and where the next page starts (`None`: no generated ones left).
    async fn read_generated(
        &self,
        data: &Dataset,
        entity: EntityType,
        cursor: &Cursor,
        next: u64,
        since: Option<Mark>,
        page_size: usize,
    ) -> Result<(Vec<RemoteRecord>, Option<u64>), ConnectorError> {
        let last = data.max_index(entity);
        let (overlays, scan_end) = if cursor.writes == 0 {
            (Vec::new(), last)
        } else {
            let limit = page_size * OVERLAYS_PER_PAGE_RECORD;
            let overlays = self
                .remote
                .overlays(entity, next, last, limit as u64)
                .await
                .map_err(unavailable)?;
            // A full fetch covers the range up to its last position only.
            let scan_end = match overlays.last() {
                Some(written) if overlays.len() == limit => written.position,
                _ => last,
            };
            (overlays, scan_end)
        };
        let mut overlays = overlays.iter().peekable();
        let mut records = Vec::with_capacity(page_size);
        let mut index = next;
        while index <= scan_end && records.len() < page_size {
            let written = overlays.next_if(|w| w.position == index);
            if let Some(record) = data.record(entity, index, since, written) {
                records.push(record);
            }
            index += 1;
        }
        Ok((records, (index <= last).then_some(index)))
    }

    /// Records created through writes from position `from` on, at most `room` of them, and
    /// where the next page goes on (`None`: none left).
    async fn read_created(
        &self,
        entity: EntityType,
        cursor: &Cursor,
        from: u64,
        since: Option<Mark>,
        room: usize,
    ) -> Result<(Vec<RemoteRecord>, Option<u64>), ConnectorError> {
        if cursor.writes == 0 {
            return Ok((Vec::new(), None));
        }
        let mut created = self
            .remote
            .created(entity, from, since.map(|m| m.write), room as u64 + 1)
            .await
            .map_err(unavailable)?;
        let more = created.len() > room;
        created.truncate(room);
        let next = more.then(|| created.last().map_or(from, |w| w.position + 1));
        let records = created
            .into_iter()
            .map(|written| match written.data {
                Some(value) => remote_record(written.key, cursor.generation, value),
                None => tombstone(written.key, cursor.generation),
            })
            .collect();
        Ok((records, next))
    }
}

/// The simulated remote's own storage failed: to the caller, the remote did.
fn unavailable(err: sea_orm::DbErr) -> ConnectorError {
    ConnectorError::RemoteFault(format!("the demo remote's state is unavailable: {err}"))
}

/// What a remote answers for a connection it no longer serves.
fn unknown_connection() -> ConnectorError {
    ConnectorError::AuthRejected(
        "401 Unauthorized: the demo remote serves no such connection (disconnected?)".into(),
    )
}

#[async_trait]
impl Connector for DemoConnector {
    async fn check(&self) -> Result<(), ConnectorError> {
        self.gate().await
    }

    /// The remote has moved on since the previous session: the second and every later
    /// session sees the next generation.
    async fn begin_sync(&self) -> Result<(), ConnectorError> {
        match self.remote.begin_session().await.map_err(unavailable)? {
            Some(_) => Ok(()),
            None => Err(unknown_connection()),
        }
    }

    fn unify(&self, entity: EntityType, remote: &Value) -> Result<Value, String> {
        unify(entity, remote)
    }

    async fn read_page(
        &self,
        entity: EntityType,
        request: &ReadRequest,
    ) -> Result<RemotePage, ConnectorError> {
        self.gate().await?;
        let cursor = match request.cursor.as_deref() {
            Some(text) => Cursor::parse(text)?,
            // A pass starts from the remote as it is now; its pages keep to that generation.
            None => {
                let now = self.remote.snapshot().await.map_err(unavailable)?;
                Cursor {
                    generation: now.generation,
                    writes: now.writes,
                    at: Position::Generated(1),
                }
            }
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
            seed: self.seed,
            scale: self.scale,
            generation: cursor.generation,
        };
        let (mut records, mut at) = (Vec::new(), Some(cursor.at));
        if let Some(Position::Generated(next)) = at {
            let (read, next) = self
                .read_generated(&data, entity, &cursor, next, since, page_size)
                .await?;
            records = read;
            at = match next {
                Some(next) => Some(Position::Generated(next)),
                None if cursor.writes == 0 => None,
                None => Some(Position::Created(1)),
            };
        }
        if let Some(Position::Created(from)) = at
            && records.len() < page_size
        {
            let room = page_size - records.len();
            let (read, next) = self
                .read_created(entity, &cursor, from, since, room)
                .await?;
            records.extend(read);
            at = next.map(Position::Created);
        }
        Ok(RemotePage {
            records,
            next_cursor: at.map(|at| Cursor { at, ..cursor }.to_string()),
            // Writes after the pass began may have been read already; a later read sees
            // them again rather than missing one.
            high_water_mark: at.is_none().then(|| {
                Mark {
                    generation: cursor.generation,
                    write: cursor.writes,
                }
                .to_string()
            }),
        })
    }

    /// One request for the whole batch. The remote keeps each write's idempotency key, so a
    /// batch sent again (after a crash) writes nothing twice and answers as it did.
    async fn write(&self, request: &WriteRequest<'_>) -> WriteReply {
        request.pace.ready().await;
        if let Err(err) = self.gate().await {
            return WriteReply::stopped(err);
        }
        let entity = request.entity;
        if !matches!(entity, EntityType::Asset | EntityType::WorkOrder) {
            return super::not_writable("the demo system", entity);
        }
        let mut checked: Vec<Result<Change, String>> = request
            .records
            .iter()
            .map(|record| Change::check(entity, request.operation, &record.fields))
            .collect();
        if request.operation == WriteOperation::Update
            && let Err(err) = self.merge_updates(entity, &mut checked).await
        {
            return WriteReply::stopped(err);
        }
        let valid: Vec<(&str, &Change)> = request
            .records
            .iter()
            .zip(&checked)
            .filter_map(|(record, change)| {
                Some((record.idempotency_key.as_str(), change.as_ref().ok()?))
            })
            .collect();
        // A batch the remote refuses in full never reaches its storage.
        let keys = if valid.is_empty() {
            Vec::new()
        } else {
            match self.remote.write(entity, &valid).await {
                Ok(Some(keys)) => keys,
                Ok(None) => return WriteReply::stopped(unknown_connection()),
                Err(err) => return WriteReply::stopped(unavailable(err)),
            }
        };
        // One key per valid record, in order.
        let mut keys = keys.into_iter();
        WriteReply {
            outcomes: checked
                .into_iter()
                .map(|outcome| outcome.map(|_| keys.next().unwrap_or_default()))
                .collect(),
            stopped: None,
        }
    }
}

impl DemoConnector {
    /// Lays each update's fields over the record as the remote holds it (a generated one,
    /// or one written before): the remote changes only the fields given. An update of a
    /// record the remote does not have fails as its API would, with a 404.
    async fn merge_updates(
        &self,
        entity: EntityType,
        checked: &mut [Result<Change, String>],
    ) -> Result<(), ConnectorError> {
        let keys: Vec<String> = checked
            .iter()
            .filter_map(|c| match c {
                Ok(Change::Update(key, _)) => Some(key.clone()),
                _ => None,
            })
            .collect();
        let written = self
            .remote
            .written(entity, keys)
            .await
            .map_err(unavailable)?;
        let snapshot = self.remote.snapshot().await.map_err(unavailable)?;
        let data = Dataset {
            seed: self.seed,
            scale: self.scale,
            generation: snapshot.generation,
        };
        for change in checked.iter_mut() {
            let Ok(Change::Update(key, fields)) = change else {
                continue;
            };
            let current = match written.get(key.as_str()) {
                Some(written) => written.data.clone(),
                None => match writes::parse_key(entity, key) {
                    Some(writes::KeyKind::Generated(n)) if n <= data.max_index(entity) => {
                        data.record(entity, n, None, None).map(|r| r.data)
                    }
                    _ => None,
                },
            };
            *change = match current {
                Some(Value::Object(mut base)) => {
                    base.extend(std::mem::take(fields));
                    Ok(Change::Update(std::mem::take(key), base))
                }
                _ => Err(format!("404 Not Found: no {entity} with key {key}")),
            };
        }
        Ok(())
    }
}

/// Where a pass stands: the generation it reads, the last write number when it began, and
/// its position, `g4.w7:o301` (generated records from index 301 on) or `g4.w7:c12` (records
/// created through writes, from number 12 on). Earlier releases wrote `g4:o301`.
#[derive(Clone, Copy)]
struct Cursor {
    generation: u64,
    writes: u64,
    at: Position,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    Generated(u64),
    Created(u64),
}

impl Cursor {
    fn parse(text: &str) -> Result<Self, ConnectorError> {
        let invalid =
            || ConnectorError::Validation(format!("invalid continuation token `{text:.40}`"));
        let number = |digits: &str| digits.parse::<u64>().map_err(|_| invalid());
        let (pass, at) = text
            .strip_prefix('g')
            .and_then(|t| t.split_once(':'))
            .ok_or_else(invalid)?;
        let (generation, writes) = match pass.split_once(".w") {
            Some((generation, writes)) => (number(generation)?, number(writes)?),
            None => (number(pass)?, 0),
        };
        let at = match (at.strip_prefix('o'), at.strip_prefix('c')) {
            (Some(next), _) => Position::Generated(number(next)?),
            (_, Some(next)) => Position::Created(number(next)?),
            _ => return Err(invalid()),
        };
        Ok(Self {
            generation,
            writes,
            at,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (phase, next) = match self.at {
            Position::Generated(next) => ('o', next),
            Position::Created(next) => ('c', next),
        };
        write!(f, "g{}.w{}:{phase}{next}", self.generation, self.writes)
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

    /// The record at `index` as a read since `since` sees it, if it sees it at all; a record
    /// written through the API is seen as written.
    fn record(
        &self,
        entity: EntityType,
        index: u64,
        since: Option<Mark>,
        written: Option<&Written>,
    ) -> Option<RemoteRecord> {
        let key = format!("{}-{index:06}", prefix(entity));
        if let Some(written) = written {
            let changed = since.is_none_or(|m| written.sequence > m.write);
            return match &written.data {
                Some(value) if changed => Some(remote_record(key, self.generation, value.clone())),
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
mod tests;
