//! Flows: an account's conditional automations over record changes. A flow is a trigger
//! (an entity type, the change kinds, optionally systems and connections), a condition in
//! CEL ([`expr`]) and actions: a `flow.triggered` event, stored in the same transaction as
//! the change, which webhooks and subscriptions pick by type and by flow, and a bulk write
//! queued through the bulk-writes machinery. The sync engine evaluates the flows of each page
//! it writes ([`trigger`]); `testFlow` evaluates an unsaved flow against stored records.
//! docs/flows.md is the user's guide.

pub mod expr;
pub mod fast;
pub mod trigger;

use std::collections::HashSet;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    bulk,
    catalog::{self, EntityType, WriteOperation},
    connections::{self, Scope},
    db::Db,
    error::{AppError, AppResult},
    ids::new_id,
    pagination::{Direction, Page, PageRequest, fetch_page},
    records::{self, unified},
};
use entity::flow;

/// Flows one account may have: every page a sync writes evaluates the enabled ones of its
/// entity type.
pub const MAX_FLOWS_PER_ACCOUNT: u64 = 100;
/// Longest flow name, in characters.
const MAX_NAME: usize = 200;
/// Actions a flow has at most.
pub const MAX_ACTIONS: usize = 5;
/// Fields a bulk action writes at most.
pub const MAX_FIELDS: usize = 50;
/// Connections or systems a trigger names at most.
const MAX_TRIGGER_LIST: usize = 100;
/// Records `testFlow` evaluates at most.
pub const TEST_LIMIT: u64 = 10_000;
/// How long `testFlow` evaluates at most; it reports what it evaluated by then.
const TEST_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
/// Matches `testFlow` returns at most.
pub const MAX_TEST_MATCHES: i32 = 100;
/// Evaluation errors `testFlow` returns at most (all are counted).
pub const MAX_TEST_ERRORS: usize = 20;

/// What happened to a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    /// The word events and stored triggers use.
    pub fn word(self) -> &'static str {
        match self {
            Change::Created => "CREATED",
            Change::Updated => "UPDATED",
            Change::Deleted => "DELETED",
        }
    }
}

/// What a flow does when its condition holds (`flows.actions`, a JSON array).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Stores a `flow.triggered` event (to webhooks and subscriptions).
    EmitEvent,
    /// Queues a bulk write.
    BulkWrite(BulkAction),
}

/// A bulk write a flow queues for each record it matches, on that record's connection.
///
/// - `CREATE`: one new record of `entity`, its fields from `fields`.
/// - `UPDATE` / `DELETE` without `related_by`: the triggering record itself.
/// - `UPDATE` / `DELETE` with `related_by`: the stored live records of `entity` on the same
///   connection whose `related_by` field holds the triggering record's key (a work order's
///   `assetKey`, say), those for which `filter` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkAction {
    pub entity: EntityType,
    pub operation: WriteOperation,
    #[serde(default)]
    pub related_by: Option<String>,
    /// A CEL condition over `target` (each related record) and the trigger's variables.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// The fields written: each a CEL expression over the trigger's variables (and `target`).
    #[serde(default)]
    pub fields: Vec<FieldTemplate>,
    pub batch_size: i32,
    pub delay_between_batches_ms: i32,
}

/// One field a bulk action writes, and the CEL expression that gives its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldTemplate {
    pub field: String,
    pub value: String,
}

/// A flow as `createFlow` gives it (and `updateFlow` after merging its changes).
#[derive(Clone, Debug)]
pub struct FlowInput {
    pub name: String,
    pub enabled: bool,
    pub entity: EntityType,
    pub changes: Vec<Change>,
    pub system_keys: Option<Vec<String>>,
    pub connection_ids: Option<Vec<Uuid>>,
    pub condition: String,
    pub actions: Vec<Action>,
}

/// What `updateFlow` changes; `None` keeps the stored value. The trigger lists take
/// `Some(None)` to apply to every system or connection again.
#[derive(Default)]
pub struct FlowChanges {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub entity: Option<EntityType>,
    pub changes: Option<Vec<Change>>,
    pub system_keys: Option<Option<Vec<String>>>,
    pub connection_ids: Option<Option<Vec<Uuid>>>,
    pub condition: Option<String>,
    pub actions: Option<Vec<Action>>,
}

