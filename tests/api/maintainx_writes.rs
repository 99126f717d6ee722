//! MaintainX work order writes against its fixture, connector to server: creates stamped
//! with their idempotency key, per-record refusals, updates through the status endpoint,
//! deletes, stops (429 mid-batch, revoked credentials, 5xx), and a resend after a crash
//! that creates nothing twice.

use std::time::Duration;

use chrono::Utc;
use millwright::{
    catalog::{self, EntityType},
    connectors::{
        Connector, ConnectorError, OUTCOME_UNKNOWN, WriteOperation, http::Outbound,
        maintainx::MaintainX,
    },
};
use millwright_fixtures::{
    API_KEY, Fixture, Kind,
    data::{Sizes, WoState},
};
use serde_json::{Value, json};

use crate::connectors::{write_records as records, write_work_orders as write};

/// Work orders in the small dataset: the next one created is number 44.
const WORK_ORDERS: usize = 43;

async fn fixture() -> Fixture {
    Fixture::start(Kind::MaintainX, Sizes::small()).await
}

fn connector(fixture: &Fixture) -> MaintainX {
    let credentials = json!({ "api_key": API_KEY, "base_url": fixture.base_url() });
    MaintainX::new(credentials.as_object().unwrap(), Outbound::new(true))
}

/// A work order as `GET /workorders/{id}` answers it (with its `externalData`).
async fn read(fixture: &Fixture, id: &str) -> Value {
    let url = format!("{}/workorders/{id}", fixture.base_url());
    let reply = reqwest::Client::new()
        .get(url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    reply.json::<Value>().await.unwrap()["workOrder"].clone()
}

fn count(fixture: &Fixture) -> usize {
    fixture.remote.data().work_orders.len()
}

fn requests(fixture: &Fixture, prefix: &str) -> usize {
    let requests = fixture.remote.requests();
    requests.iter().filter(|r| r.starts_with(prefix)).count()
}

#[tokio::test]
async fn maintainx_creates_are_stamped_and_refusals_stay_per_record() {
    let fixture = fixture().await;
    let connector = connector(&fixture);
    let batch = records(
        "mw-create",
        &[
            json!({ "title": "Replace seal", "instructions": "Drain first", "priority": "URGENT",
                    "assetKey": "5", "dueAt": "2026-02-01T09:00:00+01:00",
                    "status": "IN_PROGRESS", "scheduledAt": null }),
            json!({ "title": "", "priority": "LOW" }),
            json!({ "title": "Somewhere", "siteKey": "1" }),
            json!({ "title": "Unknown asset", "assetKey": "999" }),
            json!({ "title": "Not needed", "status": "CANCELLED" }),
        ],
    );
    let reply = write(&connector, WriteOperation::Create, &batch, None).await;
    assert!(reply.stopped.is_none(), "{reply:?}");
    let outcomes = reply.outcomes;
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], Ok("44".to_owned()));
    let refusal = |i: usize| outcomes[i].clone().unwrap_err();
    assert!(refusal(1).contains("title is required"), "{outcomes:?}");
    assert!(refusal(2).contains("no sites"), "{outcomes:?}");
    assert!(
        refusal(3).contains("asset 999 does not exist"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[4], Ok("45".to_owned()));
    assert_eq!(count(&fixture), WORK_ORDERS + 2);

    let seal = fixture.remote.data().work_orders[&44].clone();
    assert_eq!(seal.title, "Replace seal");
    assert_eq!(seal.description, "Drain first");
    assert_eq!(seal.priority, 3, "URGENT is MaintainX's HIGH");
    assert_eq!((seal.asset, seal.state), (5, WoState::InProgress));
    assert_eq!(seal.due.to_rfc3339(), "2026-02-01T08:00:00+00:00");
    assert_eq!(
        fixture.remote.data().work_orders[&45].state,
        WoState::Cancelled,
        "CANCELLED is the status endpoint's CANCELED"
    );
    let stamp = &read(&fixture, "44").await["externalData"];
    assert_eq!(stamp, &json!({ "millwrightIdempotencyKey": "mw-create-0" }));
    assert_eq!(
        read(&fixture, "45").await["externalData"]["millwrightIdempotencyKey"],
        "mw-create-4"
    );
    assert_eq!(
        requests(&fixture, "POST /v1/workorders"),
        4,
        "one per sent record"
    );
    assert_eq!(
        requests(&fixture, "PATCH /v1/workorders/44/status"),
        1,
        "a status other than OPEN goes through its endpoint"
    );
}

