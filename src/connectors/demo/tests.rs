//! The demo connector against a real database: generations, writes, simulated faults, and
//! the remote shared by every handle on the database.

use super::*;
use crate::{
    accounts,
    catalog::Deployment,
    config::Config,
    connections::{self, ConnectRequest},
    connectors::{WriteOperation, http::Outbound},
    crypto::Cipher,
    customers::{self, NewCustomer},
};

/// A database with one account and customer, for connections to hang off.
struct Demo {
    db: Db,
    config: Config,
    account_id: Uuid,
    customer_id: Uuid,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("demo.db").display());
        let db = Db::connect(&config).await.unwrap();
        db.migrate().await.unwrap();
        let account_id = accounts::create_account(&db, "Acme", 100)
            .await
            .unwrap()
            .account
            .id;
        let customer = NewCustomer {
            name: "Plant".into(),
            external_id: None,
        };
        let customer_id = customers::create(&db, account_id, customer)
            .await
            .unwrap()
            .id;
        Self {
            db,
            config,
            account_id,
            customer_id,
            _dir: dir,
        }
    }

    /// A new demo connection (not probed) and its connector.
    async fn connect(&self, scale: u64, simulate: &str) -> (Uuid, DemoConnector) {
        let credentials = json!({ "api_key": "k", "scale": scale, "simulate": simulate });
        let request = ConnectRequest {
            max_live: None,
            customer_id: self.customer_id,
            system_key: "demo".into(),
            deployment: Deployment::Cloud,
            label: None,
            credentials: credentials.clone(),
            sync_interval_minutes: None,
            webhook_event_types: None,
            metadata: None,
            validate: false,
        };
        let (model, _) = connections::connect(
            &self.db,
            &Cipher::new(&[7; 32]),
            &Outbound::new(false),
            self.account_id,
            Duration::from_secs(3600),
            request,
        )
        .await
        .unwrap();
        let connector = DemoConnector::new(&self.db, model.id, credentials.as_object().unwrap());
        (model.id, connector)
    }

    /// Another process's handle on the database: a pool of its own.
    async fn other_process(&self) -> Db {
        Db::connect(&self.config).await.unwrap()
    }

    async fn count(&self, table: &str) -> i64 {
        use sea_orm::ConnectionTrait as _;
        let sql = format!("SELECT count(*) AS n FROM {table}");
        self.db
            .conn()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                sql,
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap()
    }
}

async fn read_all(
    connector: &DemoConnector,
    entity: EntityType,
    since: Option<String>,
) -> (Vec<RemoteRecord>, String) {
    let mut request = ReadRequest {
        modified_since: since,
        page_size: 37,
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = connector.read_page(entity, &request).await.unwrap();
        all.extend(page.records);
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return (all, page.high_water_mark.unwrap()),
        }
    }
}