/// A flow compiled for evaluation: its condition and templates checked and ready.
pub struct CompiledFlow {
    pub id: Uuid,
    pub name: String,
    pub changes: Vec<Change>,
    pub condition: expr::Compiled,
    pub emit: bool,
    pub bulk: Vec<CompiledBulk>,
}

/// A bulk action compiled for evaluation.
pub struct CompiledBulk {
    pub action: BulkAction,
    pub filter: Option<expr::Compiled>,
    pub fields: Vec<(String, expr::Compiled)>,
}

impl CompiledFlow {
    pub fn triggers_on(&self, change: Change) -> bool {
        self.changes.contains(&change)
    }
}

fn expression_error(field: &str, err: expr::ExprError) -> AppError {
    AppError::InvalidExpression {
        field: field.to_owned(),
        line: err.line,
        column: err.column,
        message: err.message,
    }
}

/// Checks and compiles a flow: every problem is `BAD_USER_INPUT` (an expression's with its
/// position); a connection of another account is `NOT_FOUND`.
pub async fn check(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    id: Uuid,
    input: &FlowInput,
) -> AppResult<CompiledFlow> {
    let compiled = compile(id, input)?;
    if let Some(ids) = &input.connection_ids {
        for id in ids {
            connections::find(db, Scope::account(account_id), *id).await?;
        }
    }
    Ok(compiled)
}

/// Checks and compiles what a flow says by itself (not whose its connections are).
pub fn compile(id: Uuid, input: &FlowInput) -> AppResult<CompiledFlow> {
    let name = check_name(&input.name)?;
    if input.changes.is_empty() {
        return Err(AppError::bad_input(
            "`trigger.changes` must name at least one of CREATED, UPDATED, DELETED",
        ));
    }
    if let Some(keys) = &input.system_keys {
        check_list_size(keys.len(), "trigger.systemKeys")?;
        for key in keys {
            let system = catalog::find(key)
                .ok_or_else(|| AppError::bad_input(format!("unknown system `{key}`")))?;
            if !system.entities.contains(&input.entity) {
                return Err(AppError::bad_input(format!(
                    "{} does not sync {} records",
                    system.name, input.entity
                )));
            }
        }
    }
    if let Some(ids) = &input.connection_ids {
        check_list_size(ids.len(), "trigger.connectionIds")?;
    }
    let scope = expr::Scope {
        entity: input.entity,
        target: None,
    };
    let condition = expr::compile(&input.condition, &scope, expr::Want::Bool)
        .map_err(|err| expression_error("condition", err))?;
    if input.actions.is_empty() || input.actions.len() > MAX_ACTIONS {
        return Err(AppError::bad_input(format!(
            "`actions` takes 1 to {MAX_ACTIONS} actions"
        )));
    }
    let mut emit = false;
    let mut bulk = Vec::new();
    for (n, action) in input.actions.iter().enumerate() {
        match action {
            Action::EmitEvent if emit => {
                return Err(AppError::bad_input(
                    "`actions` has EMIT_EVENT twice; one event per match is sent",
                ));
            }
            Action::EmitEvent => emit = true,
            Action::BulkWrite(action) => {
                bulk.push(check_bulk(input, n, action)?);
            }
        }
    }
    Ok(CompiledFlow {
        id,
        name: name.to_owned(),
        changes: input.changes.clone(),
        condition,
        emit,
        bulk,
    })
}

fn check_name(name: &str) -> AppResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::bad_input(format!(
            "`name` must be 1 to {MAX_NAME} printable characters"
        )));
    }
    Ok(name)
}

fn check_list_size(len: usize, field: &str) -> AppResult<()> {
    if len == 0 || len > MAX_TRIGGER_LIST {
        return Err(AppError::bad_input(format!(
            "`{field}` takes 1 to {MAX_TRIGGER_LIST} items; omit it (null) for all"
        )));
    }
    Ok(())
}

