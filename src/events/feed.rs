//! The live event feed. One dispatcher per process reads newly committed events from the
//! table (the source of truth) and broadcasts them in memory to the subscribers of each event's
//! account (one channel per account, so an event wakes only those). It wakes
//! on a commit in this process, on a PostgreSQL `NOTIFY` from any process, and once a second
//! as a safety net, and always reads from its last position, so a missed wake-up loses
//! nothing. A subscriber that falls behind the broadcast catches up from the table. While no
//! one subscribes in the process, it only follows the end of the log (`skip_ahead`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::Stream;
use sea_orm::{EntityTrait, QuerySelect};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Filter, LogPosition, after_in_order, end_of_log, read_after};
use crate::{db::Db, error::AppResult, notify::Notice};
use entity::event;
use uuid::Uuid;

pub const CHANNEL: &str = "millwright_events";

/// The payload on [`CHANNEL`] that says a dispatcher committed deliveries for the delivery
/// workers to claim (rather than passing them to its own process's senders); an empty one
/// says that events may have been committed.
pub const DELIVERIES_QUEUED: &str = "deliveries";
const READ_BATCH: u64 = 1000;
/// Events queued for one subscriber; beyond that its reader waits (and may lag the broadcast).
const SUBSCRIBER_BUFFER: usize = 64;
const POLL: Duration = Duration::from_secs(1);
/// How long the feed waits after a wake-up before it reads (as the webhook dispatcher does).
const LINGER: Duration = Duration::from_millis(5);

pub type Shared = Arc<event::Model>;

#[derive(Clone)]
pub struct EventFeed {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// One broadcast per account with subscribers, so an event wakes only its account's.
    accounts: std::sync::Mutex<HashMap<Uuid, broadcast::Sender<Shared>>>,
    capacity: usize,
    last: std::sync::Mutex<LogPosition>,
    /// Signalled by this process's commits and by the `event-listener` worker.
    wake: Arc<Notify>,
}

