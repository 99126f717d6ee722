//! Flows at work in a sync: the flows that apply to one entity pass of a connection
//! ([`FlowSet`]), evaluated against each page's changes inside the page's transaction, so a
//! `flow.triggered` event and a flow's bulk write exist exactly when the change they report
//! was committed. Evaluation never fails a sync: an error is counted on its flow.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveEnum as _, ConnectionTrait, DbBackend, EntityTrait as _, Statement};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{BulkAction, Change, CompiledBulk, CompiledFlow, FlowInput, expr, fast::Facts};
use crate::{
    bulk::{self, NewBulk},
    catalog::{EntityType, WriteOperation},
    db::Db,
    error::{AppError, AppResult},
    events::{EventType, NewEvent},
    ids::{self, Kind},
    metrics::FlowMetrics,
    records::{self, Stored, unified},
};
use entity::{connection, customer};

/// Whether a trigger's systems and connections include this connection.
pub fn applies_to(input: &FlowInput, connection: &connection::Model) -> bool {
    input
        .system_keys
        .as_ref()
        .is_none_or(|keys| keys.contains(&connection.system_key))
        && input
            .connection_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&connection.id))
}

/// The variables every evaluation on one connection shares.
pub struct Context {
    connection: cel::Value,
    customer: cel::Value,
}

impl Context {
    pub fn new(connection: &connection::Model, customer: &customer::Model) -> Self {
        Context {
            connection: expr::connection_value(
                &ids::encode(Kind::Connection, connection.id),
                &connection.system_key,
                connection.label.as_deref(),
                connection.metadata.as_ref(),
            ),
            customer: expr::customer_value(
                &ids::encode(Kind::Customer, customer.id),
                customer.external_id.as_deref(),
            ),
        }
    }

    /// The variables of one change.
    fn activation(
        &self,
        record: cel::Value,
        previous: cel::Value,
        changed: &[&str],
        now: DateTime<Utc>,
    ) -> expr::Activation {
        expr::Activation {
            record,
            previous,
            changed: expr::changed_value(changed),
            connection: self.connection.clone(),
            customer: self.customer.clone(),
            now: expr::now_value(now),
            target: None,
        }
    }

    /// Whether `condition` holds for a stored record seen as just created (`testFlow`), as
    /// a sync would evaluate it.
    pub fn created_matches(
        &self,
        condition: &expr::Compiled,
        evaluator: &expr::Evaluator,
        entity: EntityType,
        key: &str,
        data: &Value,
    ) -> Result<bool, String> {
        let changed = present_fields(entity, data);
        let facts = Facts {
            key,
            record: data,
            previous: None,
            changed: &changed,
        };
        outcome(condition, &facts, evaluator, || {
            self.activation(
                expr::record_value(entity, key, data),
                cel::Value::Null,
                &changed,
                Utc::now(),
            )
        })
    }
}

/// The unified fields that hold a value: what a created record "changed".
fn present_fields(entity: EntityType, data: &Value) -> Vec<&'static str> {
    unified::fields(entity)
        .iter()
        .filter(|(name, _)| data.get(*name).is_some_and(|v| !v.is_null()))
        .map(|(name, _)| *name)
        .collect()
}

/// The unified fields whose value differs between two versions of a record.
fn changed_fields(entity: EntityType, before: &Value, after: &Value) -> Vec<&'static str> {
    unified::fields(entity)
        .iter()
        .filter(|(name, _)| {
            let old = before.get(*name).unwrap_or(&Value::Null);
            let new = after.get(*name).unwrap_or(&Value::Null);
            old != new
        })
        .map(|(name, _)| *name)
        .collect()
}

/// The enabled flows that apply to one entity pass of one connection, compiled.
pub struct FlowSet {
    pub entity: EntityType,
    flows: Vec<CompiledFlow>,
    context: Context,
    connection: connection::Model,
}

/// What a flow's evaluations came to, since its counters were last saved.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub evaluations: i64,
    pub matches: i64,
    pub errors: i64,
    pub last_error: Option<String>,
}

