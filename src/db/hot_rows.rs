//! Turns at a hot row: at most [`PER_ROW`] statements of this process that lock one row
//! (an account's, for its credit movements) are at the database at once; the others wait
//! here, in order, until one of those has committed.
//!
//! Why: on PostgreSQL, transactions that wait for one row's lock queue in the server, and
//! each hand-over of the lock wakes a backend that must take the row's tuple lock, wait for
//! the holder's transaction, re-read the row as updated and check it again. Measured with
//! `pgbench` on this statement alone (a credit movement and its commit, one account, the
//! 2-core machine): one or two sessions at a time ran 2,600–4,300 movements a second, three
//! to ten 1,200–2,500. Waiting here costs a task switch instead, and the server keeps a short
//! queue. Other processes have their own turns, so the bound is per process, not a lock:
//! the row's lock in the database is still what orders the movements.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Statements of one row at the database at once, from this process: one runs while the
/// next waits for its lock, ready the moment it is released.
pub const PER_ROW: usize = 2;

/// The rows with statements in turn or waiting, each with its turns.
#[derive(Default)]
pub struct HotRows {
    rows: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

/// A turn at a row, held until the statement has committed (or failed); dropping it lets
/// the next one go.
pub struct Turn {
    permit: Option<OwnedSemaphorePermit>,
    row: Uuid,
    rows: Arc<HotRows>,
}

impl HotRows {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Semaphore>>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a turn at `row` (first come, first served).
    pub async fn turn(self: &Arc<Self>, row: Uuid) -> Turn {
        let turns = self
            .rows()
            .entry(row)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ROW)))
            .clone();
        // Never closed.
        let permit = turns.acquire_owned().await.ok();
        Turn {
            permit,
            row,
            rows: self.clone(),
        }
    }

    /// Rows with a turn taken or awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.rows().len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut rows = self.rows.rows();
        // Gone once no one holds or awaits a turn (each holds a reference; new ones are
        // taken under this lock).
        if rows
            .get(&self.row)
            .is_some_and(|turns| Arc::strong_count(turns) == 1)
        {
            rows.remove(&self.row);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use uuid::Uuid;

    use super::{HotRows, PER_ROW};

    #[tokio::test]
    async fn at_most_per_row_turns_at_one_row_and_others_rows_are_not_held() {
        let rows = Arc::new(HotRows::default());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut held = Vec::new();
        for _ in 0..PER_ROW {
            held.push(rows.turn(a).await);
        }
        let waiting = tokio::spawn({
            let rows = rows.clone();
            async move { rows.turn(a).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third turn at one row waits");
        let other = tokio::time::timeout(Duration::from_secs(5), rows.turn(b))
            .await
            .expect("another row's turn is not held up");
        drop(other);
        assert_eq!(rows.len(), 1, "a row without turns is forgotten");
        drop(held.pop());
        let third = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting turn goes once one is given back")
            .expect("no panic");
        drop(third);
        drop(held);
        assert_eq!(rows.len(), 0, "every row forgotten once no turn is held");
    }
}