fn check_bulk(input: &FlowInput, n: usize, action: &BulkAction) -> AppResult<CompiledBulk> {
    let at = |field: &str| format!("actions[{n}].bulkWrite.{field}");
    let writable = bulk::fields::writable_names(action.entity);
    if writable.is_empty() {
        return Err(AppError::bad_input(format!(
            "`{}`: no system writes {} records",
            at("entity"),
            action.entity
        )));
    }
    if let Some(keys) = &input.system_keys {
        for key in keys {
            let system = catalog::find(key)
                .ok_or_else(|| AppError::bad_input(format!("unknown system `{key}`")))?;
            if !system
                .write_operations(action.entity)
                .contains(&action.operation)
            {
                return Err(AppError::bad_input(format!(
                    "`{}`: {} does not take {} writes of {}",
                    at("operation"),
                    system.name,
                    action.operation,
                    action.entity
                )));
            }
        }
    }
    if !(1..=bulk::MAX_BATCH_SIZE).contains(&action.batch_size) {
        return Err(AppError::bad_input(format!(
            "`{}` must be between 1 and {}",
            at("batchSize"),
            bulk::MAX_BATCH_SIZE
        )));
    }
    if !(0..=bulk::MAX_DELAY_MS).contains(&action.delay_between_batches_ms) {
        return Err(AppError::bad_input(format!(
            "`{}` must be between 0 and {}",
            at("delayBetweenBatchesMs"),
            bulk::MAX_DELAY_MS
        )));
    }
    let target = match (&action.related_by, action.operation) {
        (Some(_), WriteOperation::Create) => {
            return Err(AppError::bad_input(format!(
                "`{}` selects records to update or delete; a CREATE writes new ones",
                at("relatedBy")
            )));
        }
        (Some(field), _) => {
            let holds_keys = unified::fields(action.entity)
                .iter()
                .any(|(name, kind)| name == field && *kind == unified::FieldType::Text);
            if !holds_keys {
                return Err(AppError::bad_input(format!(
                    "`{}`: {} has no text field `{field}` to hold a {} key",
                    at("relatedBy"),
                    action.entity,
                    input.entity
                )));
            }
            Some(action.entity)
        }
        (None, WriteOperation::Create) => None,
        (None, _) => {
            if action.entity != input.entity {
                return Err(AppError::bad_input(format!(
                    "`{}`: an {} of the triggering record writes {} records; to write other \
                     records set `relatedBy`",
                    at("entity"),
                    action.operation,
                    input.entity
                )));
            }
            None
        }
    };
    if action.filter.is_some() && target.is_none() {
        return Err(AppError::bad_input(format!(
            "`{}` filters the records `relatedBy` selects; set `relatedBy` too",
            at("where")
        )));
    }
    let scope = expr::Scope {
        entity: input.entity,
        target,
    };
    let filter = action
        .filter
        .as_deref()
        .map(|source| {
            expr::compile(source, &scope, expr::Want::Bool)
                .map_err(|err| expression_error(&at("where"), err))
        })
        .transpose()?;
    match action.operation {
        WriteOperation::Delete if !action.fields.is_empty() => {
            return Err(AppError::bad_input(format!(
                "`{}`: a DELETE writes no fields",
                at("fields")
            )));
        }
        WriteOperation::Update if action.fields.is_empty() => {
            return Err(AppError::bad_input(format!(
                "`{}`: an UPDATE needs at least one field",
                at("fields")
            )));
        }
        _ => {}
    }
    if action.fields.len() > MAX_FIELDS {
        return Err(AppError::bad_input(format!(
            "`{}` takes at most {MAX_FIELDS} fields",
            at("fields")
        )));
    }
    let mut seen = HashSet::new();
    let mut fields = Vec::with_capacity(action.fields.len());
    for (i, template) in action.fields.iter().enumerate() {
        let name = template.field.as_str();
        if !writable.contains(&name) {
            return Err(AppError::bad_input(format!(
                "`{}`: {} has no writable field `{name}`; they are {}",
                at(&format!("fields[{i}].field")),
                action.entity,
                writable.join(", ")
            )));
        }
        if !seen.insert(name) {
            return Err(AppError::bad_input(format!(
                "`{}`: `{name}` is written twice",
                at(&format!("fields[{i}].field"))
            )));
        }
        let kind = unified::fields(action.entity)
            .iter()
            .find(|(field, _)| *field == name)
            .map_or(unified::FieldType::Text, |(_, kind)| *kind);
        let compiled = expr::compile(&template.value, &scope, expr::Want::Field(kind))
            .map_err(|err| expression_error(&at(&format!("fields[{i}].value")), err))?;
        fields.push((name.to_owned(), compiled));
    }
    if action.operation == WriteOperation::Create {
        for required in bulk::fields::required_names(action.entity) {
            if !seen.contains(required) {
                return Err(AppError::bad_input(format!(
                    "`{}`: a CREATE of {} needs `{required}`",
                    at("fields"),
                    action.entity
                )));
            }
        }
    }
    Ok(CompiledBulk {
        action: action.clone(),
        filter,
        fields,
    })
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("flow definitions serialize")
}