fn keys(records: &[RemoteRecord]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

#[tokio::test]
async fn full_then_incremental_reads_follow_the_generations() {
    let demo = Demo::new().await;
    let (_, connector) = demo.connect(1000, "none").await;
    connector.begin_sync().await.unwrap();
    let (first, mark) = read_all(&connector, EntityType::Asset, None).await;
    assert_eq!(first.len(), 1000);
    let (again, _) = read_all(&connector, EntityType::Asset, None).await;
    assert_eq!(
        first.iter().map(|r| &r.data).collect::<Vec<_>>(),
        again.iter().map(|r| &r.data).collect::<Vec<_>>()
    );

    connector.begin_sync().await.unwrap();
    let (changes, _) = read_all(&connector, EntityType::Asset, Some(mark)).await;
    let deleted = changes.iter().filter(|r| r.data["deleted"] == true).count();
    assert!(
        (5..=40).contains(&changes.len()),
        "about 1 % changed: {}",
        changes.len()
    );
    assert!(
        changes
            .iter()
            .any(|r| r.key == "AST-001001" || r.key == "AST-001002"),
        "additions"
    );
    let (full, _) = read_all(&connector, EntityType::Asset, None).await;
    assert_eq!(full.len(), 1000 + 2 - deleted);
}

#[test]
fn malformed_records_are_refused_by_the_mapping() {
    assert!(
        unify(EntityType::Asset, &json!({ "id": "AST-1" }))
            .unwrap_err()
            .contains("name")
    );
    assert!(unify(EntityType::WorkOrder, &json!("text")).is_err());
    let asset = unify(
        EntityType::Asset,
        &json!({ "name": "Pump", "site_id": "SITE-000001" }),
    )
    .unwrap();
    assert_eq!(asset["siteKey"], "SITE-000001");
}

#[tokio::test]
async fn simulated_faults() {
    let demo = Demo::new().await;
    let (_, expired) = demo.connect(1, "auth_expired").await;
    assert!(matches!(
        expired.check().await,
        Err(ConnectorError::AuthRejected(_))
    ));
    let (_, offline) = demo.connect(1, "offline").await;
    assert!(matches!(
        offline.check().await,
        Err(ConnectorError::Unreachable(_))
    ));
    let (_, limited) = demo.connect(1, "rate_limited").await;
    assert!(limited.check().await.is_ok());
    assert!(matches!(
        limited.check().await,
        Err(ConnectorError::RateLimited { .. })
    ));
    let (_, flaky) = demo.connect(1, "flaky").await;
    let failures = futures_util::future::join_all((0..20).map(|_| flaky.check())).await;
    assert_eq!(failures.iter().filter(|r| r.is_err()).count(), 2);
}

#[tokio::test]
async fn writes_report_per_record_and_show_up_in_reads() {
    let demo = Demo::new().await;
    let (_, connector) = demo.connect(10, "none").await;
    let outcomes = connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[
                json!({"name": "New pump"}),
                json!({"name": "reject"}),
                json!(5),
                json!({"name": "Second pump"}),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcomes[0], Ok("AST-W000001".to_owned()));
    assert!(outcomes[1].is_err() && outcomes[2].is_err());
    assert_eq!(outcomes[3], Ok("AST-W000002".to_owned()));
    let (all, _) = read_all(&connector, EntityType::Asset, None).await;
    assert_eq!(all.len(), 12);
    assert!(
        connector
            .write_batch(EntityType::Site, WriteOperation::Create, &[json!({})])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn updates_and_deletes_replace_generated_records_in_full_and_incremental_reads() {
    let demo = Demo::new().await;
    let (_, connector) = demo.connect(100, "none").await;
    connector.begin_sync().await.unwrap();
    let (_, mark) = read_all(&connector, EntityType::WorkOrder, None).await;
    let write = async |operation, record| {
        let outcomes = connector
            .write_batch(EntityType::WorkOrder, operation, &[record])
            .await
            .unwrap();
        outcomes.into_iter().next().unwrap().unwrap()
    };
    write(
        WriteOperation::Update,
        json!({"key": "WO-000040", "title": "Renamed"}),
    )
    .await;
    write(WriteOperation::Delete, json!({"key": "WO-000041"})).await;
    let created = write(WriteOperation::Create, json!({"title": "New"})).await;
    assert_eq!(created, "WO-W000003");

    let (full, _) = read_all(&connector, EntityType::WorkOrder, None).await;
    assert_eq!(full.len(), 100, "one deleted, one created");
    let renamed = full.iter().find(|r| r.key == "WO-000040").unwrap();
    assert_eq!(renamed.data["title"], "Renamed");
    assert!(!keys(&full).contains(&"WO-000041"));
    assert_eq!(keys(&full).last(), Some(&"WO-W000003"));

    let (changes, next_mark) = read_all(&connector, EntityType::WorkOrder, Some(mark)).await;
    assert_eq!(keys(&changes), ["WO-000040", "WO-000041", "WO-W000003"]);
    assert_eq!(changes[1].data["deleted"], true);
    let (none, _) = read_all(&connector, EntityType::WorkOrder, Some(next_mark)).await;
    assert!(none.is_empty(), "{:?}", keys(&none));
}

#[tokio::test]
async fn the_remote_survives_its_connector_and_is_shared_by_every_process() {
    let demo = Demo::new().await;
    let (id, connector) = demo.connect(10, "none").await;
    connector.begin_sync().await.unwrap();
    connector.begin_sync().await.unwrap();
    let created = connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[json!({"name": "Pump"})],
        )
        .await
        .unwrap();
    assert_eq!(created[0], Ok("AST-W000001".to_owned()));
    drop(connector);

    let other = demo.other_process().await;
    let credentials = json!({ "api_key": "k", "scale": 10 });
    let again = DemoConnector::new(&other, id, credentials.as_object().unwrap());
    let (all, mark) = read_all(&again, EntityType::Asset, None).await;
    assert!(
        mark.starts_with("g1."),
        "the second session's generation: {mark}"
    );
    assert!(keys(&all).contains(&"AST-W000001"));
    let next = again
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[json!({"name": "Another pump"})],
        )
        .await
        .unwrap();
    assert_eq!(next[0], Ok("AST-W000002".to_owned()), "numbers go on");
}

/// Reads add no query per record: one a pass for a connection never written, and one a page
/// (one more where the generated records end) for one that was.
#[tokio::test]
async fn reads_cost_one_query_a_pass_or_a_page() {
    let demo = Demo::new().await;
    let (id, writer) = demo.connect(1000, "none").await;
    let mut db = demo.other_process().await;
    let statements = prometheus::IntCounter::new("statements", "statements").unwrap();
    db.count_statements(statements.clone());
    let credentials = json!({ "api_key": "k", "scale": 1000 });
    let reader = DemoConnector::new(&db, id, credentials.as_object().unwrap());

    let (all, _) = read_all(&reader, EntityType::Asset, None).await;
    let pages = all.len().div_ceil(37) as u64;
    assert_eq!(pages, 28);
    assert_eq!(
        statements.get(),
        1,
        "never written: the pass's snapshot only"
    );

    writer
        .write_batch(
            EntityType::Asset,
            WriteOperation::Update,
            &[json!({"key": "AST-000500", "name": "Renamed"})],
        )
        .await
        .unwrap();
    statements.reset();
    let (all, _) = read_all(&reader, EntityType::Asset, None).await;
    assert_eq!(all.len(), 1000);
    assert_eq!(statements.get(), 1 + pages + 1);
}

#[tokio::test]
async fn concurrent_writers_never_share_a_key() {
    let demo = Demo::new().await;
    let (id, _) = demo.connect(10, "none").await;
    let credentials = json!({ "api_key": "k", "scale": 10 });
    let writers: Vec<_> = (0..4)
        .map(|_| DemoConnector::new(&demo.db, id, credentials.as_object().unwrap()))
        .collect();
    let batch: Vec<Value> = (0..5).map(|n| json!({"name": format!("P{n}")})).collect();
    let outcomes = futures_util::future::join_all(
        writers
            .iter()
            .map(|w| w.write_batch(EntityType::Asset, WriteOperation::Create, &batch)),
    )
    .await;
    let mut keys: Vec<String> = outcomes
        .into_iter()
        .flat_map(|o| o.unwrap())
        .map(Result::unwrap)
        .collect();
    keys.sort();
    let expected: Vec<String> = (1..=20).map(|n| format!("AST-W{n:06}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn only_a_live_connection_has_a_remote() {
    let demo = Demo::new().await;
    let credentials = json!({ "api_key": "k", "scale": 10, "simulate": "rate_limited" });
    // The probe of a connect: its connection does not exist yet.
    let probe = DemoConnector::new(&demo.db, Uuid::now_v7(), credentials.as_object().unwrap());
    assert!(probe.check().await.is_ok());
    assert!(matches!(
        probe.check().await,
        Err(ConnectorError::RateLimited { .. })
    ));
    assert!(matches!(
        probe.begin_sync().await,
        Err(ConnectorError::AuthRejected(_))
    ));
    assert_eq!(demo.count("demo_remotes").await, 0);

    let (id, connector) = demo.connect(10, "none").await;
    connector.begin_sync().await.unwrap();
    connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[json!({"name": "P"})],
        )
        .await
        .unwrap();
    assert_eq!(demo.count("demo_remotes").await, 1);
    assert_eq!(demo.count("demo_remote_records").await, 1);
    connections::disconnect(&demo.db, demo.account_id, id)
        .await
        .unwrap();
    assert_eq!(demo.count("demo_remotes").await, 0);
    assert_eq!(demo.count("demo_remote_records").await, 0);
    assert!(matches!(
        connector
            .write_batch(
                EntityType::Asset,
                WriteOperation::Create,
                &[json!({"name": "P"})]
            )
            .await,
        Err(ConnectorError::AuthRejected(_))
    ));
    assert_eq!(
        demo.count("demo_remotes").await,
        0,
        "nothing after the disconnect"
    );
}

#[test]
fn continuation_tokens_of_earlier_releases_still_parse() {
    let old = Cursor::parse("g4:o301").unwrap();
    assert_eq!(
        (old.generation, old.writes, old.at),
        (4, 0, Position::Generated(301))
    );
    let new = Cursor::parse("g4.w7:c12").unwrap();
    assert_eq!(
        (new.generation, new.writes, new.at),
        (4, 7, Position::Created(12))
    );
    assert_eq!(new.to_string(), "g4.w7:c12");
    assert!(Cursor::parse("g4.w7:x12").is_err());
}
