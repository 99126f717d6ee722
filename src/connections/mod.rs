//! Connections: one remote system of one customer, with its own token, its encrypted
//! credentials and the credits it holds. Every status change goes through [`set_status`].
//! What a disconnected connection stored is deleted by [`cleanup`].

pub mod cleanup;

use chrono::Utc;
use rand::Rng;
use sea_orm::ActiveEnum as _;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    auth::{self, TokenKind},
    catalog::{self, Deployment, System},
    connectors::{self, ConnectorError, http::Outbound},
    credits,
    crypto::Cipher,
    customers,
    db::Db,
    error::{AppError, AppResult},
    events::{self, EventType, NewEvent},
    ids::new_id,
    notify::Notice,
    pagination::{Page, PageRequest, fetch_page},
};
use entity::connection;
pub use entity::enums::ConnectionStatus;

const MAX_LABEL_LEN: usize = 200;
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest sync interval: 30 days.
const MAX_SYNC_INTERVAL_MINUTES: i32 = 43_200;

/// Whose connections a caller may see: an account's, with a connection token one, with a
/// portal session one customer's.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    pub account_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
}

impl Scope {
    /// All of an account's connections.
    pub fn account(account_id: Uuid) -> Self {
        Scope {
            account_id,
            connection_id: None,
            customer_id: None,
        }
    }
}

pub struct ConnectRequest {
    pub customer_id: Uuid,
    /// The most connections (not disconnected) the customer may have with this one (a
    /// portal session's `maxConnections`); `None`: no such limit.
    pub max_live: Option<u32>,
    pub system_key: String,
    pub deployment: Deployment,
    pub label: Option<String>,
    pub credentials: Value,
    pub sync_interval_minutes: Option<i32>,
    pub webhook_event_types: Option<Vec<EventType>>,
    pub metadata: Option<Value>,
    pub validate: bool,
}

#[derive(Default)]
pub struct ConnectionChanges {
    pub label: Option<Option<String>>,
    pub sync_interval_minutes: Option<Option<i32>>,
    pub webhook_event_types: Option<Vec<EventType>>,
    pub metadata: Option<Option<Value>>,
}

/// The catalog system a connection is to; a key this release does not know is an error.
pub fn system(model: &connection::Model) -> AppResult<&'static System> {
    catalog::find(&model.system_key).ok_or_else(|| {
        AppError::internal(anyhow::anyhow!(
            "connections.system_key of {} holds a system this release does not know: {:?}",
            model.id,
            model.system_key
        ))
    })
}

/// The event types a connection sends to webhooks.
pub fn webhook_event_types(model: &connection::Model) -> AppResult<Vec<EventType>> {
    events::types_from_json(
        &model.webhook_event_types,
        "connections.webhook_event_types",
    )
}

fn validate_label(label: Option<String>) -> AppResult<Option<String>> {
    let label = label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
    if label
        .as_ref()
        .is_some_and(|l| l.chars().count() > MAX_LABEL_LEN || l.chars().any(char::is_control))
    {
        return Err(AppError::bad_input(format!(
            "`label` must be at most {MAX_LABEL_LEN} printable characters"
        )));
    }
    Ok(label)
}

fn validate_interval(minutes: Option<i32>) -> AppResult<Option<i32>> {
    if minutes.is_some_and(|m| !(1..=MAX_SYNC_INTERVAL_MINUTES).contains(&m)) {
        return Err(AppError::bad_input(format!(
            "`syncIntervalMinutes` must be from 1 to {MAX_SYNC_INTERVAL_MINUTES}, or null for manual syncs"
        )));
    }
    Ok(minutes)
}

fn validate_metadata(metadata: Option<Value>) -> AppResult<Option<Value>> {
    if metadata
        .as_ref()
        .is_some_and(|m| m.to_string().len() > MAX_METADATA_BYTES)
    {
        return Err(AppError::bad_input(format!(
            "`metadata` must be at most {MAX_METADATA_BYTES} bytes of JSON"
        )));
    }
    Ok(metadata.filter(|m| !m.is_null()))
}

fn event_types_json(types: Option<Vec<EventType>>) -> Value {
    let types = types.unwrap_or_else(|| <EventType as sea_orm::Iterable>::iter().collect());
    events::types_to_json(&types)
}