/// Reads a JSON column of `flows`.
fn read<T: serde::de::DeserializeOwned>(column: &str, value: &Value) -> AppResult<T> {
    serde_json::from_value(value.clone()).map_err(|_| {
        AppError::internal(anyhow::anyhow!(
            "flows.{column} holds what this release cannot read: {value}"
        ))
    })
}

/// The stored flow as an input: what `updateFlow` merges its changes into.
pub fn input_of(model: &flow::Model) -> AppResult<FlowInput> {
    Ok(FlowInput {
        name: model.name.clone(),
        enabled: model.enabled,
        entity: model.entity,
        changes: read("changes", &model.changes)?,
        system_keys: model
            .system_keys
            .as_ref()
            .map(|v| read("system_keys", v))
            .transpose()?,
        connection_ids: model
            .connection_ids
            .as_ref()
            .map(|v| read("connection_ids", v))
            .transpose()?,
        condition: model.condition.clone(),
        actions: read("actions", &model.actions)?,
    })
}

/// Creates a flow.
#[tracing::instrument(skip_all, fields(account.id = %account_id), err(level = "debug"))]
pub async fn create(db: &Db, account_id: Uuid, input: FlowInput) -> AppResult<flow::Model> {
    let id = new_id();
    check(db.conn(), account_id, id, &input).await?;
    let txn = db.begin_write().await?;
    // Concurrent creates of one account count one after another (see webhooks::create).
    entity::account::Entity::find_by_id(account_id)
        .lock_exclusive()
        .one(&*txn)
        .await?;
    let existing = flow::Entity::find()
        .filter(flow::Column::AccountId.eq(account_id))
        .count(&*txn)
        .await?;
    if existing >= MAX_FLOWS_PER_ACCOUNT {
        return Err(AppError::Conflict(format!(
            "an account has at most {MAX_FLOWS_PER_ACCOUNT} flows; delete one first"
        )));
    }
    refuse_taken_name(&*txn, account_id, None, input.name.trim()).await?;
    let now = Utc::now();
    let model = flow::ActiveModel {
        id: Set(id),
        account_id: Set(account_id),
        name: Set(input.name.trim().to_owned()),
        enabled: Set(input.enabled),
        entity: Set(input.entity),
        changes: Set(to_json(&dedup(input.changes))),
        system_keys: Set(input.system_keys.map(|k| to_json(&dedup(k)))),
        connection_ids: Set(input.connection_ids.map(|c| to_json(&dedup(c)))),
        condition: Set(input.condition),
        actions: Set(to_json(&input.actions)),
        evaluations: Set(0),
        matches: Set(0),
        errors: Set(0),
        last_error: Set(None),
        last_error_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    Ok(model)
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !kept.contains(&item) {
            kept.push(item);
        }
    }
    kept
}