impl Counts {
    fn error(&mut self, why: String) {
        self.errors += 1;
        self.last_error = Some(why);
    }
}

/// Counts by flow.
pub type Stats = BTreeMap<Uuid, Counts>;

/// Adds `more` to `stats` (the last error is the later one's).
pub fn add_stats(stats: &mut Stats, more: Stats) {
    for (id, counts) in more {
        let total = stats.entry(id).or_default();
        total.evaluations += counts.evaluations;
        total.matches += counts.matches;
        total.errors += counts.errors;
        if counts.last_error.is_some() {
            total.last_error = counts.last_error;
        }
    }
}

impl FlowSet {
    /// The flows of `connection`'s account that apply to its `entity` pass, or `None` when
    /// there are none (the pass then costs nothing extra). A stored flow that no longer
    /// compiles is left out and its error counted.
    pub async fn load(
        db: &impl ConnectionTrait,
        connection: &connection::Model,
        entity: EntityType,
        stats: &mut Stats,
    ) -> AppResult<Option<Arc<FlowSet>>> {
        let models = super::enabled_for(db, connection.account_id, entity).await?;
        if models.is_empty() {
            return Ok(None);
        }
        let mut flows = Vec::with_capacity(models.len());
        for model in &models {
            // Only the flows whose trigger takes this connection are compiled.
            let compiled = super::input_of(model).and_then(|input| {
                applies_to(&input, connection)
                    .then(|| super::compile(model.id, &input))
                    .transpose()
            });
            match compiled {
                Ok(Some(flow)) => flows.push(flow),
                Ok(None) => {}
                Err(err) => stats.entry(model.id).or_default().error(err.to_string()),
            }
        }
        if flows.is_empty() {
            return Ok(None);
        }
        let customer = customer::Entity::find_by_id(connection.customer_id)
            .one(db)
            .await?
            .ok_or(AppError::NotFound("customer"))?;
        Ok(Some(Arc::new(FlowSet {
            entity,
            context: Context::new(connection, &customer),
            flows,
            connection: connection.clone(),
        })))
    }

    pub fn connection_id(&self) -> Uuid {
        self.connection.id
    }

    /// Whether any flow triggers on `change`.
    pub fn wants(&self, change: Change) -> bool {
        self.flows.iter().any(|f| f.triggers_on(change))
    }
}

/// One record change of a page, as the flows see it.
pub struct RecordChange {
    pub key: String,
    pub change: Change,
    /// The record's unified fields now (for a deletion: the last ones stored).
    pub data: Value,
    /// Before the change (null for a creation).
    pub previous: Option<Value>,
    pub changed: Vec<&'static str>,
}

/// Works out a page's changes from the store's rows before it (`before`), the page's
/// records (`after`) and what the write did.
pub fn page_changes(
    entity: EntityType,
    before: &HashMap<String, Stored>,
    after: &mut HashMap<String, Value>,
    written: &[String],
    deleted: HashMap<String, Stored>,
) -> Vec<RecordChange> {
    let mut changes = Vec::with_capacity(written.len() + deleted.len());
    for key in written {
        let Some(data) = after.remove(key) else {
            continue;
        };
        match before.get(key) {
            Some(stored) if !stored.deleted => {
                let changed = changed_fields(entity, &stored.data, &data);
                // A remote record that changed outside the unified fields changes nothing a
                // flow can see.
                if !changed.is_empty() {
                    changes.push(RecordChange {
                        key: key.clone(),
                        change: Change::Updated,
                        previous: Some(stored.data.clone()),
                        changed,
                        data,
                    });
                }
            }
            _ => changes.push(RecordChange {
                key: key.clone(),
                change: Change::Created,
                changed: present_fields(entity, &data),
                previous: None,
                data,
            }),
        }
    }
    for (key, stored) in deleted {
        changes.push(RecordChange {
            key,
            change: Change::Deleted,
            previous: Some(stored.data.clone()),
            changed: Vec::new(),
            data: stored.data,
        });
    }
    changes
}

/// A match: flow `flow` held for change `change`.
pub struct Match {
    flow: usize,
    change: usize,
}