/// Maps a probe failure to the connection status it means and a reason to show.
pub fn status_for(error: &ConnectorError) -> ConnectionStatus {
    match error {
        ConnectorError::AuthRejected(_) => ConnectionStatus::AuthRequired,
        _ => ConnectionStatus::Offline,
    }
}

fn seal(cipher: &Cipher, id: Uuid, credentials: &Map<String, Value>) -> Vec<u8> {
    let plaintext = serde_json::to_vec(credentials).expect("a JSON map serializes");
    cipher.encrypt(&plaintext, id.as_bytes())
}

/// Why a connection's stored credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the connection is disconnected")]
    Disconnected,
    /// They do not decrypt with the configured key, or what decrypts is not a JSON object:
    /// nothing a retry mends, only new credentials.
    #[error("the stored credentials cannot be read: {0}")]
    Unreadable(String),
}

impl From<CredentialsError> for AppError {
    fn from(err: CredentialsError) -> Self {
        match err {
            CredentialsError::Disconnected => AppError::Conflict(err.to_string()),
            CredentialsError::Unreadable(_) => AppError::internal(err),
        }
    }
}

/// What a connection whose credentials cannot be read says (its status reason and its
/// runs' error message).
pub const UNREADABLE_CREDENTIALS_REASON: &str = "the stored credentials cannot be decrypted \
    (was MILLWRIGHT_ENCRYPTION_KEY changed?); set them again with updateConnectionCredentials";

/// The stored credentials of a live connection.
pub fn credentials(cipher: &Cipher, model: &connection::Model) -> AppResult<Map<String, Value>> {
    Ok(open_credentials(cipher, model)?)
}

/// [`credentials`], telling unreadable credentials apart from other failures.
pub fn open_credentials(
    cipher: &Cipher,
    model: &connection::Model,
) -> Result<Map<String, Value>, CredentialsError> {
    let sealed = model
        .credentials
        .as_deref()
        .ok_or(CredentialsError::Disconnected)?;
    let plaintext = cipher.decrypt(sealed, model.id.as_bytes()).ok_or_else(|| {
        CredentialsError::Unreadable(format!("those of connection {} do not decrypt", model.id))
    })?;
    serde_json::from_slice(&plaintext).map_err(|err| {
        CredentialsError::Unreadable(format!(
            "those of connection {} are not a JSON object: {err}",
            model.id
        ))
    })
}

/// Moves a connection whose stored credentials cannot be read to `AUTH_REQUIRED`, in `txn`
/// (which has locked it): only new credentials mend it.
pub async fn credentials_unreadable(
    txn: &impl ConnectionTrait,
    model: connection::Model,
) -> AppResult<connection::Model> {
    let reason = Some(UNREADABLE_CREDENTIALS_REASON.to_owned());
    set_status(txn, model, ConnectionStatus::AuthRequired, reason).await
}

/// A first health check somewhere in the coming interval, so that many connections spread out.
fn first_check_at(interval: std::time::Duration) -> chrono::DateTime<Utc> {
    let spread = rand::rng().random_range(0..interval.as_millis().max(1) as i64);
    Utc::now() + chrono::Duration::milliseconds(spread)
}