async fn refuse_taken_name(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    except: Option<Uuid>,
    name: &str,
) -> AppResult<()> {
    let mut select = flow::Entity::find()
        .filter(flow::Column::AccountId.eq(account_id))
        .filter(flow::Column::Name.eq(name));
    if let Some(id) = except {
        select = select.filter(flow::Column::Id.ne(id));
    }
    if select.count(db).await? > 0 {
        return Err(AppError::Conflict(format!(
            "the account already has a flow named `{name}`"
        )));
    }
    Ok(())
}

/// Changes a flow; its counters stay.
pub async fn update(
    db: &Db,
    account_id: Uuid,
    id: Uuid,
    changes: FlowChanges,
) -> AppResult<flow::Model> {
    let current = find(db.conn(), account_id, id).await?;
    let mut input = input_of(&current)?;
    // Renaming, disabling or enabling a flow checks only its name: a flow that names a
    // connection deleted since, or that a later release's checks refuse, can still be
    // switched off. Anything else is checked whole; the connections only when given anew.
    let switches_only = changes.entity.is_none()
        && changes.changes.is_none()
        && changes.system_keys.is_none()
        && changes.connection_ids.is_none()
        && changes.condition.is_none()
        && changes.actions.is_none();
    let new_connections = changes.connection_ids.is_some();
    if let Some(name) = changes.name {
        input.name = name;
    }
    if let Some(enabled) = changes.enabled {
        input.enabled = enabled;
    }
    if let Some(entity) = changes.entity {
        input.entity = entity;
    }
    if let Some(kinds) = changes.changes {
        input.changes = kinds;
    }
    if let Some(keys) = changes.system_keys {
        input.system_keys = keys;
    }
    if let Some(ids) = changes.connection_ids {
        input.connection_ids = ids;
    }
    if let Some(condition) = changes.condition {
        input.condition = condition;
    }
    if let Some(actions) = changes.actions {
        input.actions = actions;
    }
    if switches_only {
        check_name(&input.name)?;
    } else if new_connections {
        check(db.conn(), account_id, id, &input).await?;
    } else {
        compile(id, &input)?;
    }
    let txn = db.begin_write().await?;
    let current = find(&*txn, account_id, id).await?;
    refuse_taken_name(&*txn, account_id, Some(id), input.name.trim()).await?;
    let mut active: flow::ActiveModel = current.into();
    active.name = Set(input.name.trim().to_owned());
    active.enabled = Set(input.enabled);
    active.entity = Set(input.entity);
    active.changes = Set(to_json(&dedup(input.changes)));
    active.system_keys = Set(input.system_keys.map(|k| to_json(&dedup(k))));
    active.connection_ids = Set(input.connection_ids.map(|c| to_json(&dedup(c))));
    active.condition = Set(input.condition);
    active.actions = Set(to_json(&input.actions));
    active.updated_at = Set(Utc::now());
    let model = active.update(&*txn).await?;
    txn.commit().await?;
    Ok(model)
}

/// Deletes a flow. Its events stay in the log; operations it queued go on.
pub async fn delete(db: &Db, account_id: Uuid, id: Uuid) -> AppResult<()> {
    let txn = db.begin_write().await?;
    find(&*txn, account_id, id).await?;
    flow::Entity::delete_by_id(id).exec(&*txn).await?;
    txn.commit().await?;
    Ok(())
}

pub async fn find(db: &impl ConnectionTrait, account_id: Uuid, id: Uuid) -> AppResult<flow::Model> {
    flow::Entity::find_by_id(id)
        .filter(flow::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("flow"))
}

/// The account's flows, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<flow::Model>> {
    let select = flow::Entity::find().filter(flow::Column::AccountId.eq(account_id));
    Ok(fetch_page(db, select, flow::Column::Id, page).await?)
}

/// Checks that every id is a flow of the account (a webhook endpoint's `flowIds`).
pub async fn check_ids(db: &impl ConnectionTrait, account_id: Uuid, ids: &[Uuid]) -> AppResult<()> {
    if ids.len() > MAX_FLOWS_PER_ACCOUNT as usize {
        return Err(AppError::bad_input(format!(
            "`flowIds` takes at most {MAX_FLOWS_PER_ACCOUNT} flows"
        )));
    }
    let found = flow::Entity::find()
        .select_only()
        .column(flow::Column::Id)
        .filter(flow::Column::AccountId.eq(account_id))
        .filter(flow::Column::Id.is_in(ids.to_vec()))
        .into_tuple::<Uuid>()
        .all(db)
        .await?;
    if found.len() < dedup(ids.to_vec()).len() {
        return Err(AppError::NotFound("flow"));
    }
    Ok(())
}