impl EventFeed {
    /// Starts at the current end of the log: subscribers replay older events from the table.
    pub async fn new(db: Db, capacity: usize) -> AppResult<Self> {
        let last = end_of_log(db.conn()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                accounts: std::sync::Mutex::default(),
                capacity: capacity.max(1),
                last: std::sync::Mutex::new(last),
                wake: db.commits(),
                db,
            }),
        })
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, broadcast::Sender<Shared>>> {
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of the account's live events (its channel is made on first use).
    fn subscribe(&self, account_id: Uuid) -> broadcast::Receiver<Shared> {
        self.accounts()
            .entry(account_id)
            .or_insert_with(|| broadcast::channel(self.inner.capacity).0)
            .subscribe()
    }

    /// Hands an event to its account's subscribers; forgets an account nobody listens to.
    fn publish(&self, event: Shared) {
        let mut accounts = self.accounts();
        if let Some(sender) = accounts.get(&event.account_id) {
            let account_id = event.account_id;
            if sender.send(event).is_err() {
                accounts.remove(&account_id);
            }
        }
    }

    /// Dispatches until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = &self.inner.wake;
        loop {
            if let Err(err) = self.dispatch().await {
                tracing::error!(error = %err, "event feed: reading new events failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            // The commits of the next few milliseconds are read with this one's: under a
            // burst of commits one read serves many, not one each.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LINGER) => {}
            }
        }
    }

    /// PostgreSQL: LISTENs for other processes' commits on `url` until shutdown; after a
    /// dropped connection it reconnects and wakes the dispatcher, which reads whatever was
    /// committed meanwhile from the table. Ends early only if the listening task died.
    pub async fn listen(self, url: String, shutdown: CancellationToken) -> Result<(), String> {
        let mut heard = crate::notify::listen(url, CHANNEL, shutdown.clone());
        let notifier = self.inner.db.notifier();
        while let Some(heard) = heard.recv().await {
            match heard {
                // Deliveries a dispatcher left to the claimers (of any process: this one's
                // delivery workers may be the ones serving their endpoint).
                crate::notify::Heard::Payload(payload) if payload == DELIVERIES_QUEUED => {
                    notifier.notify(Notice::DeliveriesQueued);
                }
                crate::notify::Heard::Payload(_) => self.inner.db.wake_readers(),
                crate::notify::Heard::Listening => {
                    // Listening again: whatever was said meanwhile is looked for now.
                    self.inner.db.wake_readers();
                    notifier.notify(Notice::DeliveriesQueued);
                }
            }
        }
        if shutdown.is_cancelled() {
            Ok(())
        } else {
            Err("the LISTEN task ended".to_owned())
        }
    }

    async fn dispatch(&self) -> AppResult<()> {
        if self.skip_ahead().await? {
            return Ok(());
        }
        let db = self.inner.db.conn();
        loop {
            let last = self.position();
            let rows = after_in_order(db.get_database_backend(), event::Entity::find(), last)
                .limit(READ_BATCH)
                .all(db)
                .await?;
            let done = (rows.len() as u64) < READ_BATCH;
            for row in rows {
                // Stored before publishing: a subscriber that starts after this reads it as
                // its starting point, one that started before receives the event.
                *self.last() = LogPosition::of(&row);
                self.publish(Arc::new(row));
            }
            if done {
                return Ok(());
            }
        }
    }

    /// With nobody subscribed in this process, moves the position to the end of the log
    /// without reading the events (one row, where the feed would read every event of every
    /// account, only to hand them to no one); true when it did.
    ///
    /// Why no subscriber misses an event: a subscriber takes its channel (under the accounts'
    /// lock) before it notes the position. One that took it before this looks at the
    /// channels keeps the feed reading from where it stood. One that takes it after notes
    /// the position set here, under the same lock, and every event after that is read and
    /// handed on as usual; the events up to it were committed before the end of the log was
    /// read, so before that subscriber came.
    async fn skip_ahead(&self) -> AppResult<bool> {
        if !self.unsubscribed() {
            return Ok(false);
        }
        let end = end_of_log(self.inner.db.conn()).await?;
        let mut accounts = self.accounts();
        if !none_subscribed(&mut accounts) {
            return Ok(false);
        }
        let mut last = self.last();
        if end > *last {
            *last = end;
        }
        Ok(true)
    }

    /// Whether no account has a subscriber here (forgetting the channels nobody holds).
    fn unsubscribed(&self) -> bool {
        none_subscribed(&mut self.accounts())
    }

    /// The position of the last event handed to subscribers: a reader that notes it before
    /// reading some state, then streams from it, misses no event committed in between.
    pub fn position(&self) -> LogPosition {
        *self.last()
    }

    fn last(&self) -> std::sync::MutexGuard<'_, LogPosition> {
        self.inner.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events matching `filter`: those after `after` from the table first (when given), then
    /// live ones; no gap, no duplicate, in position order.
    pub fn stream(
        &self,
        filter: Filter,
        after: Option<LogPosition>,
    ) -> impl Stream<Item = AppResult<Shared>> + use<> {
        let (tx, mut rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(pump(self.clone(), filter, after, tx));
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

/// Forgets the channels nobody holds; whether none is left.
fn none_subscribed(accounts: &mut HashMap<Uuid, broadcast::Sender<Shared>>) -> bool {
    accounts.retain(|_, sender| sender.receiver_count() > 0);
    accounts.is_empty()
}

type Outbox = mpsc::Sender<AppResult<Shared>>;

/// Feeds one subscriber until it goes away (noticed at once, not at the next matching event:
/// a subscription whose filter rarely matches would otherwise linger).
async fn pump(feed: EventFeed, filter: Filter, after: Option<LogPosition>, tx: Outbox) {
    let mut live = feed.subscribe(filter.account_id);
    let mut last = match after {
        Some(after) => after,
        None => feed.position(),
    };
    if after.is_some() && catch_up(&feed, &filter, &mut last, &tx).await.is_err() {
        return;
    }
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            () = tx.closed() => return,
        };
        match received {
            Ok(event) if LogPosition::of(&event) <= last => {}
            Ok(event) => {
                last = LogPosition::of(&event);
                if filter.matches(&event) && tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                live = feed.subscribe(filter.account_id);
                if catch_up(&feed, &filter, &mut last, &tx).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the stored events after `last` until the table has no more. `Err` = subscriber gone.
async fn catch_up(
    feed: &EventFeed,
    filter: &Filter,
    last: &mut LogPosition,
    tx: &Outbox,
) -> Result<(), ()> {
    loop {
        let rows = match read_after(feed.inner.db.conn(), filter, *last, READ_BATCH).await {
            Ok(rows) => rows,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return Err(());
            }
        };
        let done = (rows.len() as u64) < READ_BATCH;
        for row in rows {
            *last = LogPosition::of(&row);
            tx.send(Ok(Arc::new(row))).await.map_err(|_| ())?;
        }
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, events::EventType};

    /// A migrated SQLite database in a temporary directory (gone with the directory).
    async fn migrated_sqlite() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("feed.db").display());
        let db = Db::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_dropped_subscription_stops_listening_at_once() {
        let (_dir, db) = migrated_sqlite().await;
        let feed = EventFeed::new(db, 16).await.unwrap();
        let account_id = Uuid::now_v7();
        let listeners = || {
            feed.accounts()
                .get(&account_id)
                .map_or(0, broadcast::Sender::receiver_count)
        };
        // A filter no event will ever match: only the subscriber's going away ends it.
        let filter = Filter {
            account_id,
            types: Some(vec![EventType::SystemError]),
            ..Filter::default()
        };
        let stream = feed.stream(filter, None);
        for _ in 0..100 {
            if listeners() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(listeners(), 1);
        drop(stream);
        for _ in 0..100 {
            if listeners() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(listeners(), 0, "the pump ended with its subscriber");
    }

    /// With nobody subscribed the feed only follows the end of the log; a subscriber that
    /// comes later gets what is committed after it came, and nothing from before.
    #[tokio::test]
    async fn an_idle_feed_follows_the_end_and_a_later_subscriber_gets_what_follows() {
        use futures_util::StreamExt as _;
        let (_dir, db) = migrated_sqlite().await;
        let account = crate::accounts::create_account(&db, "A", 0)
            .await
            .unwrap()
            .account;
        let feed = EventFeed::new(db.clone(), 16).await.unwrap();
        let record = async |n: u32| {
            let txn = db.begin_write().await.unwrap();
            let event = crate::events::NewEvent {
                account_id: account.id,
                customer_id: None,
                connection_id: None,
                event_type: EventType::SystemError,
                data: serde_json::json!({ "n": n }),
            };
            crate::events::record(&*txn, vec![event]).await.unwrap();
            txn.commit().await.unwrap();
        };
        record(1).await;
        feed.dispatch().await.unwrap();
        assert_eq!(feed.position(), end_of_log(db.conn()).await.unwrap());

        let filter = Filter {
            account_id: account.id,
            ..Filter::default()
        };
        let mut stream = Box::pin(feed.stream(filter, None));
        for _ in 0..100 {
            if !feed.unsubscribed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!feed.unsubscribed());
        record(2).await;
        feed.dispatch().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream")
            .expect("no error");
        assert_eq!(got.data["n"], 2, "{got:?}");
    }
}