/// What evaluating a page's changes came to.
pub struct Evaluation {
    matches: Vec<Match>,
    pub stats: Stats,
}

/// How long one page's evaluations may take in all. Every expression is bounded when it is
/// saved, but a hundred flows of costly expressions over a thousand changes add up: past
/// this, the page's remaining evaluations are skipped and counted as errors on their flows,
/// and the sync goes on.
pub const PAGE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// A page's records evaluated by the flows that trigger on `CREATED`, as if each were new,
/// while the page is prepared (before it is written, beside the previous page's write): a
/// record the write then finds new needs no evaluation in the page's transaction. By key:
/// each such flow's outcome, in the order of the set's flows.
#[derive(Default)]
pub struct Presumed {
    by_key: HashMap<String, Vec<Result<bool, String>>>,
}

/// Evaluates a page's records as created ones, within [`PAGE_BUDGET`] (what is left over is
/// evaluated in the page's transaction).
pub fn presume_created(
    set: &FlowSet,
    records: &HashMap<String, Value>,
    now: DateTime<Utc>,
) -> Presumed {
    let mut presumed = Presumed::default();
    if !set.wants(Change::Created) {
        return presumed;
    }
    let evaluator = expr::Evaluator::new();
    let started = std::time::Instant::now();
    for (key, data) in records {
        if started.elapsed() > PAGE_BUDGET {
            break;
        }
        let changed = present_fields(set.entity, data);
        let facts = Facts {
            key,
            record: data,
            previous: None,
            changed: &changed,
        };
        let mut vars = None;
        let outcomes = set
            .flows
            .iter()
            .filter(|flow| flow.triggers_on(Change::Created))
            .map(|flow| {
                outcome(&flow.condition, &facts, &evaluator, || {
                    vars.get_or_insert_with(|| {
                        set.context.activation(
                            expr::record_value(set.entity, key, data),
                            cel::Value::Null,
                            &changed,
                            now,
                        )
                    })
                    .clone()
                })
            })
            .collect();
        presumed.by_key.insert(key.clone(), outcomes);
    }
    presumed
}

/// Evaluates every flow against every change it triggers on, within [`PAGE_BUDGET`], taking
/// the outcomes of created records from `presumed` where it has them. CPU only: the engine
/// runs it on a blocking thread.
pub fn evaluate(
    set: &FlowSet,
    changes: &[RecordChange],
    now: DateTime<Utc>,
    presumed: Option<&Presumed>,
) -> Evaluation {
    let evaluator = expr::Evaluator::new();
    let mut matches = Vec::new();
    // By the flow's position in the set (a map lookup per evaluation would cost more than
    // the evaluations taken from `presumed`).
    let mut counts = vec![Counts::default(); set.flows.len()];
    let mut skipped = Stats::new();
    let started = std::time::Instant::now();
    for (c, change) in changes.iter().enumerate() {
        if started.elapsed() > PAGE_BUDGET {
            skip_rest(set, &changes[c..], &mut skipped);
            break;
        }
        let mut vars = None;
        let mut known = match change.change {
            Change::Created => presumed
                .and_then(|p| p.by_key.get(&change.key))
                .map(|outcomes| outcomes.iter()),
            _ => None,
        };
        for (f, flow) in set.flows.iter().enumerate() {
            if !flow.triggers_on(change.change) {
                continue;
            }
            let counts = &mut counts[f];
            counts.evaluations += 1;
            let outcome = match known.as_mut().and_then(Iterator::next) {
                Some(outcome) => outcome.clone(),
                None => {
                    let facts = Facts {
                        key: &change.key,
                        record: &change.data,
                        previous: change.previous.as_ref(),
                        changed: &change.changed,
                    };
                    outcome(&flow.condition, &facts, &evaluator, || {
                        vars.get_or_insert_with(|| activation(set, change, now))
                            .clone()
                    })
                }
            };
            match outcome {
                Ok(true) => {
                    counts.matches += 1;
                    matches.push(Match { flow: f, change: c });
                }
                Ok(false) => {}
                Err(why) => counts.error(format!("record `{}`: {why}", change.key)),
            }
        }
    }
    let mut stats: Stats = set
        .flows
        .iter()
        .zip(counts)
        .filter(|(_, counts)| counts.evaluations > 0)
        .map(|(flow, counts)| (flow.id, counts))
        .collect();
    add_stats(&mut stats, skipped);
    Evaluation { matches, stats }
}

