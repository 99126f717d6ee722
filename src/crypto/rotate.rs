//! `millwright keys rotate`: rewrites every sealed value (connection credentials, webhook
//! secrets and the previous secrets kept during a webhook secret rotation) with the current
//! key.
//!
//! Safe while servers run: rows are read in batches by id, resealed outside any
//! transaction, then each is written only if it still holds the ciphertext that was read
//! (compare-and-swap in one short write transaction per batch). A row changed in between,
//! say by `updateConnectionCredentials`, is read again and looked at afresh, so a concurrent
//! write is never overwritten. Servers that hold the current key and the old ones open
//! both forms throughout. Interrupted, it can simply be run again: what is already sealed
//! with the current key is counted and left alone. A value no key opens is reported and
//! left as it is.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{Cipher, Resealed};
use crate::{db::Db, ids};
use entity::{connection, webhook_endpoint};

/// How often a row that keeps changing between its read and its write is read again before
/// the rotation gives up on it (and says to run again).
const ATTEMPTS: usize = 20;

/// What the rotation did to one kind of value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Rewritten with the current key.
    pub reencrypted: u64,
    /// Already sealed with the current key.
    pub current: u64,
    /// Opened by no key: left untouched. Each as `<kind> <id>`.
    pub unreadable: Vec<String>,
}

impl Tally {
    fn count(&mut self, outcome: Outcome, what: impl FnOnce() -> String) {
        match outcome {
            Outcome::Reencrypted => self.reencrypted += 1,
            Outcome::Current => self.current += 1,
            Outcome::Unreadable => self.unreadable.push(what()),
        }
    }
}

/// What the rotation did, by kind of value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// `connections.credentials` (connections that are disconnected hold none).
    pub credentials: Tally,
    /// `webhook_endpoints.secret`.
    pub webhook_secrets: Tally,
    /// `webhook_endpoints.previous_secret`, kept for 24 hours after a webhook secret rotation.
    pub previous_webhook_secrets: Tally,
}

impl Report {
    /// One line per kind of value, then each unreadable one.
    pub fn lines(&self) -> Vec<String> {
        let kinds = [
            ("connection credentials", &self.credentials),
            ("webhook secrets", &self.webhook_secrets),
            ("previous webhook secrets", &self.previous_webhook_secrets),
        ];
        let mut lines: Vec<String> = kinds
            .iter()
            .map(|(name, t)| {
                format!(
                    "{name}: {} re-encrypted, {} already current, {} unreadable",
                    t.reencrypted,
                    t.current,
                    t.unreadable.len()
                )
            })
            .collect();
        for (_, tally) in kinds {
            lines.extend(
                tally
                    .unreadable
                    .iter()
                    .map(|what| format!("unreadable: {what}")),
            );
        }
        lines
    }