#[tokio::test]
async fn maintainx_updates_and_deletes_answer_per_record() {
    let fixture = fixture().await;
    let connector = connector(&fixture);
    let batch = records(
        "mw-update",
        &[
            json!({ "key": "7", "title": "Renamed", "status": "COMPLETED", "locationKey": "2" }),
            json!({ "key": "999", "title": "Nobody" }),
            json!({ "key": "3", "status": "ON_HOLD" }),
            json!({ "key": "pump-1", "title": "Not an id" }),
            json!({ "key": "8", "priority": "SUPER" }),
            json!({ "key": "9", "completedAt": "2026-01-01T00:00:00Z" }),
        ],
    );
    let reply = write(&connector, WriteOperation::Update, &batch, None).await;
    assert!(reply.stopped.is_none(), "{reply:?}");
    let outcomes = reply.outcomes;
    assert_eq!(outcomes[0], Ok("7".to_owned()));
    assert!(
        outcomes[1]
            .clone()
            .unwrap_err()
            .contains("Work Order Not Found"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Ok("3".to_owned()));
    assert!(outcomes[3].is_err() && outcomes[4].is_err() && outcomes[5].is_err());
    let (seven, three) = {
        let data = fixture.remote.data();
        (data.work_orders[&7].clone(), data.work_orders[&3].clone())
    };
    assert_eq!(
        (seven.title.as_str(), seven.state),
        ("Renamed", WoState::Completed)
    );
    assert!(seven.completed.is_some());
    assert_eq!(three.state, WoState::OnHold);
    assert_eq!(
        requests(&fixture, "PATCH /v1/workorders/3"),
        1,
        "a status alone is one request, to the status endpoint"
    );

    let gone = records("mw-delete", &[json!({ "key": "7" }), json!({ "key": "7" })]);
    let reply = write(&connector, WriteOperation::Delete, &gone, None).await;
    assert_eq!(reply.outcomes[0], Ok("7".to_owned()));
    assert!(reply.outcomes[1].is_err(), "deleted already: {reply:?}");
    assert_eq!(count(&fixture), WORK_ORDERS - 1);
    let resent = write(&connector, WriteOperation::Delete, &gone, Some(Utc::now())).await;
    assert_eq!(
        resent.outcomes,
        [Ok("7".to_owned()), Ok("7".to_owned())],
        "after an earlier attempt, a 404 is that attempt's deletion"
    );
    assert!(catalog::MAINTAINX.writes.contains(&(
        EntityType::WorkOrder,
        &[
            WriteOperation::Create,
            WriteOperation::Update,
            WriteOperation::Delete
        ][..]
    )));
}

#[tokio::test]
async fn maintainx_writes_stop_on_rate_limits_revoked_keys_and_faults() {
    let fixture = fixture().await;
    let connector = connector(&fixture);
    let batch = records(
        "mw-limited",
        &[
            json!({ "title": "First" }),
            json!({ "title": "Second" }),
            json!({ "title": "Third" }),
        ],
    );
    // Each request waits before it meets its fault; once the first work order exists, the
    // next request is answered 429.
    fixture.remote.slow_down(Some(Duration::from_millis(300)));
    let remote = fixture.remote.clone();
    let watcher = tokio::spawn(async move {
        while remote.data().work_orders.len() == WORK_ORDERS {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        remote.rate_limit(1, 30);
    });
    let reply = write(&connector, WriteOperation::Create, &batch, None).await;
    watcher.await.unwrap();
    fixture.remote.slow_down(None);
    assert_eq!(reply.outcomes, [Ok("44".to_owned())]);
    assert_eq!(
        reply.stopped,
        Some(ConnectorError::RateLimited {
            retry_after: Duration::from_secs(30)
        })
    );
    let rest = write(&connector, WriteOperation::Create, &batch[1..], None).await;
    assert_eq!(rest.outcomes, [Ok("45".to_owned()), Ok("46".to_owned())]);
    assert_eq!(count(&fixture), WORK_ORDERS + 3);

    fixture.remote.fail(1);
    let failed = write(&connector, WriteOperation::Create, &batch, None).await;
    assert!(failed.outcomes.is_empty());
    assert!(
        matches!(&failed.stopped, Some(ConnectorError::RemoteFault(m)) if m.contains("500")),
        "{failed:?}"
    );

    fixture.remote.revoke();
    for operation in [WriteOperation::Create, WriteOperation::Update] {
        let fields = [json!({ "key": "44", "title": "Again" })];
        let reply = write(&connector, operation, &records("mw-revoked", &fields), None).await;
        assert!(reply.outcomes.is_empty());
        assert!(
            matches!(reply.stopped, Some(ConnectorError::AuthRejected(_))),
            "{reply:?}"
        );
    }
    let resent = write(&connector, WriteOperation::Create, &batch, Some(Utc::now())).await;
    assert!(
        matches!(resent.stopped, Some(ConnectorError::AuthRejected(_))),
        "the lookup stops too: {resent:?}"
    );
    assert_eq!(count(&fixture), WORK_ORDERS + 3);
}

#[tokio::test]
async fn maintainx_resends_after_a_crash_create_nothing_twice() {
    let fixture = fixture().await;
    let connector = connector(&fixture);
    let batch = records(
        "mw-crash",
        &[
            json!({ "title": "One", "status": "ON_HOLD" }),
            json!({ "title": "Two" }),
            json!({ "title": "Three", "priority": "LOW" }),
        ],
    );
    let sent_since = Utc::now();
    // The earlier attempt sent the first two, then the process died.
    let first = write(&connector, WriteOperation::Create, &batch[..2], None).await;
    assert_eq!(first.outcomes, [Ok("44".to_owned()), Ok("45".to_owned())]);
    // Someone else creates a work order meanwhile; it has no stamp of ours.
    let other = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Create,
            &[json!({ "title": "Another's" })],
        )
        .await
        .unwrap();
    assert_eq!(other, [Ok("46".to_owned())]);
    fixture
        .remote
        .data()
        .work_orders
        .get_mut(&44)
        .unwrap()
        .state = WoState::Open;
    fixture.remote.clear_requests();

    let resent = write(&connector, WriteOperation::Create, &batch, Some(sent_since)).await;
    assert!(resent.stopped.is_none(), "{resent:?}");
    assert_eq!(
        resent.outcomes,
        [
            Ok("44".to_owned()),
            Ok("45".to_owned()),
            Ok("47".to_owned())
        ]
    );
    assert_eq!(
        count(&fixture),
        WORK_ORDERS + 4,
        "only the third was created"
    );
    assert_eq!(requests(&fixture, "POST /v1/workorders"), 1);
    assert!(
        fixture
            .remote
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v1/workorders?") && r.contains("sort=-createdAt")),
        "{:?}",
        fixture.remote.requests()
    );
    assert_eq!(
        fixture.remote.data().work_orders[&44].state,
        WoState::OnHold,
        "a found work order gets its status set again"
    );

    // Sent again in full: every record is found, nothing is created.
    let again = write(&connector, WriteOperation::Create, &batch, Some(sent_since)).await;
    assert_eq!(again.outcomes, resent.outcomes);
    assert_eq!(count(&fixture), WORK_ORDERS + 4);
    assert!(
        !again
            .outcomes
            .iter()
            .any(|o| o.as_ref().is_err_and(|e| e == OUTCOME_UNKNOWN))
    );
}