/// Whether evaluating `changes` is only looking up what `presumed` already holds (then it is
/// cheap enough to do on the caller's thread).
pub fn all_presumed(set: &FlowSet, changes: &[RecordChange], presumed: Option<&Presumed>) -> bool {
    changes.iter().all(|change| match change.change {
        Change::Created => presumed.is_some_and(|p| p.by_key.contains_key(&change.key)),
        other => !set.wants(other),
    })
}

/// A condition's outcome on one change: from its fast form where it has one, from the
/// interpreter (given the variables `vars` makes) otherwise, and where the fast form fails
/// (for the interpreter's error).
fn outcome(
    condition: &expr::Compiled,
    facts: &Facts<'_>,
    evaluator: &expr::Evaluator,
    vars: impl FnOnce() -> expr::Activation,
) -> Result<bool, String> {
    if let Some(Ok(matched)) = condition.fast().map(|fast| fast.eval(facts)) {
        return Ok(matched);
    }
    let vars = vars();
    guarded(|| evaluator.matches(condition, &vars))
}

/// Counts the evaluations a page had no time left for as errors.
fn skip_rest(set: &FlowSet, rest: &[RecordChange], stats: &mut Stats) {
    for flow in &set.flows {
        let skipped = rest.iter().filter(|c| flow.triggers_on(c.change)).count() as i64;
        if skipped > 0 {
            let counts = stats.entry(flow.id).or_default();
            counts.errors += skipped - 1;
            counts.error(format!(
                "{skipped} changes of one page were not evaluated: the page's flows took more \
                 than {} s",
                PAGE_BUDGET.as_secs()
            ));
        }
    }
}

/// Runs an evaluation; a panic in the interpreter is an error of that record, not of the
/// sync.
pub fn guarded<T>(evaluate: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(evaluate))
        .unwrap_or_else(|_| Err("the expression could not be evaluated (interpreter panic)".into()))
}

fn activation(set: &FlowSet, change: &RecordChange, now: DateTime<Utc>) -> expr::Activation {
    let previous = change.previous.as_ref().map_or(cel::Value::Null, |data| {
        expr::record_value(set.entity, &change.key, data)
    });
    set.context.activation(
        expr::record_value(set.entity, &change.key, &change.data),
        previous,
        &change.changed,
        now,
    )
}