/// One record `testFlow` matched.
pub struct TestMatch {
    pub record: entity::record::Model,
}

/// What `testFlow` found.
pub struct TestOutcome {
    pub evaluated: u64,
    pub matched: u64,
    pub errors: u64,
    /// Whether the connection holds more records than were evaluated (past 10,000 records,
    /// or 5 s of evaluation).
    pub truncated: bool,
    pub matches: Vec<TestMatch>,
    /// (record key, why) of the first evaluation errors.
    pub error_samples: Vec<(String, String)>,
}

/// Evaluates an unsaved flow's condition against the connection's stored live records of its
/// entity, each as if just CREATED (`previous` null): nothing is written or sent.
pub async fn test(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    input: &FlowInput,
    connection_id: Uuid,
    first: i32,
) -> AppResult<TestOutcome> {
    if !(1..=MAX_TEST_MATCHES).contains(&first) {
        return Err(AppError::bad_input(format!(
            "`first` must be between 1 and {MAX_TEST_MATCHES}"
        )));
    }
    let connection = connections::find(db, Scope::account(account_id), connection_id).await?;
    let flow = check(db, account_id, new_id(), input).await?;
    if !trigger::applies_to(input, &connection) {
        return Err(AppError::bad_input(
            "the flow's trigger leaves this connection out (`systemKeys`, `connectionIds`)",
        ));
    }
    let customer = entity::customer::Entity::find_by_id(connection.customer_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("customer"))?;
    let context = trigger::Context::new(&connection, &customer);
    let evaluator = expr::Evaluator::new();
    let mut outcome = TestOutcome {
        evaluated: 0,
        matched: 0,
        errors: 0,
        truncated: false,
        matches: Vec::new(),
        error_samples: Vec::new(),
    };
    let filter = records::RecordFilter {
        connection_id,
        entity: input.entity,
        modified_after: None,
        include_deleted: false,
    };
    let mut cursor = None;
    let started = std::time::Instant::now();
    loop {
        let room = TEST_LIMIT - outcome.evaluated;
        let request = PageRequest {
            direction: Direction::Forward,
            limit: room.min(1000),
            cursor,
        };
        let page = records::list(db, &filter, request).await?;
        cursor = page.items.last().map(|r| r.id);
        for record in page.items {
            if started.elapsed() > TEST_BUDGET {
                outcome.truncated = true;
                return Ok(outcome);
            }
            outcome.evaluated += 1;
            match context.created_matches(
                &flow.condition,
                &evaluator,
                input.entity,
                &record.key,
                &record.data,
            ) {
                Ok(true) => {
                    outcome.matched += 1;
                    if outcome.matches.len() < first as usize {
                        outcome.matches.push(TestMatch { record });
                    }
                }
                Ok(false) => {}
                Err(why) => {
                    outcome.errors += 1;
                    if outcome.error_samples.len() < MAX_TEST_ERRORS {
                        outcome.error_samples.push((record.key.clone(), why));
                    }
                }
            }
        }
        if !page.has_next {
            break;
        }
        if outcome.evaluated >= TEST_LIMIT {
            outcome.truncated = true;
            break;
        }
    }
    Ok(outcome)
}

/// The enabled flows of an account for one entity type, oldest first.
pub async fn enabled_for(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    entity: EntityType,
) -> AppResult<Vec<flow::Model>> {
    Ok(flow::Entity::find()
        .filter(flow::Column::AccountId.eq(account_id))
        .filter(flow::Column::Entity.eq(entity))
        .filter(flow::Column::Enabled.eq(true))
        .order_by_asc(flow::Column::Id)
        .all(db)
        .await?)
}