#[tracing::instrument(skip_all, fields(account.id = %account_id, system = %request.system_key), err(level = "debug"))]
pub async fn connect(
    db: &Db,
    cipher: &Cipher,
    outbound: &Outbound,
    account_id: Uuid,
    check_interval: std::time::Duration,
    request: ConnectRequest,
) -> AppResult<(connection::Model, String)> {
    let system = catalog::find(&request.system_key).ok_or_else(|| {
        AppError::bad_input(format!(
            "`systemKey` {:.64} is not in the catalog",
            request.system_key
        ))
    })?;
    if !system.offers(request.deployment) {
        return Err(AppError::bad_input(format!(
            "{} is not offered as {}",
            system.key, request.deployment
        )));
    }
    let credentials = system.validate_credentials(&request.credentials)?;
    connectors::validate(system, &credentials, outbound).await?;
    let label = validate_label(request.label)?;
    let sync_interval = validate_interval(request.sync_interval_minutes)?;
    let metadata = validate_metadata(request.metadata)?;
    if request.validate {
        // Before the remote is probed; the transaction below reads the customer again (and,
        // without a probe, is the only read).
        customers::find(db.conn(), account_id, request.customer_id).await?;
    }

    let id = new_id();
    let status = if request.validate {
        connectors::probe(connectors::connect(system, id, &credentials, outbound, db).as_ref())
            .await
            .map_err(|err| AppError::ConnectionFailed(err.to_string()))?;
        ConnectionStatus::Online
    } else {
        ConnectionStatus::Pending
    };
    let token = auth::generate(TokenKind::Connection);
    let cost = system.credit_cost(request.deployment);
    let now = Utc::now();
    let txn = db.begin_write().await?;
    // The customer may have been deleted while the probe ran. Under a limit of connections,
    // connects of the customer take its row in turn, so that each counts the others'.
    let lock = match request.max_live {
        Some(_) => sea_orm::sea_query::LockType::Update,
        None => sea_orm::sea_query::LockType::Share,
    };
    customers::find_locked(&*txn, account_id, request.customer_id, Some(lock)).await?;
    if let Some(max) = request.max_live {
        let live = connection::Entity::find()
            .filter(connection::Column::CustomerId.eq(request.customer_id))
            .filter(connection::Column::Status.ne(ConnectionStatus::Disconnected))
            .count(&*txn)
            .await?;
        if live >= u64::from(max) {
            return Err(AppError::Conflict(format!(
                "the customer has {live} connections, as many as this portal session allows; \
                 disconnect one first"
            )));
        }
    }
    let model = connection::ActiveModel {
        id: Set(id),
        account_id: Set(account_id),
        customer_id: Set(request.customer_id),
        system_key: Set(system.key.to_owned()),
        deployment: Set(request.deployment),
        label: Set(label),
        status: Set(status),
        status_reason: Set(None),
        credit_cost: Set(cost),
        created_at: Set(now),
        updated_at: Set(now),
        disconnected_at: Set(None),
        last_checked_at: Set(request.validate.then_some(now)),
        next_check_at: Set(Some(first_check_at(check_interval))),
        token_hash: Set(Some(token.hash)),
        token_prefix: Set(token.display_prefix),
        sync_interval_minutes: Set(sync_interval),
        webhook_event_types: Set(event_types_json(request.webhook_event_types)),
        metadata: Set(metadata),
        credentials: Set(Some(seal(cipher, id, &credentials))),
        purged_at: Set(None),
    };
    let insert = sea_orm::QueryTrait::build(
        &connection::Entity::insert(model.clone()),
        txn.get_database_backend(),
    );
    let model = sea_orm::TryIntoModel::try_into_model(model)?;
    let created = NewEvent {
        account_id,
        customer_id: Some(model.customer_id),
        connection_id: Some(id),
        event_type: EventType::ConnectionCreated,
        data: json!({ "system": system.key, "deployment": request.deployment.to_value(),
                      "credit_cost": cost, "status": status.to_value() }),
    };
    // The row, its first run (FULL) and its event in one round trip on either backend.
    let first_run = crate::sync::first_run(&model, txn.get_database_backend());
    events::record_after(&*txn, vec![insert, first_run], vec![created]).await?;
    txn.after_commit(Notice::SyncQueued);
    // Last: the account's row, which every credit movement of the account waits for, is
    // locked from here to the commit only (on PostgreSQL the two go in one round trip).
    credits::consume_and_commit(db, txn, account_id, cost, id, request.customer_id).await?;
    tracing::info!(connection.id = %id, credits = cost, "connection created");
    Ok((model, token.token))
}

pub async fn find(
    db: &impl ConnectionTrait,
    scope: Scope,
    id: Uuid,
) -> AppResult<connection::Model> {
    scoped(scope, id)?
        .one(db)
        .await?
        .ok_or(AppError::NotFound("connection"))
}

/// `find` in a write transaction that will change the connection: on PostgreSQL the row
/// stays locked until the transaction ends, and a disconnect committed meanwhile is seen
/// (not overwritten: a connection never comes back from DISCONNECTED). SQLite's write lock
/// already serializes writers.
pub async fn find_for_update(
    txn: &impl ConnectionTrait,
    scope: Scope,
    id: Uuid,
) -> AppResult<connection::Model> {
    scoped(scope, id)?
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("connection"))
}