/// Carries out a page's matches inside its transaction, after its records, cursor and run
/// (docs/architecture.md, "Locks"): for each flow and bulk action, the records its matches
/// write are queued as one bulk operation, then the `flow.triggered` events are stored
/// (each naming the operations its match added records to). Whether anything was queued
/// (the caller wakes the bulk workers after commit).
pub async fn act(
    txn: &impl ConnectionTrait,
    set: &FlowSet,
    changes: &[RecordChange],
    evaluation: &mut Evaluation,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let (related, overflowing) = related_records(txn, set, changes, &evaluation.matches).await?;
    let evaluator = expr::Evaluator::new();
    let mut writes: BTreeMap<(usize, usize), Writes> = BTreeMap::new();
    for (n, m) in evaluation.matches.iter().enumerate() {
        let flow = &set.flows[m.flow];
        let change = &changes[m.change];
        for (b, action) in flow.bulk.iter().enumerate() {
            let vars = activation(set, change, now);
            if overflowing.contains(&(m.flow, b)) {
                let counts = evaluation.stats.entry(flow.id).or_default();
                counts.error(format!(
                    "record `{}`: bulkWrite: the page's matches select more than {} related \
                     records, the most one bulk write takes",
                    change.key,
                    bulk::MAX_RECORDS
                ));
                continue;
            }
            let candidates = related
                .get(&(m.flow, b))
                .and_then(|by_value| by_value.get(&change.key))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match guarded(|| bulk_records(action, change, &vars, candidates, &evaluator)) {
                Ok(records) if records.is_empty() => {}
                Ok(records) => {
                    let (queued, matches) = writes.entry((m.flow, b)).or_default();
                    for (key, record) in records {
                        match key.as_ref().and_then(|key| {
                            queued.iter().position(|(k, _)| k.as_ref() == Some(key))
                        }) {
                            Some(at) => queued[at] = (key, record),
                            None => queued.push((key, record)),
                        }
                    }
                    matches.push(n);
                }
                Err(why) => {
                    let counts = evaluation.stats.entry(flow.id).or_default();
                    counts.error(format!("record `{}`: bulkWrite: {why}", change.key));
                }
            }
        }
    }
    let mut operations: HashMap<usize, Vec<String>> = HashMap::new();
    if !writes.is_empty() {
        // The connection as it is now (a disconnect may have come since the pass began),
        // its row already locked by the page.
        let connection = crate::connections::find(
            txn,
            crate::connections::Scope::account(set.connection.account_id),
            set.connection.id,
        )
        .await?;
        for ((f, b), (records, matches)) in writes {
            let flow = &set.flows[f];
            let action = &flow.bulk[b].action;
            let input = NewBulk {
                connection_id: Some(connection.id),
                entity: action.entity,
                operation: action.operation,
                records: records.into_iter().map(|(_, record)| record).collect(),
                batch_size: action.batch_size,
                delay_between_batches_ms: action.delay_between_batches_ms,
                idempotency_key: None,
            };
            match bulk::queue_for_flow(txn, &connection, input, flow.id).await {
                Ok(op) => {
                    let id = ids::encode(Kind::BulkOperation, op.id);
                    for n in matches {
                        operations.entry(n).or_default().push(id.clone());
                    }
                }
                Err(err @ AppError::Internal(_)) => return Err(err),
                Err(err) => {
                    let counts = evaluation.stats.entry(flow.id).or_default();
                    counts.error(format!("bulkWrite of {} matches: {err}", matches.len()));
                }
            }
        }
    }
    let queued = !operations.is_empty();
    let mut events = Vec::new();
    for (n, m) in evaluation.matches.iter().enumerate() {
        let flow = &set.flows[m.flow];
        if !flow.emit {
            continue;
        }
        let change = &changes[m.change];
        events.push(NewEvent {
            account_id: set.connection.account_id,
            customer_id: Some(set.connection.customer_id),
            connection_id: Some(set.connection.id),
            event_type: EventType::FlowTriggered,
            data: json!({
                "flow_id": ids::encode(Kind::Flow, flow.id),
                "flow_name": flow.name,
                "entity": set.entity.to_value(),
                "change": change.change.word(),
                "record_key": change.key,
                "record": change.data,
                "previous": change.previous,
                "changed": change.changed,
                "bulk_operation_ids": operations.remove(&n).unwrap_or_default(),
            }),
        });
    }
    crate::events::record(txn, events).await?;
    Ok(queued)
}

/// What one bulk action of a page writes: the records (with their keys for updates and
/// deletes: two matches may select one record, and the later one's fields are written), and
/// the matches that added to them.
type Writes = (Vec<(Option<String>, Value)>, Vec<usize>);

/// Related records of the matches' bulk actions that select by `relatedBy`, by action
/// (flow, action index) and then by the value of the relating field: (key, unified fields).
type Related = HashMap<(usize, usize), HashMap<String, Vec<(String, Value)>>>;