    /// How many values no key opened.
    pub fn unreadable(&self) -> usize {
        self.credentials.unreadable.len()
            + self.webhook_secrets.unreadable.len()
            + self.previous_webhook_secrets.unreadable.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(
        "{0} changed {attempts} times while it was being re-encrypted; run `keys rotate` again",
        attempts = ATTEMPTS
    )]
    Busy(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Reencrypted,
    Current,
    Unreadable,
}

fn outcome(resealed: &Resealed) -> Outcome {
    match resealed {
        Resealed::Current => Outcome::Current,
        Resealed::Rewritten(_) => Outcome::Reencrypted,
        Resealed::Unreadable => Outcome::Unreadable,
    }
}

/// Re-encrypts every sealed value with `cipher`'s current key, `batch` rows at a time.
pub async fn rotate(db: &Db, cipher: &Cipher, batch: u64) -> Result<Report, RotateError> {
    let mut report = Report::default();
    credentials(db, cipher, batch, &mut report.credentials).await?;
    webhook_secrets(db, cipher, batch, &mut report).await?;
    Ok(report)
}

/// A connection's stored credentials: its id and the sealed value.
type CredentialRow = (Uuid, Option<Vec<u8>>);

/// Connections' ids and credentials, by id; disconnected ones hold none.
fn connections() -> sea_orm::Select<connection::Entity> {
    connection::Entity::find()
        .select_only()
        .column(connection::Column::Id)
        .column(connection::Column::Credentials)
        .filter(connection::Column::Credentials.is_not_null())
        .order_by_asc(connection::Column::Id)
}

async fn credentials(
    db: &Db,
    cipher: &Cipher,
    batch: u64,
    tally: &mut Tally,
) -> Result<(), RotateError> {
    let mut after = None;
    loop {
        let mut select = connections().limit(batch);
        if let Some(after) = after {
            select = select.filter(connection::Column::Id.gt(after));
        }
        let rows = select.into_tuple::<CredentialRow>().all(db.conn()).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(*last);
        let planned: Vec<(Uuid, Vec<u8>, Resealed)> = rows
            .into_iter()
            .filter_map(|(id, sealed)| sealed.map(|s| (id, s)))
            .map(|(id, sealed)| {
                let resealed = cipher.reseal(&sealed, id.as_bytes());
                (id, sealed, resealed)
            })
            .collect();
        let mut outcomes: Vec<Option<Outcome>> =
            planned.iter().map(|(_, _, r)| Some(outcome(r))).collect();
        if outcomes.contains(&Some(Outcome::Reencrypted)) {
            let txn = db.begin_write().await?;
            for ((id, sealed, resealed), done) in planned.iter().zip(&mut outcomes) {
                if let Resealed::Rewritten(new) = resealed
                    && !swap_credentials(&*txn, *id, sealed, new).await?
                {
                    *done = None;
                }
            }
            txn.commit().await?;
        }
        for ((id, _, _), done) in planned.iter().zip(outcomes) {
            let done = match done {
                Some(done) => Some(done),
                // Changed since it was read: look at what it holds now.
                None => credentials_again(db, cipher, *id).await?,
            };
            if let Some(done) = done {
                tally.count(done, || {
                    format!("connection {}", ids::encode(ids::Kind::Connection, *id))
                });
            }
        }
    }
}

/// Writes `new` if the row still holds `old`.
async fn swap_credentials(
    db: &impl ConnectionTrait,
    id: Uuid,
    old: &[u8],
    new: &[u8],
) -> Result<bool, DbErr> {
    let updated = connection::Entity::update_many()
        .col_expr(connection::Column::Credentials, Expr::value(new.to_vec()))
        .filter(connection::Column::Id.eq(id))
        .filter(connection::Column::Credentials.eq(old.to_vec()))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// One connection, read and swapped until the swap holds; `None` once it holds no
/// credentials (disconnected meanwhile).
async fn credentials_again(
    db: &Db,
    cipher: &Cipher,
    id: Uuid,
) -> Result<Option<Outcome>, RotateError> {
    for _ in 0..ATTEMPTS {
        let row = connections()
            .filter(connection::Column::Id.eq(id))
            .into_tuple::<CredentialRow>()
            .one(db.conn())
            .await?;
        let Some((_, Some(sealed))) = row else {
            return Ok(None);
        };
        let resealed = cipher.reseal(&sealed, id.as_bytes());
        if let Resealed::Rewritten(new) = &resealed {
            let txn = db.begin_write().await?;
            let written = swap_credentials(&*txn, id, &sealed, new).await?;
            txn.commit().await?;
            if !written {
                continue;
            }
        }
        return Ok(Some(outcome(&resealed)));
    }
    Err(RotateError::Busy(format!(
        "connection {}",
        ids::encode(ids::Kind::Connection, id)
    )))
}

/// An endpoint's id, secret and previous secret.
type EndpointRow = (Uuid, Vec<u8>, Option<Vec<u8>>);

/// An endpoint's two values, looked at.
struct EndpointPlan {
    id: Uuid,
    secret: Vec<u8>,
    previous: Option<Vec<u8>>,
    new_secret: Resealed,
    new_previous: Option<Resealed>,
}

impl EndpointPlan {
    fn new(cipher: &Cipher, (id, secret, previous): EndpointRow) -> Self {
        let new_secret = cipher.reseal(&secret, id.as_bytes());
        let new_previous = previous.as_ref().map(|p| cipher.reseal(p, id.as_bytes()));
        Self {
            id,
            secret,
            previous,
            new_secret,
            new_previous,
        }
    }

    fn needs_write(&self) -> bool {
        matches!(self.new_secret, Resealed::Rewritten(_))
            || matches!(self.new_previous, Some(Resealed::Rewritten(_)))
    }

    /// Writes both values (each resealed or as it was) if the row still holds both as read.
    async fn swap(&self, db: &impl ConnectionTrait) -> Result<bool, DbErr> {
        let chosen = |old: &Vec<u8>, new: &Resealed| match new {
            Resealed::Rewritten(new) => new.clone(),
            _ => old.clone(),
        };
        let mut update = webhook_endpoint::Entity::update_many()
            .col_expr(
                webhook_endpoint::Column::Secret,
                Expr::value(chosen(&self.secret, &self.new_secret)),
            )
            .filter(webhook_endpoint::Column::Id.eq(self.id))
            .filter(webhook_endpoint::Column::Secret.eq(self.secret.clone()));
        update = match (&self.previous, &self.new_previous) {
            (Some(previous), Some(new)) => update
                .col_expr(
                    webhook_endpoint::Column::PreviousSecret,
                    Expr::value(chosen(previous, new)),
                )
                .filter(webhook_endpoint::Column::PreviousSecret.eq(previous.clone())),
            _ => update.filter(webhook_endpoint::Column::PreviousSecret.is_null()),
        };
        Ok(update.exec(db).await?.rows_affected == 1)
    }

    fn count(&self, report: &mut Report) {
        let name = || {
            format!(
                "webhook endpoint {}",
                ids::encode(ids::Kind::WebhookEndpoint, self.id)
            )
        };
        report
            .webhook_secrets
            .count(outcome(&self.new_secret), || format!("{} secret", name()));
        if let Some(previous) = &self.new_previous {
            report
                .previous_webhook_secrets
                .count(outcome(previous), || format!("{} previous secret", name()));
        }
    }
}

/// Endpoints' ids and sealed values, by id.
fn endpoints() -> sea_orm::Select<webhook_endpoint::Entity> {
    webhook_endpoint::Entity::find()
        .select_only()
        .column(webhook_endpoint::Column::Id)
        .column(webhook_endpoint::Column::Secret)
        .column(webhook_endpoint::Column::PreviousSecret)
        .order_by_asc(webhook_endpoint::Column::Id)
}

async fn webhook_secrets(
    db: &Db,
    cipher: &Cipher,
    batch: u64,
    report: &mut Report,
) -> Result<(), RotateError> {
    let mut after: Option<Uuid> = None;
    loop {
        let mut select = endpoints().limit(batch);
        if let Some(after) = after {
            select = select.filter(webhook_endpoint::Column::Id.gt(after));
        }
        let rows = select.into_tuple::<EndpointRow>().all(db.conn()).await?;
        let Some((last, _, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(*last);
        let plans: Vec<EndpointPlan> = rows
            .into_iter()
            .map(|row| EndpointPlan::new(cipher, row))
            .collect();
        let mut written = vec![true; plans.len()];
        if plans.iter().any(EndpointPlan::needs_write) {
            let txn = db.begin_write().await?;
            for (plan, written) in plans.iter().zip(&mut written) {
                *written = !plan.needs_write() || plan.swap(&*txn).await?;
            }
            txn.commit().await?;
        }
        for (plan, written) in plans.iter().zip(written) {
            if written {
                plan.count(report);
            } else if let Some(plan) = endpoint_again(db, cipher, plan.id).await? {
                plan.count(report);
            }
        }
    }
}

/// One endpoint, read and swapped until the swap holds; `None` once it is deleted.
async fn endpoint_again(
    db: &Db,
    cipher: &Cipher,
    id: Uuid,
) -> Result<Option<EndpointPlan>, RotateError> {
    for _ in 0..ATTEMPTS {
        let Some(row) = endpoints()
            .filter(webhook_endpoint::Column::Id.eq(id))
            .into_tuple::<EndpointRow>()
            .one(db.conn())
            .await?
        else {
            return Ok(None);
        };
        let plan = EndpointPlan::new(cipher, row);
        if plan.needs_write() {
            let txn = db.begin_write().await?;
            let written = plan.swap(&*txn).await?;
            txn.commit().await?;
            if !written {
                continue;
            }
        }
        return Ok(Some(plan));
    }
    Err(RotateError::Busy(format!(
        "webhook endpoint {}",
        ids::encode(ids::Kind::WebhookEndpoint, id)
    )))
}