/// Locks the connection's row for the rest of `txn` on PostgreSQL (SQLite's write lock
/// already serializes writers): the first lock of every transaction that writes a
/// connection's sync runs, records or events, so that all of them take their locks in one
/// order (docs/architecture.md, "Locks").
pub async fn lock(txn: &impl ConnectionTrait, id: Uuid) -> AppResult<()> {
    if txn.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    connection::Entity::find_by_id(id)
        .select_only()
        .column(connection::Column::Id)
        .lock_exclusive()
        .into_tuple::<Uuid>()
        .one(txn)
        .await?;
    Ok(())
}

fn scoped(scope: Scope, id: Uuid) -> AppResult<sea_orm::Select<connection::Entity>> {
    if scope.connection_id.is_some_and(|own| own != id) {
        return Err(AppError::NotFound("connection"));
    }
    let mut select = connection::Entity::find_by_id(id)
        .filter(connection::Column::AccountId.eq(scope.account_id));
    if let Some(customer_id) = scope.customer_id {
        select = select.filter(connection::Column::CustomerId.eq(customer_id));
    }
    Ok(select)
}

#[derive(Default)]
pub struct ListFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<ConnectionStatus>,
    pub system_key: Option<String>,
}

pub async fn list(
    db: &impl ConnectionTrait,
    scope: Scope,
    filter: ListFilter,
    page: PageRequest,
) -> AppResult<Page<connection::Model>> {
    let mut select =
        connection::Entity::find().filter(connection::Column::AccountId.eq(scope.account_id));
    if let Some(own) = scope.connection_id {
        select = select.filter(connection::Column::Id.eq(own));
    }
    if let Some(customer_id) = scope.customer_id {
        select = select.filter(connection::Column::CustomerId.eq(customer_id));
    }
    if let Some(customer_id) = filter.customer_id {
        select = select.filter(connection::Column::CustomerId.eq(customer_id));
    }
    if let Some(status) = filter.status {
        select = select.filter(connection::Column::Status.eq(status));
    }
    if let Some(key) = filter.system_key {
        select = select.filter(connection::Column::SystemKey.eq(key));
    }
    Ok(fetch_page(db, select, connection::Column::Id, page).await?)
}

/// Moves a connection to `to`, storing `connection.status_changed` (and
/// `connection.auth_required` when the remote rejected the credentials). No change, no event.
pub async fn set_status(
    txn: &impl ConnectionTrait,
    model: connection::Model,
    to: ConnectionStatus,
    reason: Option<String>,
) -> AppResult<connection::Model> {
    let from = model.status;
    // DISCONNECTED is final: only `disconnect` sets it, nothing moves a connection out of it.
    if from == ConnectionStatus::Disconnected || (from == to && model.status_reason == reason) {
        return Ok(model);
    }
    let (account_id, customer_id, id) = (model.account_id, model.customer_id, model.id);
    let mut active: connection::ActiveModel = model.into();
    active.status = Set(to);
    active.status_reason = Set(reason.clone());
    active.updated_at = Set(Utc::now());
    let model = active.update(txn).await?;
    if from == to {
        return Ok(model);
    }
    let event = |event_type, data| NewEvent {
        account_id,
        customer_id: Some(customer_id),
        connection_id: Some(id),
        event_type,
        data,
    };
    let mut stored = vec![event(
        EventType::ConnectionStatusChanged,
        json!({ "from": from.to_value(), "to": to.to_value(), "reason": reason }),
    )];
    if to == ConnectionStatus::AuthRequired {
        stored.push(event(
            EventType::ConnectionAuthRequired,
            json!({ "reason": reason }),
        ));
    }
    events::record(txn, stored).await?;
    Ok(model)
}