async fn related_records(
    txn: &impl ConnectionTrait,
    set: &FlowSet,
    changes: &[RecordChange],
    matches: &[Match],
) -> AppResult<(Related, HashSet<(usize, usize)>)> {
    let mut wanted: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for m in matches {
        for (b, action) in set.flows[m.flow].bulk.iter().enumerate() {
            if action.action.related_by.is_some() {
                wanted
                    .entry((m.flow, b))
                    .or_default()
                    .push(changes[m.change].key.clone());
            }
        }
    }
    let mut related = Related::new();
    let mut overflowing = HashSet::new();
    for ((f, b), mut keys) in wanted {
        keys.sort_unstable();
        keys.dedup();
        let action = &set.flows[f].bulk[b].action;
        let Some(field) = action.related_by.as_deref() else {
            continue;
        };
        let rows = records::related(
            txn,
            set.connection.id,
            action.entity,
            field,
            &keys,
            bulk::MAX_RECORDS as u64 + 1,
        )
        .await?;
        if rows.len() > bulk::MAX_RECORDS {
            overflowing.insert((f, b));
            continue;
        }
        let by_value = related.entry((f, b)).or_default();
        for (key, data) in rows {
            if let Some(value) = data.get(field).and_then(Value::as_str) {
                by_value
                    .entry(value.to_owned())
                    .or_default()
                    .push((key, data));
            }
        }
    }
    Ok((related, overflowing))
}

/// The records one match's bulk action writes, each with its key (none for a creation);
/// `candidates` are the related records of the triggering one, for an action that selects
/// by `relatedBy`.
fn bulk_records(
    action: &CompiledBulk,
    change: &RecordChange,
    vars: &expr::Activation,
    candidates: &[(String, Value)],
    evaluator: &expr::Evaluator,
) -> Result<Vec<(Option<String>, Value)>, String> {
    let fields = |vars: &expr::Activation| -> Result<Map<String, Value>, String> {
        let mut record = Map::new();
        for (name, template) in &action.fields {
            let value = evaluator
                .value(template, vars)
                .map_err(|why| format!("field `{name}`: {why}"))?;
            let value = expr::to_json(&value).map_err(|why| format!("field `{name}`: {why}"))?;
            record.insert(name.clone(), value);
        }
        Ok(record)
    };
    let keyed = |key: &str, mut record: Map<String, Value>| {
        record.insert("key".into(), Value::from(key));
        (Some(key.to_owned()), Value::Object(record))
    };
    let BulkAction {
        operation,
        related_by,
        ..
    } = &action.action;
    match (operation, related_by) {
        (WriteOperation::Create, _) => Ok(vec![(None, Value::Object(fields(vars)?))]),
        (_, None) => Ok(vec![keyed(&change.key, fields(vars)?)]),
        (_, Some(_)) => {
            let mut records = Vec::new();
            for (key, data) in candidates {
                let mut vars = vars.clone();
                vars.target = Some(expr::record_value(action.action.entity, key, data));
                if let Some(filter) = &action.filter
                    && !evaluator
                        .matches(filter, &vars)
                        .map_err(|why| format!("`where` on `{key}`: {why}"))?
                {
                    continue;
                }
                records.push(keyed(key, fields(&vars)?));
            }
            Ok(records)
        }
    }
}

/// Adds a page's counts to the flows' stored counters and to the metrics, in one short
/// transaction after the page committed: no flow row is held locked through a page.
pub async fn save_stats(db: &Db, metrics: &FlowMetrics, stats: Stats) -> AppResult<()> {
    let backend = db.conn().get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "UPDATE flows SET evaluations = evaluations + $1, matches = matches + $2, \
             errors = errors + $3, last_error = COALESCE($4, last_error), \
             last_error_at = CASE WHEN $4 IS NULL THEN last_error_at ELSE $5 END WHERE id = $6"
        }
        _ => {
            "UPDATE flows SET evaluations = evaluations + ?1, matches = matches + ?2, \
             errors = errors + ?3, last_error = COALESCE(?4, last_error), \
             last_error_at = CASE WHEN ?4 IS NULL THEN last_error_at ELSE ?5 END WHERE id = ?6"
        }
    };
    let txn = db.begin_write().await?;
    for (id, counts) in &stats {
        let statement = Statement::from_sql_and_values(
            backend,
            sql,
            [
                counts.evaluations.into(),
                counts.matches.into(),
                counts.errors.into(),
                counts.last_error.clone().into(),
                Utc::now().into(),
                (*id).into(),
            ],
        );
        txn.execute_raw(statement).await?;
    }
    txn.commit().await?;
    for (id, counts) in stats {
        metrics.add(id, &counts);
    }
    Ok(())
}
