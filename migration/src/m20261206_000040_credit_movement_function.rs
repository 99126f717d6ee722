//! PostgreSQL: a credit movement is one call of the function `millwright_move_credits`
//! (issue #20). It was one data-modifying `WITH` statement sent as text with its values
//! written in, so the server parsed, analysed and planned it at every connect and
//! disconnect (about a tenth of the CPU of a busy connect load); a PL/pgSQL function keeps
//! the plan of its statement for the session, and the call is a short statement to parse.
//!
//! The function applies the deltas to the account's pool (unconditionally: a movement the
//! pool cannot take fails on `accounts_credit_pool`, and nothing is committed), returns the
//! account's row as updated (none when there is no such account), and books the movement
//! from that row: the ledger row and the `credits.changed` event.
//!
//! The ledger row's id is a version 7 UUID of the time the statement holds the account's
//! row lock (milliseconds, then the microseconds within the millisecond in `rand_a`, then
//! the random half of a version 4 UUID, whose variant bits it keeps). The ledger is paged by
//! id: ids made under the lock follow the order in which the movements took place (a
//! movement waits for the commit of the one before it, far longer than a microsecond). The
//! event takes its position from `event_positions` and the transaction's id as `txid`, as
//! every event does on PostgreSQL. SQLite gets nothing here (the server books a movement
//! there with a conditional update and two inserts, under its one writer).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SIGNATURE: &str = "millwright_move_credits(uuid, bigint, bigint, text, bigint, uuid, \
                         uuid, text, uuid, text, timestamptz)";

const CREATE: &str = r"
CREATE OR REPLACE FUNCTION millwright_move_credits(
    p_account uuid, p_add_total bigint, p_add_used bigint, p_kind text, p_amount bigint,
    p_connection uuid, p_customer uuid, p_note text, p_event_id uuid, p_event_type text,
    p_occurred_at timestamptz
) RETURNS SETOF accounts LANGUAGE plpgsql AS $body$
BEGIN
    RETURN QUERY
    WITH acc AS (
        UPDATE accounts
           SET credits_total = credits_total + p_add_total,
               credits_used = credits_used + p_add_used
         WHERE id = p_account
        RETURNING *),
    clock AS (SELECT clock_timestamp() AS t FROM acc),
    ledger AS (
        INSERT INTO credit_ledger (id, account_id, kind, amount, balance_after, connection_id,
                                   note, created_at)
        SELECT encode(
                   substring(int8send(floor(extract(epoch FROM clock.t) * 1000)::bigint)
                             FROM 3 FOR 6)
                   || int2send((28672 + floor(extract(epoch FROM clock.t) * 1000000)::bigint
                                % 1000)::smallint)
                   || substring(uuid_send(gen_random_uuid()) FROM 9 FOR 8), 'hex')::uuid,
               acc.id, p_kind, p_amount, acc.credits_total - acc.credits_used, p_connection,
               p_note, clock.t
          FROM acc, clock),
    inserted AS (
        INSERT INTO events (position, id, account_id, customer_id, connection_id, event_type,
                            data, occurred_at, txid)
        SELECT nextval('event_positions'), p_event_id, acc.id, p_customer, p_connection,
               p_event_type,
               json_build_object('amount', p_amount,
                                 'available', acc.credits_total - acc.credits_used,
                                 'kind', p_kind),
               p_occurred_at, pg_current_xact_id()::text::bigint
          FROM acc)
    SELECT * FROM acc;
END
$body$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, CREATE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, &format!("DROP FUNCTION IF EXISTS {SIGNATURE}")).await
    }
}
