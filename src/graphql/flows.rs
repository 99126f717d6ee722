//! Flows as GraphQL types, and `createFlow`, `updateFlow`, `deleteFlow`, `flows`, `flow` and
//! `testFlow` (docs/flows.md). Account API keys only.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, connection::Connection};
use chrono::{DateTime, Utc};

use super::{
    enums::{EntityType, RecordChangeKind, WriteOperation},
    pagination::relay,
    records::UnifiedRecord,
};
use crate::{
    error::{AppError, AppResult},
    flows::{self, Action, BulkAction, Change, FieldTemplate, FlowChanges, FlowInput},
    ids,
    pagination::PageRequest,
};
use entity::flow;

/// What an action does.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum FlowActionType {
    /// Stores a `flow.triggered` event, sent to subscriptions and webhooks.
    EmitEvent,
    /// Queues a bulk write (`bulkWrite` says which).
    BulkWrite,
}

pub struct Flow(pub flow::Model);

/// A conditional automation over record changes: when a sync changes a record of the
/// trigger's entity and the condition holds, the actions run.
#[Object]
impl Flow {
    /// The flow's id (`flw_…`).
    pub async fn id(&self) -> ID {
        ID(ids::encode(ids::Kind::Flow, self.0.id))
    }
    /// Its name, unique in the account.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Whether syncs evaluate it.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// Which record changes it looks at.
    async fn trigger(&self) -> AppResult<FlowTrigger> {
        let input = flows::input_of(&self.0)?;
        Ok(FlowTrigger {
            entity: input.entity.into(),
            changes: input.changes.into_iter().map(Into::into).collect(),
            system_keys: input.system_keys,
            connection_ids: input.connection_ids.map(|ids| {
                ids.into_iter()
                    .map(|id| ID(ids::encode(ids::Kind::Connection, id)))
                    .collect()
            }),
        })
    }
    /// The CEL condition a change must meet.
    async fn condition(&self) -> &str {
        &self.0.condition
    }
    /// What it does for each change that meets the condition.
    async fn actions(&self) -> AppResult<Vec<FlowAction>> {
        Ok(flows::input_of(&self.0)?
            .actions
            .into_iter()
            .map(FlowAction::from)
            .collect())
    }
    /// Conditions evaluated (one per change and flow; the counters stop at 2,147,483,647,
    /// the metrics go on).
    async fn evaluations(&self) -> i32 {
        saturating(self.0.evaluations)
    }
    /// Changes the condition held for.
    async fn matches(&self) -> i32 {
        saturating(self.0.matches)
    }
    /// Evaluations and actions that failed (the sync went on).
    async fn errors(&self) -> i32 {
        saturating(self.0.errors)
    }
    /// The last error's message, with the record it concerned.
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// When the last error happened.
    async fn last_error_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_error_at
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Which record changes a flow looks at.
#[derive(SimpleObject)]
pub struct FlowTrigger {
    /// The entity type.
    pub entity: EntityType,
    /// The kinds of change.
    pub changes: Vec<RecordChangeKind>,
    /// Only connections to these systems; null: every system.
    pub system_keys: Option<Vec<String>>,
    /// Only these connections; null: every connection of the account.
    pub connection_ids: Option<Vec<ID>>,
}

/// One thing a flow does for a matching change.
#[derive(SimpleObject)]
pub struct FlowAction {
    /// What it does.
    #[graphql(name = "type")]
    pub action_type: FlowActionType,
    /// The bulk write, for `BULK_WRITE`.
    pub bulk_write: Option<FlowBulkWrite>,
}

impl From<Action> for FlowAction {
    fn from(action: Action) -> Self {
        match action {
            Action::EmitEvent => FlowAction {
                action_type: FlowActionType::EmitEvent,
                bulk_write: None,
            },
            Action::BulkWrite(bulk) => FlowAction {
                action_type: FlowActionType::BulkWrite,
                bulk_write: Some(FlowBulkWrite {
                    entity: bulk.entity.into(),
                    operation: bulk.operation.into(),
                    related_by: bulk.related_by,
                    filter: bulk.filter,
                    fields: bulk
                        .fields
                        .into_iter()
                        .map(|f| FlowFieldTemplate {
                            field: f.field,
                            value: f.value,
                        })
                        .collect(),
                    batch_size: bulk.batch_size,
                    delay_between_batches_ms: bulk.delay_between_batches_ms,
                }),
            },
        }
    }
}

/// A bulk write a flow queues for each matching change, on that record's connection.
#[derive(SimpleObject)]
pub struct FlowBulkWrite {
    /// The entity type written.
    pub entity: EntityType,
    /// `CREATE` writes one new record; `UPDATE` and `DELETE` the triggering record, or with
    /// `relatedBy` the records related to it.
    pub operation: WriteOperation,
    /// A text field of `entity` holding the triggering record's key: the records written are
    /// those whose field holds it (a work order's `assetKey`, say).
    pub related_by: Option<String>,
    /// A CEL condition over `target` (each related record): only those it holds for.
    #[graphql(name = "where")]
    pub filter: Option<String>,
    /// The fields written, each a CEL expression.
    pub fields: Vec<FlowFieldTemplate>,
    /// Records per batch.
    pub batch_size: i32,
    /// Pause between batches, in milliseconds.
    pub delay_between_batches_ms: i32,
}

/// A field a bulk action writes and the CEL expression that gives its value.
#[derive(SimpleObject, InputObject)]
#[graphql(input_name = "FlowFieldTemplateInput")]
pub struct FlowFieldTemplate {
    /// A writable unified field of the action's entity.
    pub field: String,
    /// A CEL expression over the trigger's variables (and `target`), of the field's type.
    pub value: String,
}

/// A flow.
#[derive(InputObject)]
#[graphql(name = "FlowInput")]
pub struct NewFlow {
    /// Unique in the account, 1 to 200 characters.
    pub name: String,
    /// Whether syncs evaluate it.
    #[graphql(default = true)]
    pub enabled: bool,
    /// Which record changes it looks at.
    pub trigger: FlowTriggerInput,
    /// A CEL expression over `record`, `previous`, `changed`, `connection`, `customer` and
    /// `now` that gives a boolean (docs/flows.md).
    pub condition: String,
    /// What it does for each change the condition holds for (1 to 5).
    #[graphql(validator(max_items = 5))]
    pub actions: Vec<FlowActionInput>,
}

/// Which record changes a flow looks at.
#[derive(InputObject)]
pub struct FlowTriggerInput {
    /// The entity type.
    pub entity: EntityType,
    /// The kinds of change (at least one).
    #[graphql(validator(max_items = 3))]
    pub changes: Vec<RecordChangeKind>,
    /// Only connections to these systems (1 to 100 keys); omitted: every system.
    #[graphql(validator(max_items = 100))]
    pub system_keys: Option<Vec<String>>,
    /// Only these connections (1 to 100); omitted: every connection of the account.
    #[graphql(validator(max_items = 100))]
    pub connection_ids: Option<Vec<ID>>,
}

/// One action.
#[derive(InputObject)]
pub struct FlowActionInput {
    /// What it does.
    #[graphql(name = "type")]
    pub action_type: FlowActionType,
    /// The bulk write, required with `BULK_WRITE` and refused otherwise.
    pub bulk_write: Option<FlowBulkWriteInput>,
}

/// A bulk write queued for each matching change (see `FlowBulkWrite`).
#[derive(InputObject)]
pub struct FlowBulkWriteInput {
    /// The entity type written (one a system writes: `ASSET`, `WORK_ORDER`).
    pub entity: EntityType,
    /// `CREATE` writes one new record; `UPDATE` and `DELETE` the triggering record (of the
    /// trigger's entity), or with `relatedBy` the records related to it.
    pub operation: WriteOperation,
    /// A text field of `entity` holding the triggering record's key (`assetKey`).
    pub related_by: Option<String>,
    /// With `relatedBy`: a CEL condition over `target`, each related record.
    #[graphql(name = "where")]
    pub filter: Option<String>,
    /// The fields written, each a CEL expression (none for `DELETE`; at most 50).
    #[graphql(default, validator(max_items = 50))]
    pub fields: Vec<FlowFieldTemplate>,
    /// 1 to 100.
    #[graphql(default = 50)]
    pub batch_size: i32,
    /// 0 to 60,000.
    #[graphql(default = 0)]
    pub delay_between_batches_ms: i32,
}

/// Changes to a flow; a field left out keeps its value (its counters always stay).
#[derive(InputObject)]
pub struct UpdateFlowInput {
    /// The flow to change (`flw_…`).
    pub id: ID,
    /// A new name.
    pub name: Option<String>,
    /// `false` stops syncs from evaluating it, `true` starts them again.
    pub enabled: Option<bool>,
    /// Replaces the whole trigger.
    pub trigger: Option<FlowTriggerInput>,
    /// A new condition.
    pub condition: Option<String>,
    /// Replaces every action.
    #[graphql(validator(max_items = 5))]
    pub actions: Option<Vec<FlowActionInput>>,
}

fn actions(input: Vec<FlowActionInput>) -> AppResult<Vec<Action>> {
    input
        .into_iter()
        .enumerate()
        .map(
            |(n, action)| match (action.action_type, action.bulk_write) {
                (FlowActionType::EmitEvent, None) => Ok(Action::EmitEvent),
                (FlowActionType::BulkWrite, Some(bulk)) => Ok(Action::BulkWrite(BulkAction {
                    entity: bulk.entity.into(),
                    operation: bulk.operation.into(),
                    related_by: bulk.related_by,
                    filter: bulk.filter,
                    fields: bulk
                        .fields
                        .into_iter()
                        .map(|f| FieldTemplate {
                            field: f.field,
                            value: f.value,
                        })
                        .collect(),
                    batch_size: bulk.batch_size,
                    delay_between_batches_ms: bulk.delay_between_batches_ms,
                })),
                (FlowActionType::EmitEvent, Some(_)) => Err(AppError::bad_input(format!(
                    "`actions[{n}].bulkWrite` is only for BULK_WRITE"
                ))),
                (FlowActionType::BulkWrite, None) => Err(AppError::bad_input(format!(
                    "`actions[{n}].bulkWrite` is required with BULK_WRITE"
                ))),
            },
        )
        .collect()
}

struct Trigger {
    entity: crate::catalog::EntityType,
    changes: Vec<Change>,
    system_keys: Option<Vec<String>>,
    connection_ids: Option<Vec<uuid::Uuid>>,
}

fn trigger(input: FlowTriggerInput) -> AppResult<Trigger> {
    Ok(Trigger {
        entity: input.entity.into(),
        changes: input.changes.into_iter().map(Into::into).collect(),
        system_keys: input.system_keys,
        connection_ids: input
            .connection_ids
            .map(|ids| {
                ids.iter()
                    .map(|id| ids::decode(ids::Kind::Connection, id))
                    .collect::<AppResult<Vec<_>>>()
            })
            .transpose()?,
    })
}

fn flow_input(input: NewFlow) -> AppResult<FlowInput> {
    let trigger = trigger(input.trigger)?;
    Ok(FlowInput {
        name: input.name,
        enabled: input.enabled,
        entity: trigger.entity,
        changes: trigger.changes,
        system_keys: trigger.system_keys,
        connection_ids: trigger.connection_ids,
        condition: input.condition,
        actions: actions(input.actions)?,
    })
}

fn saturating(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn flow_id(id: &ID) -> AppResult<uuid::Uuid> {
    ids::decode(ids::Kind::Flow, id)
}

/// What `testFlow` found.
#[derive(SimpleObject)]
pub struct FlowTestResult {
    /// Stored records evaluated (at most 10,000).
    pub evaluated: i32,
    /// Records the condition held for.
    pub matched: i32,
    /// Records whose evaluation failed.
    pub errors: i32,
    /// Whether the connection holds more records of the entity than were evaluated (past
    /// 10,000 records or 5 s of evaluation).
    pub truncated: bool,
    /// The first matching records (`first` of them).
    pub matches: Vec<UnifiedRecord>,
    /// The first evaluation errors (at most 20).
    pub evaluation_errors: Vec<FlowEvaluationError>,
}

/// An evaluation that failed on one record.
#[derive(SimpleObject)]
pub struct FlowEvaluationError {
    /// The record's key.
    pub record_key: String,
    /// Why.
    pub message: String,
}

#[derive(Default)]
pub struct FlowQuery;

#[Object]
impl FlowQuery {
    /// The account's flows, oldest first.
    async fn flows(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size, 0 to 100; 50 when omitted.")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> AppResult<Connection<String, Flow>> {
        let account_id = super::account_id(ctx)?;
        let page = PageRequest::from_args(first, after.as_deref(), None, None)?;
        let page = flows::list(super::db(ctx).conn(), account_id, page).await?;
        Ok(relay(page, |f| f.id, Flow))
    }

    /// One flow by id; null when it does not exist or is not the caller's.
    async fn flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's id (`flw_…`).")] id: ID,
    ) -> AppResult<Option<Flow>> {
        let account_id = super::account_id(ctx)?;
        let Ok(id) = flow_id(&id) else {
            return Ok(None);
        };
        match flows::find(super::db(ctx).conn(), account_id, id).await {
            Ok(model) => Ok(Some(Flow(model))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Evaluates an unsaved flow's condition against a connection's stored records of its
    /// entity, each as if just created (`previous` null), and says what it would match:
    /// nothing is written, sent or queued.
    async fn test_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow, as `createFlow` would take it.")] input: NewFlow,
        #[graphql(desc = "The connection whose stored records it is evaluated against.")]
        connection_id: ID,
        #[graphql(desc = "Matching records returned, 1 to 100.", default = 20)] first: i32,
    ) -> AppResult<FlowTestResult> {
        let account_id = super::account_id(ctx)?;
        let connection_id = ids::decode(ids::Kind::Connection, &connection_id)?;
        let input = flow_input(input)?;
        let outcome = flows::test(
            super::db(ctx).conn(),
            account_id,
            &input,
            connection_id,
            first,
        )
        .await?;
        let count = |n: u64| saturating(n as i64);
        Ok(FlowTestResult {
            evaluated: count(outcome.evaluated),
            matched: count(outcome.matched),
            errors: count(outcome.errors),
            truncated: outcome.truncated,
            matches: outcome
                .matches
                .into_iter()
                .map(|m| UnifiedRecord::of(m.record))
                .collect(),
            evaluation_errors: outcome
                .error_samples
                .into_iter()
                .map(|(record_key, message)| FlowEvaluationError {
                    record_key,
                    message,
                })
                .collect(),
        })
    }
}

#[derive(Default)]
pub struct FlowMutation;

#[Object]
impl FlowMutation {
    /// Creates a flow (at most 100 per account). Its condition and templates are compiled and
    /// type-checked now: a mistake is `BAD_USER_INPUT` with `extensions.field`, `line` and
    /// `column`.
    async fn create_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new flow.")] input: NewFlow,
    ) -> AppResult<Flow> {
        let account_id = super::account_id(ctx)?;
        let input = flow_input(input)?;
        Ok(Flow(
            flows::create(super::db(ctx), account_id, input).await?,
        ))
    }

    /// Changes a flow; syncs use the new version from their next entity pass.
    async fn update_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow and its changes.")] input: UpdateFlowInput,
    ) -> AppResult<Flow> {
        let account_id = super::account_id(ctx)?;
        let id = flow_id(&input.id)?;
        let trigger = input.trigger.map(trigger).transpose()?;
        let changes = FlowChanges {
            name: input.name,
            enabled: input.enabled,
            entity: trigger.as_ref().map(|t| t.entity),
            changes: trigger.as_ref().map(|t| t.changes.clone()),
            system_keys: trigger.as_ref().map(|t| t.system_keys.clone()),
            connection_ids: trigger.as_ref().map(|t| t.connection_ids.clone()),
            condition: input.condition,
            actions: input.actions.map(actions).transpose()?,
        };
        Ok(Flow(
            flows::update(super::db(ctx), account_id, id, changes).await?,
        ))
    }

    /// Deletes a flow; returns its id. Its events stay in the log and the bulk writes it
    /// queued go on.
    async fn delete_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's id (`flw_…`).")] id: ID,
    ) -> AppResult<ID> {
        let account_id = super::account_id(ctx)?;
        flows::delete(super::db(ctx), account_id, flow_id(&id)?).await?;
        Ok(id)
    }
}