/// Disconnects: credits back (once), token revoked, credentials erased. A second call
/// returns the connection unchanged.
#[tracing::instrument(skip_all, fields(connection.id = %id), err(level = "debug"))]
pub async fn disconnect(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<connection::Model> {
    let txn = db.begin_write().await?;
    let now = Utc::now();
    // The status condition makes concurrent disconnects refund exactly once.
    let updated = connection::Entity::update_many()
        .col_expr(
            connection::Column::Status,
            ConnectionStatus::Disconnected.to_value().into(),
        )
        .col_expr(connection::Column::DisconnectedAt, now.into())
        .col_expr(connection::Column::UpdatedAt, now.into())
        .col_expr(connection::Column::TokenHash, Option::<String>::None.into())
        .col_expr(
            connection::Column::Credentials,
            Option::<Vec<u8>>::None.into(),
        )
        .col_expr(
            connection::Column::NextCheckAt,
            Option::<chrono::DateTime<Utc>>::None.into(),
        )
        .filter(connection::Column::Id.eq(id))
        .filter(connection::Column::AccountId.eq(account_id))
        .filter(connection::Column::Status.ne(ConnectionStatus::Disconnected))
        .exec_with_returning(&*txn)
        .await?;
    let Some(model) = updated.into_iter().next() else {
        // Already disconnected (or not the caller's): read inside the transaction, so a
        // burst of disconnects never waits for a second pooled connection.
        return find(&*txn, Scope::account(account_id), id).await;
    };
    // The connection's queued sync ends now, CANCELLED with code DISCONNECTED; a running one
    // stops reading the customer's system at its next page boundary.
    let mut stored = crate::sync::stop_for_disconnect(&*txn, &model).await?;
    // A demo connection's simulated remote goes with it (other systems keep nothing here),
    // in the events' round trip.
    let forget = if model.system_key == catalog::DEMO.key {
        connectors::demo::forget_statements(txn.get_database_backend(), id)
    } else {
        Vec::new()
    };
    stored.push(NewEvent {
        account_id,
        customer_id: Some(model.customer_id),
        connection_id: Some(id),
        event_type: EventType::ConnectionDisconnected,
        data: json!({ "credits_returned": model.credit_cost }),
    });
    // The stopped run's `sync.failed` first, then `connection.disconnected`: one round trip.
    events::record_after(&*txn, forget, stored).await?;
    auth::sockets::announce(&txn, Notice::ConnectionTokenRevoked(id));
    // Last: the account's row is held from here to the commit only.
    credits::refund_and_commit(txn, account_id, model.credit_cost, id, model.customer_id).await?;
    tracing::info!(credits = model.credit_cost, "connection disconnected");
    Ok(model)
}

fn ensure_live(model: &connection::Model) -> AppResult<()> {
    if model.status == ConnectionStatus::Disconnected {
        return Err(AppError::Conflict("the connection is disconnected".into()));
    }
    Ok(())
}

pub async fn update(
    db: &Db,
    account_id: Uuid,
    id: Uuid,
    changes: ConnectionChanges,
) -> AppResult<connection::Model> {
    let label = changes.label.map(validate_label).transpose()?;
    let interval = changes
        .sync_interval_minutes
        .map(validate_interval)
        .transpose()?;
    let metadata = changes.metadata.map(validate_metadata).transpose()?;
    let txn = db.begin_write().await?;
    let model = find_for_update(&*txn, Scope::account(account_id), id).await?;
    ensure_live(&model)?;
    let mut active: connection::ActiveModel = model.into();
    if let Some(label) = label {
        active.label = Set(label);
    }
    if let Some(interval) = interval {
        active.sync_interval_minutes = Set(interval);
    }
    if let Some(types) = changes.webhook_event_types {
        active.webhook_event_types = Set(event_types_json(Some(types)));
    }
    if let Some(metadata) = metadata {
        active.metadata = Set(metadata);
    }
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await?;
    txn.commit().await?;
    Ok(model)
}

/// Replaces the credentials after probing the remote with them; a connection waiting for
/// new credentials comes back `ONLINE`.
pub async fn update_credentials(
    db: &Db,
    cipher: &Cipher,
    outbound: &Outbound,
    account_id: Uuid,
    id: Uuid,
    credentials: &Value,
) -> AppResult<connection::Model> {
    let scope = Scope::account(account_id);
    let model = find(db.conn(), scope, id).await?;
    ensure_live(&model)?;
    let system = system(&model)?;
    let credentials = system.validate_credentials(credentials)?;
    connectors::validate(system, &credentials, outbound).await?;
    outbound.forget_token(id);
    connectors::probe(connectors::connect(system, id, &credentials, outbound, db).as_ref())
        .await
        .map_err(|err| AppError::ConnectionFailed(err.to_string()))?;
    let txn = db.begin_write().await?;
    let model = find_for_update(&*txn, scope, id).await?;
    ensure_live(&model)?;
    let mut active: connection::ActiveModel = model.into();
    active.credentials = Set(Some(seal(cipher, id, &credentials)));
    active.last_checked_at = Set(Some(Utc::now()));
    let model = active.update(&*txn).await?;
    let model = set_status(&*txn, model, ConnectionStatus::Online, None).await?;
    txn.commit().await?;
    Ok(model)
}

/// Issues a new token; the old one stops working at once.
pub async fn rotate_token(
    db: &Db,
    account_id: Uuid,
    id: Uuid,
) -> AppResult<(connection::Model, String)> {
    let token = auth::generate(TokenKind::Connection);
    let txn = db.begin_write().await?;
    let model = find_for_update(&*txn, Scope::account(account_id), id).await?;
    ensure_live(&model)?;
    let mut active: connection::ActiveModel = model.into();
    active.token_hash = Set(Some(token.hash));
    active.token_prefix = Set(token.display_prefix);
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await?;
    auth::sockets::announce(&txn, Notice::ConnectionTokenRevoked(model.id));
    txn.commit().await?;
    Ok((model, token.token))
}

/// Probes the remote now and records the outcome as the connection's status.
pub async fn check(
    db: &Db,
    cipher: &Cipher,
    outbound: &Outbound,
    scope: Scope,
    id: Uuid,
) -> AppResult<connection::Model> {
    let model = find(db.conn(), scope, id).await?;
    ensure_live(&model)?;
    let credentials = match open_credentials(cipher, &model) {
        Ok(credentials) => credentials,
        Err(CredentialsError::Unreadable(why)) => {
            return record_unreadable(db, scope, id, &why).await;
        }
        Err(err) => return Err(err.into()),
    };
    let connector = connectors::connect(system(&model)?, id, &credentials, outbound, db);
    let outcome = connectors::probe(connector.as_ref()).await;
    record_check(db, scope, id, outcome).await
}

/// Stores that a check found the connection's credentials unreadable (`why`, for the log):
/// the connection goes `AUTH_REQUIRED`.
pub async fn record_unreadable(
    db: &Db,
    scope: Scope,
    id: Uuid,
    why: &str,
) -> AppResult<connection::Model> {
    tracing::warn!(connection.id = %id, reason = why, "connection credentials are unreadable");
    let txn = db.begin_write().await?;
    let model = find_for_update(&*txn, scope, id).await?;
    if model.status == ConnectionStatus::Disconnected {
        return Ok(model);
    }
    let mut active: connection::ActiveModel = model.into();
    active.last_checked_at = Set(Some(Utc::now()));
    let model = active.update(&*txn).await?;
    let model = credentials_unreadable(&*txn, model).await?;
    txn.commit().await?;
    Ok(model)
}

/// Stores a probe's outcome: status, reason, `lastCheckedAt`.
pub async fn record_check(
    db: &Db,
    scope: Scope,
    id: Uuid,
    outcome: Result<(), ConnectorError>,
) -> AppResult<connection::Model> {
    let txn = db.begin_write().await?;
    let model = find_for_update(&*txn, scope, id).await?;
    if model.status == ConnectionStatus::Disconnected {
        return Ok(model);
    }
    let (before, before_reason) = (model.status, model.status_reason.clone());
    let mut active: connection::ActiveModel = model.into();
    active.last_checked_at = Set(Some(Utc::now()));
    let model = active.update(&*txn).await?;
    // A remote that answers "too many requests" is up and took the credentials.
    let outcome = match outcome {
        Err(ConnectorError::RateLimited { .. }) => Ok(()),
        outcome => outcome,
    };
    let (to, reason) = match &outcome {
        Ok(()) => (ConnectionStatus::Online, None),
        Err(err) => (status_for(err), Some(err.to_string())),
    };
    // A failing remote is reported once per change of what is wrong, not at every check.
    if let Err(err) = &outcome
        && (before != to || before_reason != reason)
    {
        let event = NewEvent {
            account_id: model.account_id,
            customer_id: Some(model.customer_id),
            connection_id: Some(model.id),
            event_type: EventType::SystemError,
            data: json!({ "operation": "health_check", "system": model.system_key,
                          "error_kind": err.kind(), "message": err.message() }),
        };
        events::record(&*txn, vec![event]).await?;
    }
    let model = set_status(&*txn, model, to, reason).await?;
    txn.commit().await?;
    Ok(model)
}
