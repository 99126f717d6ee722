//! The real connectors (MaintainX, IBM Maximo, SAP S/4HANA, SAP ECC), each against its
//! protocol-faithful fixture server (`millwright-fixtures`): full and incremental syncs,
//! deletions, rejected credentials, rate limits, remote faults and the outbound guard;
//! writes back (SAP equipment, Maximo work orders) connector to fixture.

use millwright_fixtures::{
    API_KEY, Fixture, Kind, SAP_CLIENT, SAP_CLIENT_ID, SAP_CLIENT_SECRET, SAP_PASSWORD, SAP_USER,
    data::{Entity, Sizes},
};
use serde_json::{Value, json};

use crate::{
    harness::{TestApp, TestDb, error_code, setup, test_config, wait_until},
    sync::{entity, last_run, trigger},
};

/// One system under test and how its fixture is reached.
#[derive(Clone, Copy)]
struct System {
    kind: Kind,
    key: &'static str,
    deployment: &'static str,
    /// Records asked per page: SAP's asks for more than the server's page cap of 100, so
    /// windows are cut into `__next` pages.
    page_size: usize,
    /// The entities the connector reads, as the fixture names them.
    entities: &'static [(Entity, &'static str)],
    /// Text of the fixture's 500 body that must reach the run's error and `system.error`.
    fault_text: &'static str,
}

const WITHOUT_SITES: &[(Entity, &str)] = &[
    (Entity::Location, "LOCATION"),
    (Entity::Asset, "ASSET"),
    (Entity::WorkOrder, "WORK_ORDER"),
    (Entity::Part, "PART"),
    (Entity::PurchaseOrder, "PURCHASE_ORDER"),
    (Entity::Vendor, "VENDOR"),
    (Entity::User, "USER"),
];

const MAINTAINX: System = System {
    kind: Kind::MaintainX,
    key: "maintainx",
    deployment: "CLOUD",
    page_size: 20,
    entities: WITHOUT_SITES,
    fault_text: "Internal server error",
};

const MAXIMO: System = System {
    kind: Kind::Maximo,
    key: "ibm_maximo",
    deployment: "CLOUD",
    page_size: 20,
    entities: &[
        (Entity::Site, "SITE"),
        (Entity::Location, "LOCATION"),
        (Entity::Asset, "ASSET"),
        (Entity::WorkOrder, "WORK_ORDER"),
        (Entity::Part, "PART"),
        (Entity::PurchaseOrder, "PURCHASE_ORDER"),
        (Entity::Vendor, "VENDOR"),
        (Entity::User, "USER"),
    ],
    fault_text: "BMXAA4214E",
};

const SAP_ENTITIES: &[(Entity, &str)] = &[
    (Entity::Location, "LOCATION"),
    (Entity::Asset, "ASSET"),
    (Entity::WorkOrder, "WORK_ORDER"),
    (Entity::Part, "PART"),
    (Entity::PurchaseOrder, "PURCHASE_ORDER"),
    (Entity::Vendor, "VENDOR"),
];

const S4HANA: System = System {
    kind: Kind::SapS4Hana,
    key: "sap_s4hana",
    deployment: "CLOUD",
    page_size: 250,
    entities: SAP_ENTITIES,
    fault_text: "/IWBEP/CM_MGW_RT/020",
};

const ECC: System = System {
    kind: Kind::SapEcc,
    key: "sap_ecc",
    deployment: "ON_PREMISES",
    page_size: 250,
    entities: SAP_ENTITIES,
    fault_text: "/IWBEP/CM_MGW_RT/020",
};

/// More assets than SAP's page cap, so that windows and `__next` links both matter.
fn sizes() -> Sizes {
    Sizes {
        assets: 260,
        ..Sizes::small()
    }
}

fn credentials(system: System, fixture: &Fixture) -> Value {
    let base_url = fixture.base_url();
    match system.kind {
        Kind::MaintainX | Kind::Maximo => json!({ "api_key": API_KEY, "base_url": base_url }),
        Kind::SapS4Hana | Kind::SapEcc => json!({
            "base_url": base_url, "auth": "basic", "username": SAP_USER,
            "password": SAP_PASSWORD, "sap_client": SAP_CLIENT,
        }),
    }
}

/// The key the connector gives asset `n`.
fn asset_key(system: System, fixture: &Fixture, n: u32) -> String {
    match system.kind {
        Kind::MaintainX => n.to_string(),
        Kind::Maximo => {
            let site = fixture.remote.data().assets[&n].site;
            format!("S{site:02}/A{n:05}")
        }
        Kind::SapS4Hana => (10_000_000 + n).to_string(),
        Kind::SapEcc => format!("{:018}", 10_000_000 + n),
    }
}

fn work_order_key(system: System, fixture: &Fixture, n: u32) -> String {
    match system.kind {
        Kind::MaintainX => n.to_string(),
        Kind::Maximo => {
            let site = fixture.remote.data().work_orders[&n].site;
            format!("S{site:02}/{}", 1000 + n)
        }
        Kind::SapS4Hana => (4_000_000 + n).to_string(),
        Kind::SapEcc => format!("{:012}", 4_000_000 + n),
    }
}

struct Connected {
    app: TestApp,
    key: String,
    fixture: Fixture,
    connection: String,
}

async fn app_for(system: System, adjust: impl FnOnce(&mut millwright::config::Config)) -> TestApp {
    TestApp::spawn_with(|config| {
        config.connectors.allow_private_targets = true;
        config.sync.page_size = system.page_size;
        config.sync.requests_per_second = 1000;
        adjust(config);
    })
    .await
}

async fn connect(app: &TestApp, key: &str, system: System, credentials: Value) -> Value {
    let customer = app.create_customer(key, "Plant", None).await;
    app.gql(
        key,
        "mutation($input: ConnectInput!) { connect(input: $input) { token connection { id status } } }",
        json!({ "input": { "customerId": customer["id"], "systemKey": system.key,
                           "deployment": system.deployment, "credentials": credentials } }),
    )
    .await
}

/// A connection to a fresh fixture whose first (full) sync has succeeded.
async fn connected_with(
    system: System,
    sizes: Sizes,
    adjust: impl FnOnce(&mut millwright::config::Config),
) -> Connected {
    let fixture = Fixture::start(system.kind, sizes).await;
    let app = app_for(system, adjust).await;
    let (key, _) = setup(&app, 100).await;
    let body = connect(&app, &key, system, credentials(system, &fixture)).await;
    assert!(body.get("errors").is_none(), "connect failed: {body}");
    let connection = body["data"]["connect"]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = last_run(&app, &key, &connection).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    Connected {
        app,
        key,
        fixture,
        connection,
    }
}

async fn connected(system: System) -> Connected {
    connected_with(system, sizes(), |_| {}).await
}

/// Every node of a record query, following its pages.
async fn all(c: &Connected, query_name: &str, fields: &str) -> Vec<Value> {
    let query = format!(
        "query($c: ID!, $after: String) {{ {query_name}(connectionId: $c, first: 100, after: $after) {{
            nodes {{ {fields} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let mut nodes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = c
            .app
            .ok(&c.key, &query, json!({ "c": c.connection, "after": after }))
            .await;
        let page = &data[query_name];
        nodes.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] == false {
            return nodes;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

fn by_key<'a>(nodes: &'a [Value], key: &str) -> &'a Value {
    nodes
        .iter()
        .find(|n| n["key"] == key)
        .unwrap_or_else(|| panic!("no record {key}"))
}

async fn events(c: &Connected, kind: &str) -> Vec<Value> {
    let data = c
        .app
        .ok(
            &c.key,
            "query($t: [EventType!]) { events(first: 100, filter: {types: $t}) { nodes { type data } } }",
            json!({ "t": [kind] }),
        )
        .await;
    data["events"]["nodes"].as_array().unwrap().clone()
}

async fn full_sync_reads_every_record_into_the_unified_model(system: System) {
    let c = connected(system).await;
    let run = last_run(&c.app, &c.key, &c.connection).await;
    {
        let data = c.fixture.remote.data();
        for (fixture_entity, name) in system.entities {
            let stats = entity(&run, name);
            assert_eq!(
                stats["added"],
                data.count(*fixture_entity) as u64,
                "{name}: {run}"
            );
            assert_eq!(stats["skipped"], 0, "{name}");
        }
    }
    let assets = all(
        &c,
        "assets",
        "key name serialNumber makeName isActive siteKey locationKey parentKey remoteData",
    )
    .await;
    assert_eq!(assets.len(), 260);
    let expected = c.fixture.remote.data().assets[&25].clone();
    assert_eq!(expected.parent, Some(13));
    let child = by_key(&assets, &asset_key(system, &c.fixture, 25));
    assert_eq!(child["name"], "Pump 25");
    assert_eq!(child["serialNumber"], expected.serial);
    assert_eq!(
        child["parentKey"],
        asset_key(system, &c.fixture, 13),
        "{child}"
    );
    assert!(child["locationKey"].is_string(), "{child}");
    let inactive = by_key(&assets, &asset_key(system, &c.fixture, 17));
    if system.kind != Kind::MaintainX {
        assert_eq!(inactive["isActive"], false, "{inactive}");
    }
    let text = serde_json::to_string(&assets).unwrap();
    for secret in [API_KEY, SAP_PASSWORD] {
        assert!(!text.contains(secret), "a credential reached remoteData");
    }

    let orders = all(
        &c,
        "workOrders",
        "key title status remoteStatus priority remotePriority dueAt assetKey",
    )
    .await;
    let on_hold = by_key(&orders, &work_order_key(system, &c.fixture, 2));
    assert_eq!(on_hold["status"], "ON_HOLD", "{on_hold}");
    assert_eq!(on_hold["priority"], "MEDIUM", "{on_hold}");
    assert!(on_hold["remoteStatus"].is_string(), "{on_hold}");
    let done = by_key(&orders, &work_order_key(system, &c.fixture, 3));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["priority"], "HIGH", "{done}");
    assert_eq!(done["title"], "Inspect pump 3");
    assert_eq!(done["assetKey"], asset_key(system, &c.fixture, 3));
    assert!(
        done["dueAt"].as_str().unwrap().starts_with("2026-01-08"),
        "a UTC DateTime whatever the remote's format: {done}"
    );
    if system.kind != Kind::MaintainX {
        let cancelled = by_key(&orders, &work_order_key(system, &c.fixture, 4));
        assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
        assert_eq!(cancelled["priority"], "URGENT", "{cancelled}");
    }
}

async fn incremental_sync_picks_up_the_change(system: System) {
    let c = connected(system).await;
    assert!(c.fixture.remote.change(Entity::Asset, 7));
    c.fixture.remote.clear_requests();
    let run = trigger(&c.app, &c.key, &c.connection, "INCREMENTAL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["recordsUpdated"], 1, "{run}");
    assert_eq!(run["recordsAdded"], 0, "{run}");
    assert_eq!(run["recordsDeleted"], 0, "{run}");
    assert_eq!(entity(&run, "ASSET")["updated"], 1);
    let assets = all(&c, "assets", "key name").await;
    let seven = by_key(&assets, &asset_key(system, &c.fixture, 7));
    assert_eq!(seven["name"], "Pump 7 (rev 1)");
    let filter = match system.kind {
        Kind::MaintainX => None,
        Kind::Maximo => Some("changedate"),
        Kind::SapS4Hana => Some("LastChangeDateTime%20gt%20datetimeoffset"),
        Kind::SapEcc => Some("AEDAT%20ge%20datetime"),
    };
    if let Some(filter) = filter {
        let requests = c.fixture.remote.requests();
        assert!(
            requests.iter().any(|r| r.contains(filter)),
            "the remote was asked for changes only: {requests:?}"
        );
        if system.kind != Kind::SapEcc {
            // The remote filters: the asset read returned the changed record alone.
            assert_eq!(entity(&run, "ASSET")["unchanged"], 0, "{run}");
        }
    }
}

async fn full_sync_detects_deletions(system: System) {
    let c = connected(system).await;
    let gone = asset_key(system, &c.fixture, 8);
    assert!(c.fixture.remote.delete(Entity::Asset, 8));
    let run = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(run["recordsDeleted"], 1, "{run}");
    assert_eq!(entity(&run, "ASSET")["deleted"], 1);
    let assets = all(&c, "assets", "key").await;
    assert_eq!(assets.len(), 259);
    assert!(assets.iter().all(|a| a["key"] != gone.as_str()));
}

/// A record deleted on the remote while a full pass reads later pages shifts nothing: no
/// other record is skipped (and then taken for deleted). The next full run sees the deletion.
async fn a_deletion_while_a_full_pass_reads_takes_nothing_else_for_deleted(system: System) {
    let c = connected(system).await;
    let asset_requests = |fixture: &Fixture| {
        let marker = match system.kind {
            Kind::MaintainX => "/v1/assets?",
            Kind::Maximo => "/mxapiasset?",
            Kind::SapS4Hana => "/Equipment?",
            Kind::SapEcc => "/EquipmentSet?",
        };
        fixture
            .remote
            .requests()
            .iter()
            .filter(|r| r.contains(marker))
            .count()
    };
    // SAP's first window is cut into the server's own pages (100, 100, 50), which follow
    // positions; later windows follow keys. The deletion comes once keys are followed.
    let before_deletion = match system.kind {
        Kind::SapS4Hana | Kind::SapEcc => 4,
        _ => 2,
    };
    c.fixture.remote.clear_requests();
    c.fixture
        .remote
        .slow_down(Some(std::time::Duration::from_millis(100)));
    let data = c
        .app
        .ok(
            &c.key,
            "mutation($id: ID!) { triggerSync(connectionId: $id, kind: FULL) { id } }",
            json!({ "id": c.connection }),
        )
        .await;
    let run_id = data["triggerSync"]["id"].as_str().unwrap().to_owned();
    wait_until(
        std::time::Duration::from_secs(6),
        "the pass to reach later pages",
        async || asset_requests(&c.fixture) >= before_deletion,
    )
    .await;
    assert!(c.fixture.remote.delete(Entity::Asset, 3));
    let run = crate::sync::finished(&c.app, &c.key, &run_id).await;
    c.fixture.remote.slow_down(None);
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(
        run["recordsDeleted"], 0,
        "nothing else was taken for deleted: {run}"
    );
    assert_eq!(all(&c, "assets", "key").await.len(), 260);
    let next = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(next["recordsDeleted"], 1, "{next}");
}

async fn rejected_credentials_require_authentication(system: System) {
    let c = connected(system).await;
    c.fixture.remote.revoke();
    let run = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["code"], "AUTH_REQUIRED", "{run}");
    let data = c
        .app
        .ok(
            &c.key,
            "query($id: ID!) { connection(id: $id) { status statusReason } }",
            json!({ "id": c.connection }),
        )
        .await;
    assert_eq!(data["connection"]["status"], "AUTH_REQUIRED", "{data}");
    assert_eq!(events(&c, "CONNECTION_AUTH_REQUIRED").await.len(), 1);
    let errors = events(&c, "SYSTEM_ERROR").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = &errors[0]["data"];
    assert_eq!(error["operation"], "sync");
    assert_eq!(error["error_kind"], "AUTH_REJECTED");
    assert_eq!(error["system"], system.key);
    let text = error.to_string();
    for secret in [API_KEY, SAP_PASSWORD] {
        assert!(
            !text.contains(secret),
            "a credential reached an event: {text}"
        );
    }
}

async fn rate_limits_are_waited_out(system: System) {
    let c = connected(system).await;
    c.fixture.remote.rate_limit(2, 1);
    let run = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    let waited: u64 = run["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rateLimited"].as_u64().unwrap())
        .sum();
    assert_eq!(waited, 2, "{run}");
    assert_eq!(run["recordsAdded"], 0);
    assert_eq!(run["recordsDeleted"], 0);
}

async fn remote_faults_fail_the_run_with_a_system_error(system: System) {
    let c = connected_with(system, sizes(), |config| config.sync.retries = 1).await;
    c.fixture.remote.fail(10);
    let run = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["code"], "REMOTE_ERROR", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains(system.fault_text),
        "the remote's own message: {run}"
    );
    let errors = events(&c, "SYSTEM_ERROR").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["data"]["error_kind"], "REMOTE_FAULT");
    assert!(
        errors[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains(system.fault_text)
    );
}

async fn private_base_urls_are_refused_without_the_setting(system: System) {
    let fixture = Fixture::start(system.kind, Sizes::small()).await;
    let app = TestApp::spawn().await;
    let (key, _) = setup(&app, 100).await;
    let credentials = credentials(system, &fixture);
    let with_base = |url: &str| {
        let mut c = credentials.clone();
        c["base_url"] = json!(url);
        c
    };
    for (url, said) in [
        (fixture.base_url(), "https"),
        (
            "https://127.0.0.1:9/".into(),
            "loopback, private or reserved",
        ),
        ("https://10.1.2.3/".into(), "loopback, private or reserved"),
        ("https://[::1]/".into(), "loopback, private or reserved"),
        (
            "https://169.254.169.254/".into(),
            "loopback, private or reserved",
        ),
        ("file:///etc/passwd".into(), "http or https"),
        ("https://user:pw@sap.example.com/".into(), "credentials"),
    ] {
        let body = connect(&app, &key, system, with_base(&url)).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{url}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("base_url"), "{url}: {message}");
        assert!(message.contains(said), "{url}: {message}");
    }
    assert!(
        fixture.remote.requests().is_empty(),
        "nothing was sent to the refused address"
    );
    let data = app
        .ok(
            &key,
            "{ viewer { account { credits { available } } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["viewer"]["account"]["credits"]["available"], 100);
}

macro_rules! connector_tests {
    ($($module:ident => $system:expr),+ $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test]
            async fn full_sync_reads_every_record_into_the_unified_model() {
                super::full_sync_reads_every_record_into_the_unified_model($system).await;
            }
            #[tokio::test]
            async fn incremental_sync_picks_up_the_change() {
                super::incremental_sync_picks_up_the_change($system).await;
            }
            #[tokio::test]
            async fn full_sync_detects_deletions() {
                super::full_sync_detects_deletions($system).await;
            }
            #[tokio::test]
            async fn a_deletion_while_a_full_pass_reads_takes_nothing_else_for_deleted() {
                super::a_deletion_while_a_full_pass_reads_takes_nothing_else_for_deleted($system).await;
            }
            #[tokio::test]
            async fn rejected_credentials_require_authentication() {
                super::rejected_credentials_require_authentication($system).await;
            }
            #[tokio::test]
            async fn rate_limits_are_waited_out() {
                super::rate_limits_are_waited_out($system).await;
            }
            #[tokio::test]
            async fn remote_faults_fail_the_run_with_a_system_error() {
                super::remote_faults_fail_the_run_with_a_system_error($system).await;
            }
            #[tokio::test]
            async fn private_base_urls_are_refused_without_the_setting() {
                super::private_base_urls_are_refused_without_the_setting($system).await;
            }
        }
    )+};
}

connector_tests! {
    maintainx => MAINTAINX,
    maximo => MAXIMO,
    sap_s4hana => S4HANA,
    sap_ecc => ECC,
}

#[tokio::test]
async fn sap_oauth_tokens_are_fetched_again_when_they_expire() {
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let app = app_for(S4HANA, |_| {}).await;
    let (key, _) = setup(&app, 100).await;
    let oauth = json!({
        "base_url": fixture.base_url(), "auth": "oauth_client_credentials",
        "token_url": format!("{}/oauth/token", fixture.base_url()),
        "client_id": SAP_CLIENT_ID, "client_secret": SAP_CLIENT_SECRET,
    });
    let body = connect(&app, &key, S4HANA, oauth.clone()).await;
    let connection = body["data"]["connect"]["connection"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let first = last_run(&app, &key, &connection).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    let token_requests = || {
        fixture
            .remote
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST /oauth/token"))
            .count()
    };
    assert_eq!(
        token_requests(),
        1,
        "one token serves the probe and the sync"
    );
    fixture.remote.expire_tokens();
    let run = trigger(&app, &key, &connection, "INCREMENTAL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(token_requests(), 2, "the expired token was replaced once");

    let mut wrong = oauth.clone();
    wrong["client_secret"] = json!("not-the-secret");
    let body = connect(&app, &key, S4HANA, wrong).await;
    assert_eq!(error_code(&body), "CONNECTION_FAILED", "{body}");
    assert!(!body.to_string().contains("not-the-secret"));
    let mut incomplete = oauth;
    incomplete.as_object_mut().unwrap().remove("client_id");
    let body = connect(&app, &key, S4HANA, incomplete).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

#[tokio::test]
async fn sap_ecc_reads_the_services_a_connection_names() {
    let fixture = Fixture::start(Kind::SapEcc, Sizes::small()).await;
    let app = app_for(ECC, |_| {}).await;
    let (key, _) = setup(&app, 100).await;
    let mut credentials = credentials(ECC, &fixture);
    credentials["services"] = json!({ "asset": {
        "service": "/sap/opu/odata/sap/ZEQUIPMENT_SRV", "entity_set": "Equipments",
        "fields": { "key": "Equnr", "name": "Eqktx", "location": "Tplnr", "plant": "Swerk",
                    "serial": "Serge", "manufacturer": "Herst", "model": "Typbz",
                    "parent": "Hequi", "inactive": "Inact", "created": "Erdat", "changed": "Aedat" } } });
    let body = connect(&app, &key, ECC, credentials.clone()).await;
    let connection = body["data"]["connect"]["connection"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    let run = last_run(&app, &key, &connection).await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(entity(&run, "ASSET")["added"], 57, "{run}");
    assert!(
        fixture
            .remote
            .requests()
            .iter()
            .any(|r| r.contains("/ZEQUIPMENT_SRV/Equipments"))
    );
    let c = Connected {
        app,
        key,
        fixture,
        connection,
    };
    let assets = all(&c, "assets", "key name siteKey").await;
    let seven = by_key(&assets, &format!("{:018}", 10_000_007));
    assert_eq!(seven["name"], "Pump 7");
    assert_eq!(seven["siteKey"], "1010");

    for (bad, said) in [
        (
            json!({ "asset": { "service": "https://elsewhere.example.com/x" } }),
            "service",
        ),
        (json!({ "equipment": {} }), "not an entity"),
        (
            json!({ "asset": { "fields": { "colour": "X" } } }),
            "not a field",
        ),
        (json!("ZPM"), "JSON object"),
    ] {
        let mut credentials = credentials.clone();
        credentials["services"] = bad;
        let body = connect(&c.app, &c.key, ECC, credentials).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(said),
            "{body}"
        );
    }
}

#[tokio::test]
async fn sap_equipment_writes_carry_a_csrf_token_fetched_again_when_stale() {
    use millwright::{
        catalog::{self, EntityType},
        connectors::{self, ConnectorError, WriteOperation, http::Outbound},
    };
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let credentials = credentials(S4HANA, &fixture);
    let test_db = TestDb::new().await;
    let db = millwright::db::Db::connect(&test_config(&test_db))
        .await
        .unwrap();
    let connector = connectors::connect(
        &catalog::SAP_S4HANA,
        uuid::Uuid::now_v7(),
        credentials.as_object().unwrap(),
        &Outbound::new(true),
        &db,
    );
    let created = connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Create,
            &[
                json!({ "name": "New pump", "locationKey": "L0001", "siteKey": "1010" }),
                json!({ "serialNumber": "SN-1" }),
                json!({ "name": "x".repeat(41) }),
                json!({ "name": "Rated pump", "criticality": "HIGH" }),
            ],
        )
        .await
        .unwrap();
    assert!(
        created[3]
            .as_ref()
            .unwrap_err()
            .contains("criticality cannot be written"),
        "{created:?}"
    );
    assert_eq!(created[0], Ok("10000058".to_owned()), "{created:?}");
    assert!(
        created[1]
            .as_ref()
            .unwrap_err()
            .contains("name is required")
    );
    assert!(
        created[2].is_err(),
        "SAP refuses a name over 40: {created:?}"
    );
    assert_eq!(fixture.remote.data().assets[&58].name, "New pump");

    // The session's token expires; the next write is refused 403 Required, fetches a new
    // token once and goes through.
    fixture.remote.expire_tokens();
    let updated = connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Update,
            &[
                json!({ "key": "10000007", "name": "Renamed pump" }),
                json!({ "key": "99999999", "name": "Nobody" }),
                json!({ "key": "1000'7", "name": "Quoted" }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(updated[0], Ok("10000007".to_owned()), "{updated:?}");
    assert!(updated[1].is_err() && updated[2].is_err(), "{updated:?}");
    assert_eq!(fixture.remote.data().assets[&7].name, "Renamed pump");
    let fetches = fixture
        .remote
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /sap/opu/odata/sap/API_EQUIPMENT/?"))
        .count();
    assert_eq!(fetches, 2, "one token, fetched again once after it expired");

    let deleted = connector
        .write_batch(
            EntityType::Asset,
            WriteOperation::Delete,
            &[json!({ "key": "10000007" })],
        )
        .await
        .unwrap();
    assert!(deleted[0].is_err());
    assert!(matches!(
        connector
            .write_batch(EntityType::Part, WriteOperation::Create, &[json!({})])
            .await,
        Err(ConnectorError::Validation(_))
    ));
    fixture.remote.revoke();
    assert!(matches!(
        connector
            .write_batch(
                EntityType::Asset,
                WriteOperation::Update,
                &[json!({ "key": "10000007", "name": "x" })]
            )
            .await,
        Err(ConnectorError::AuthRejected(_))
    ));
}

#[tokio::test]
async fn a_failing_health_check_reports_a_system_error_once() {
    let c = connected(MAXIMO).await;
    c.fixture.remote.revoke();
    let check = "mutation($id: ID!) { checkConnection(id: $id) { status statusReason } }";
    for _ in 0..2 {
        let data = c.app.ok(&c.key, check, json!({ "id": c.connection })).await;
        assert_eq!(data["checkConnection"]["status"], "AUTH_REQUIRED", "{data}");
    }
    let errors = events(&c, "SYSTEM_ERROR").await;
    assert_eq!(
        errors.len(),
        1,
        "once per change of what is wrong: {errors:?}"
    );
    assert_eq!(errors[0]["data"]["operation"], "health_check");
    assert_eq!(errors[0]["data"]["error_kind"], "AUTH_REJECTED");
    assert!(
        errors[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("BMXAA7901E")
    );
    c.fixture.remote.restore();
    let data = c.app.ok(&c.key, check, json!({ "id": c.connection })).await;
    assert_eq!(data["checkConnection"]["status"], "ONLINE", "{data}");
}

#[tokio::test]
async fn a_record_that_does_not_map_is_a_record_error_not_a_failed_run() {
    let c = connected(MAINTAINX).await;
    c.fixture.remote.break_record(Entity::Asset, 12);
    c.fixture.remote.break_record(Entity::WorkOrder, 5);
    let run = trigger(&c.app, &c.key, &c.connection, "FULL").await;
    assert_eq!(run["status"], "SUCCEEDED", "{run}");
    assert_eq!(entity(&run, "ASSET")["skipped"], 1, "{run}");
    assert_eq!(entity(&run, "WORK_ORDER")["skipped"], 1, "{run}");
    let data = c
        .app
        .ok(
            &c.key,
            "query($id: ID!) { syncRun(id: $id) { recordErrors { entity key message } } }",
            json!({ "id": run["id"] }),
        )
        .await;
    assert_eq!(
        data["syncRun"]["recordErrors"],
        json!([
            { "entity": "ASSET", "key": "12", "message": "the remote record has no `name`" },
            { "entity": "WORK_ORDER", "key": "5", "message": "the remote record has no `title`" },
        ])
    );
    // The skipped record was seen by the pass: it is not deleted, and keeps its last good copy.
    let assets = all(&c, "assets", "key name").await;
    assert_eq!(by_key(&assets, "12")["name"], "Pump 12");
    assert_eq!(run["recordsDeleted"], 0, "{run}");
}

/// A Maximo connector on `fixture`, for the write tests (it needs no database).
fn maximo_connector(fixture: &Fixture) -> millwright::connectors::maximo::Maximo {
    let credentials = credentials(MAXIMO, fixture);
    millwright::connectors::maximo::Maximo::new(
        credentials.as_object().unwrap(),
        millwright::connectors::http::Outbound::new(true),
    )
}

/// Records with the idempotency keys `<batch>-0`, `<batch>-1`, … as a bulk operation gives.
pub fn write_records(batch: &str, fields: &[Value]) -> Vec<millwright::connectors::WriteRecord> {
    fields
        .iter()
        .enumerate()
        .map(|(i, fields)| millwright::connectors::WriteRecord {
            idempotency_key: format!("{batch}-{i}"),
            fields: fields.clone(),
        })
        .collect()
}

/// Writes `records` of work orders unpaced, as an attempt that began at `sent_since` if set.
pub async fn write_work_orders(
    connector: &dyn millwright::connectors::Connector,
    operation: millwright::connectors::WriteOperation,
    records: &[millwright::connectors::WriteRecord],
    sent_since: Option<chrono::DateTime<chrono::Utc>>,
) -> millwright::connectors::WriteReply {
    let entity = millwright::catalog::EntityType::WorkOrder;
    write(connector, entity, operation, records, sent_since).await
}

fn error_of(outcome: &Result<String, String>) -> &str {
    outcome.as_ref().expect_err("a refused record")
}

#[tokio::test]
async fn maximo_work_orders_are_created_with_their_keys_and_refused_per_record() {
    use millwright::{
        catalog::EntityType,
        connectors::{Connector, ReadRequest, WriteOperation},
    };
    use millwright_fixtures::data::WoState;
    let fixture = Fixture::start(Kind::Maximo, Sizes::small()).await;
    let connector = maximo_connector(&fixture);
    let created = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Create,
            &[
                json!({ "title": "Replace seal", "instructions": "Drain the pump first",
                        "siteKey": "S02", "assetKey": "S02/A00005", "priority": "URGENT",
                        "status": "IN_PROGRESS", "dueAt": "2026-03-02T12:00:00Z",
                        "scheduledAt": "2026-03-01T08:00:00+01:00" }),
                json!({ "instructions": "No title", "siteKey": "S01" }),
                json!({ "title": "Ghost asset", "siteKey": "S01", "assetKey": "S01/A99999" }),
                json!({ "title": "Lubricate", "locationKey": "S03/L0003" }),
                json!({ "title": "Wrong site", "siteKey": "S01", "assetKey": "S02/A00005" }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(created.len(), 5);
    assert_eq!(created[0], Ok("S02/1044".to_owned()), "{created:?}");
    assert!(
        error_of(&created[1]).contains("BMXAA4195E - A value is required for the Description"),
        "Maximo's reason code and message: {created:?}"
    );
    assert!(error_of(&created[2]).contains("BMXAA4153E"), "{created:?}");
    assert_eq!(
        created[3],
        Ok("S03/1045".to_owned()),
        "the site of the location"
    );
    assert!(error_of(&created[4]).contains("site"), "{created:?}");
    {
        let data = fixture.remote.data();
        assert_eq!(data.work_orders.len(), 45);
        let w = &data.work_orders[&44];
        assert_eq!(
            (w.title.as_str(), w.description.as_str(), w.priority),
            ("Replace seal", "Drain the pump first", 4)
        );
        assert_eq!((w.asset, w.site, w.state), (5, 2, WoState::InProgress));
        assert_eq!(data.work_orders[&45].location, 3);
    }
    // The `properties` header brought each created record back: no lookup was needed.
    let requests = fixture.remote.requests();
    assert!(
        requests.iter().all(|r| !r.starts_with("GET ")),
        "{requests:?}"
    );
    assert_eq!(
        requests
            .iter()
            .filter(|r| *r == "POST /maximo/api/os/mxapiwodetail?lean=1")
            .count(),
        4,
        "the misplaced asset is refused before it is sent: {requests:?}"
    );

    // Read back through the connector, the written fields come out as they went in.
    let page = connector
        .read_page(
            EntityType::WorkOrder,
            &ReadRequest {
                page_size: 100,
                ..ReadRequest::default()
            },
        )
        .await
        .unwrap();
    let record = page.records.iter().find(|r| r.key == "S02/1044").unwrap();
    let unified = connector
        .unify(EntityType::WorkOrder, &record.data)
        .unwrap();
    assert_eq!(unified["title"], "Replace seal");
    assert_eq!(unified["instructions"], "Drain the pump first");
    assert_eq!(unified["status"], "IN_PROGRESS");
    assert_eq!(unified["priority"], "URGENT");
    assert_eq!(unified["assetKey"], "S02/A00005");
    assert_eq!(unified["dueAt"], "2026-03-02T12:00:00Z");
    assert_eq!(unified["scheduledAt"], "2026-03-01T07:00:00Z");
}

#[tokio::test]
async fn maximo_work_orders_are_updated_through_the_method_override_and_deleted() {
    use millwright::connectors::WriteOperation;
    use millwright_fixtures::data::WoState;
    let fixture = Fixture::start(Kind::Maximo, Sizes::small()).await;
    let connector = maximo_connector(&fixture);
    let key = |n: u32| work_order_key(MAXIMO, &fixture, n);
    // 1 is in progress, 3 completed, 4 cancelled, 5 approved (APPR), 10 waiting (WAPPR).
    let updates = write_records(
        "mw-u",
        &[
            json!({ "key": key(1), "title": "Renamed", "status": "ON_HOLD" }),
            json!({ "key": "S01/1999", "title": "Nobody" }),
            json!({ "key": key(3), "status": "IN_PROGRESS" }),
            json!({ "key": "1003" }),
            json!({ "key": key(5), "status": "OPEN", "priority": "LOW" }),
            json!({ "key": key(4), "status": "CANCELLED", "title": "Still cancelled" }),
        ],
    );
    let reply = write_work_orders(&connector, WriteOperation::Update, &updates, None).await;
    assert!(reply.stopped.is_none(), "{:?}", reply.stopped);
    let outcomes = reply.outcomes;
    assert_eq!(outcomes[0], Ok(key(1)));
    assert!(
        error_of(&outcomes[1]).contains("BMXAA8727E"),
        "{outcomes:?}"
    );
    assert!(
        error_of(&outcomes[2]).contains("BMXAA4590E"),
        "a completed work order does not start again: {outcomes:?}"
    );
    assert!(
        error_of(&outcomes[3]).contains("SITEID/WONUM"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[4], Ok(key(5)));
    assert_eq!(outcomes[5], Ok(key(4)), "its status is not sent again");
    {
        let data = fixture.remote.data();
        let w = |n: u32| &data.work_orders[&n];
        assert_eq!(
            (w(1).title.as_str(), w(1).state),
            ("Renamed", WoState::OnHold)
        );
        assert_eq!((w(5).state, w(5).priority), (WoState::Open, 1));
        assert_eq!(w(3).state, WoState::Completed);
        assert_eq!(w(4).title, "Still cancelled");
    }
    let requests = fixture.remote.requests();
    let lookups: Vec<&String> = requests.iter().filter(|r| r.starts_with("GET ")).collect();
    assert_eq!(lookups.len(), 3, "one lookup per site: {lookups:?}");
    assert!(lookups.iter().all(|r| r.contains("oslc.where=siteid")));
    let patches = requests
        .iter()
        .filter(|r| r.starts_with("POST /maximo/api/os/mxapiwodetail/_") && r.ends_with("?lean=1"))
        .count();
    assert_eq!(patches, 4, "{requests:?}");

    // Only a work order waiting on approval is deleted.
    let waiting = key(10);
    let deletes = write_records(
        "mw-d",
        &[json!({ "key": waiting }), json!({ "key": key(5) })],
    );
    let reply = write_work_orders(&connector, WriteOperation::Delete, &deletes, None).await;
    assert_eq!(reply.outcomes[0], Ok(waiting.clone()));
    assert!(
        error_of(&reply.outcomes[1]).contains("BMXAA4106E"),
        "{:?}",
        reply.outcomes
    );
    assert!(!fixture.remote.data().work_orders.contains_key(&10));
    // Sent again: gone. After a crash (`sent_since`) that is what the earlier attempt did.
    let again = write_work_orders(&connector, WriteOperation::Delete, &deletes[..1], None).await;
    assert!(error_of(&again.outcomes[0]).contains("BMXAA8727E"));
    let resumed = write_work_orders(
        &connector,
        WriteOperation::Delete,
        &deletes[..1],
        Some(chrono::Utc::now()),
    )
    .await;
    assert_eq!(resumed.outcomes, [Ok(waiting)]);
}

#[tokio::test]
async fn maximo_creates_resent_after_a_crash_are_found_by_their_stamp() {
    use millwright::connectors::WriteOperation;
    let fixture = Fixture::start(Kind::Maximo, Sizes::small()).await;
    let connector = maximo_connector(&fixture);
    let count = || fixture.remote.data().work_orders.len();
    let records = write_records(
        "mw-0193a1b2c3d4e5f6a7b8c9d0e1f2a3b4",
        &[
            json!({ "title": "First", "siteKey": "S01" }),
            json!({ "title": "Second", "siteKey": "S02" }),
            json!({ "siteKey": "S02" }),
            json!({ "title": "Third", "siteKey": "S03" }),
        ],
    );
    let started = chrono::Utc::now();
    let first = write_work_orders(&connector, WriteOperation::Create, &records, None).await;
    assert_eq!(
        first.outcomes[..2],
        [Ok("S01/1044".to_owned()), Ok("S02/1045".to_owned())]
    );
    assert_eq!(count(), 46);

    // Sent again at once, even as a fresh attempt: Maximo refuses each committed
    // `transactionid` (409) and the connector answers with the record it finds stamped.
    let again = write_work_orders(&connector, WriteOperation::Create, &records, None).await;
    assert_eq!(again.outcomes, first.outcomes);
    assert_eq!(count(), 46);

    // The process died before it recorded the outcomes: the batch is sent again.
    fixture.remote.clear_requests();
    let resent =
        write_work_orders(&connector, WriteOperation::Create, &records, Some(started)).await;
    assert!(resent.stopped.is_none());
    assert_eq!(resent.outcomes[..2], first.outcomes[..2]);
    assert_eq!(resent.outcomes[3], first.outcomes[3]);
    assert!(
        error_of(&resent.outcomes[2]).contains("BMXAA4195E"),
        "refused again, not found"
    );
    assert_eq!(count(), 46, "nothing was created twice");
    let requests = fixture.remote.requests();
    assert_eq!(
        requests.len(),
        2,
        "one lookup, the refused one resent: {requests:?}"
    );
    assert!(
        requests[0].contains("oslc.where=externalrefid%20in%20%5B%22mw-0193"),
        "{requests:?}"
    );

    // A batch that stopped half-way on a 429 is resent whole: the created half is found.
    let more = write_records(
        "mw-more",
        &[
            json!({ "title": "Fourth", "siteKey": "S01" }),
            json!({ "title": "Fifth", "siteKey": "S01" }),
            json!({ "title": "Sixth", "siteKey": "S01" }),
        ],
    );
    fixture
        .remote
        .slow_down(Some(std::time::Duration::from_millis(300)));
    fixture.remote.clear_requests();
    let remote = fixture.remote.clone();
    // Once the second request is on its way (it waits out the delay first), it meets a 429.
    let watcher = tokio::spawn(async move {
        while remote.requests().len() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        remote.rate_limit(1, 30);
    });
    let started = chrono::Utc::now();
    let limited = write_work_orders(&connector, WriteOperation::Create, &more, None).await;
    watcher.await.unwrap();
    fixture.remote.slow_down(None);
    assert_eq!(limited.outcomes, [Ok("S01/1047".to_owned())]);
    assert!(
        matches!(
            limited.stopped,
            Some(millwright::connectors::ConnectorError::RateLimited { retry_after })
                if retry_after.as_secs() == 30
        ),
        "{:?}",
        limited.stopped
    );
    assert_eq!(count(), 47);
    let resumed = write_work_orders(&connector, WriteOperation::Create, &more, Some(started)).await;
    assert_eq!(
        resumed.outcomes,
        [
            Ok("S01/1047".to_owned()),
            Ok("S01/1048".to_owned()),
            Ok("S01/1049".to_owned())
        ]
    );
    assert_eq!(count(), 49);
}

#[tokio::test]
async fn maximo_writes_stop_on_revoked_credentials_and_faults() {
    use millwright::{
        catalog::EntityType,
        connectors::{Connector, ConnectorError, WriteOperation},
    };
    let fixture = Fixture::start(Kind::Maximo, Sizes::small()).await;
    let connector = maximo_connector(&fixture);
    let key = work_order_key(MAXIMO, &fixture, 1);
    fixture.remote.fail(1);
    let records = write_records(
        "mw-f",
        &[
            json!({ "title": "A", "siteKey": "S01" }),
            json!({ "title": "B", "siteKey": "S01" }),
        ],
    );
    let failed = write_work_orders(&connector, WriteOperation::Create, &records, None).await;
    assert!(failed.outcomes.is_empty());
    assert!(
        matches!(&failed.stopped, Some(ConnectorError::RemoteFault(m)) if m.contains("BMXAA4214E")),
        "{:?}",
        failed.stopped
    );
    fixture.remote.revoke();
    for (operation, fields) in [
        (
            WriteOperation::Create,
            json!({ "title": "x", "siteKey": "S01" }),
        ),
        (WriteOperation::Update, json!({ "key": key, "title": "x" })),
        (WriteOperation::Delete, json!({ "key": key })),
    ] {
        let outcome = connector
            .write_batch(EntityType::WorkOrder, operation, &[fields])
            .await;
        assert!(
            matches!(&outcome, Err(ConnectorError::AuthRejected(m)) if m.contains("BMXAA7901E")),
            "{operation:?}: {outcome:?}"
        );
    }
    fixture.remote.restore();
    assert!(matches!(
        connector
            .write_batch(
                EntityType::Asset,
                WriteOperation::Create,
                &[json!({ "name": "x" })]
            )
            .await,
        Err(ConnectorError::Validation(_))
    ));
    assert_eq!(fixture.remote.data().work_orders.len(), 43);
}

#[tokio::test]
async fn maximo_writes_wait_for_the_connection_pace_before_each_request() {
    use millwright::{
        catalog::EntityType,
        connectors::{Connector, Pace, WriteOperation, WriteRequest},
    };
    let fixture = Fixture::start(Kind::Maximo, Sizes::small()).await;
    let connector = maximo_connector(&fixture);
    // One request per 150 ms, no burst.
    let quota = governor::Quota::with_period(std::time::Duration::from_millis(150)).unwrap();
    let pace = Pace::new(
        std::sync::Arc::new(governor::RateLimiter::keyed(quota)),
        uuid::Uuid::now_v7(),
    );
    let records = write_records(
        "mw-paced",
        &[
            json!({ "title": "A", "siteKey": "S01" }),
            json!({ "title": "B", "siteKey": "S01" }),
        ],
    );
    let started = std::time::Instant::now();
    let reply = connector
        .write(&WriteRequest {
            entity: EntityType::WorkOrder,
            operation: WriteOperation::Create,
            records: &records,
            sent_since: Some(chrono::Utc::now()),
            pace: &pace,
        })
        .await;
    assert_eq!(reply.outcomes.len(), 2, "{reply:?}");
    assert_eq!(
        fixture.remote.requests().len(),
        3,
        "a lookup, then two creates"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "three requests take two periods at least: {:?}",
        started.elapsed()
    );
}

/// An S/4HANA connector with `credentials`, built directly (it keeps nothing in the
/// database).
fn s4_connector(credentials: Value) -> millwright::connectors::sap::Sap {
    use millwright::connectors::{http::Outbound, sap};
    sap::Sap::new(
        sap::Flavor::S4Hana,
        uuid::Uuid::now_v7(),
        credentials.as_object().unwrap(),
        Outbound::new(true),
    )
}

/// Writes `records` as one request, as the bulk runner does.
async fn write(
    connector: &dyn millwright::connectors::Connector,
    entity: millwright::catalog::EntityType,
    operation: millwright::connectors::WriteOperation,
    records: &[millwright::connectors::WriteRecord],
    sent_since: Option<chrono::DateTime<chrono::Utc>>,
) -> millwright::connectors::WriteReply {
    let pace = millwright::connectors::Pace::unlimited();
    connector
        .write(&millwright::connectors::WriteRequest {
            entity,
            operation,
            records,
            sent_since,
            pace: &pace,
        })
        .await
}

/// Requests of `method` to the maintenance-order write service.
fn order_writes(fixture: &Fixture, method: &str) -> usize {
    let prefix =
        format!("{method} /sap/opu/odata/sap/API_MAINTENANCEORDER;v=0002/MaintenanceOrder");
    fixture
        .remote
        .requests()
        .iter()
        .filter(|r| r.starts_with(&prefix))
        .count()
}

#[tokio::test]
async fn sap_work_orders_are_created_and_updated_through_maintenance_order_v2() {
    use millwright::{
        catalog::EntityType,
        connectors::{Connector, ConnectorError, WriteOperation},
    };
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let connector = s4_connector(credentials(S4HANA, &fixture));
    let next = fixture.remote.data().next_number(Entity::WorkOrder);
    let created = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Create,
            &[
                json!({ "title": "Replace seal", "priority": "URGENT", "assetKey": "10000007",
                    "dueAt": "2026-03-04T15:00:00+01:00" }),
                json!({ "title": "Inspect line", "priority": "LOW", "locationKey": "L0003",
                    "siteKey": "1020", "status": null }),
                json!({ "priority": "HIGH", "assetKey": "10000007" }),
                json!({ "title": "Close it", "assetKey": "10000007", "status": "COMPLETED" }),
                json!({ "title": "x".repeat(41), "assetKey": "10000007" }),
                json!({ "title": "Ghost pump", "assetKey": "99999999" }),
                json!({ "title": "Nowhere" }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(created.len(), 7, "{created:?}");
    assert_eq!(
        created[0],
        Ok(format!("{}", 4_000_000 + next)),
        "{created:?}"
    );
    assert_eq!(
        created[1],
        Ok(format!("{}", 4_000_001 + next)),
        "{created:?}"
    );
    let error = |n: usize| created[n].clone().unwrap_err();
    assert!(error(2).contains("title is required"), "{created:?}");
    assert!(error(3).contains("status cannot be written"), "{created:?}");
    assert!(
        error(4).contains("MaintenanceOrderDesc"),
        "SAP's refusal: {created:?}"
    );
    assert!(
        error(5).contains("Equipment 99999999 does not exist"),
        "{created:?}"
    );
    assert!(error(6).contains("plant"), "{created:?}");
    {
        let data = fixture.remote.data();
        let first = &data.work_orders[&next];
        assert_eq!(
            (first.title.as_str(), first.priority, first.asset),
            ("Replace seal", 4, 7)
        );
        assert_eq!(
            first.due.to_rfc3339(),
            "2026-03-04T00:00:00+00:00",
            "the final due date is the UTC date of dueAt"
        );
        let second = &data.work_orders[&(next + 1)];
        assert_eq!((second.priority, second.asset, second.site), (1, 0, 2));
        assert_eq!(data.locations[&second.location].code, "L0003");
        assert!(
            !data.work_orders.contains_key(&(next + 2)),
            "refused records make nothing"
        );
    }
    // What was written reads back as it was given (the reverse of `unify`).
    let record = fixture_order(&fixture, next + 1).await;
    let unified = connector.unify(EntityType::WorkOrder, &record).unwrap();
    assert_eq!(
        (
            &unified["title"],
            &unified["priority"],
            &unified["locationKey"],
            &unified["siteKey"],
            &unified["assetKey"]
        ),
        (
            &json!("Inspect line"),
            &json!("LOW"),
            &json!("L0003"),
            &json!("1020"),
            &Value::Null
        )
    );

    // The session's token expires; the next write is refused 403 Required, fetches a new
    // token once and goes through.
    fixture.remote.expire_tokens();
    let key = format!("{}", 4_000_000 + next);
    let updated = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Update,
            &[
                json!({ "key": key, "title": "Replace both seals", "priority": "NONE" }),
                json!({ "key": key, "title": "Renamed", "priority": "MEDIUM" }),
                json!({ "key": "4999999", "title": "Nobody" }),
                json!({ "key": "4000'1", "title": "Quoted" }),
                json!({ "key": key, "instructions": "Check the bearings too" }),
            ],
        )
        .await
        .unwrap();
    assert_eq!(updated[0], Ok(key.clone()), "{updated:?}");
    assert_eq!(updated[1], Ok(key.clone()), "{updated:?}");
    assert!(
        updated[2]
            .as_ref()
            .unwrap_err()
            .contains("Resource not found"),
        "{updated:?}"
    );
    assert!(
        updated[3].as_ref().unwrap_err().contains("key must be"),
        "{updated:?}"
    );
    assert!(
        updated[4].as_ref().unwrap_err().contains("instructions"),
        "{updated:?}"
    );
    {
        let data = fixture.remote.data();
        let order = &data.work_orders[&next];
        assert_eq!((order.title.as_str(), order.priority), ("Renamed", 2));
    }
    let fetches = fixture
        .remote
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /sap/opu/odata/sap/API_MAINTENANCEORDER;v=0002/?"))
        .count();
    assert_eq!(fetches, 2, "one token, fetched again once after it expired");
    assert_eq!(
        order_writes(&fixture, "PATCH"),
        4,
        "one refused 403 Required, sent again"
    );

    let deleted = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Delete,
            &[json!({ "key": key })],
        )
        .await
        .unwrap();
    assert!(
        deleted[0]
            .as_ref()
            .unwrap_err()
            .contains("SetMaintOrdStsToMrkdForDeltn")
    );

    fixture.remote.revoke();
    assert!(matches!(
        connector
            .write_batch(
                EntityType::WorkOrder,
                WriteOperation::Update,
                &[json!({ "key": key, "title": "x" })]
            )
            .await,
        Err(ConnectorError::AuthRejected(_))
    ));
}

/// Maintenance order `n` as the fixture's read service renders it.
async fn fixture_order(fixture: &Fixture, n: u32) -> Value {
    let url = format!(
        "{}/sap/opu/odata/sap/API_MAINTENANCEORDER/MaintenanceOrder('{}')?$format=json&sap-client={SAP_CLIENT}",
        fixture.base_url(),
        4_000_000 + n
    );
    let body: Value = reqwest::Client::new()
        .get(url)
        .basic_auth(SAP_USER, Some(SAP_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["d"].clone()
}

#[tokio::test]
async fn sap_work_order_writes_renew_an_expired_oauth_token_once() {
    use millwright::{catalog::EntityType, connectors::Connector, connectors::WriteOperation};
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let oauth = json!({
        "base_url": fixture.base_url(), "auth": "oauth_client_credentials",
        "token_url": format!("{}/oauth/token", fixture.base_url()),
        "client_id": SAP_CLIENT_ID, "client_secret": SAP_CLIENT_SECRET,
        "maintenance_order_type": "ZZ99",
    });
    let connector = s4_connector(oauth);
    let key = "4000005";
    let update = |title: &str| json!({ "key": key, "title": title });
    let first = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Update,
            &[update("One")],
        )
        .await
        .unwrap();
    assert_eq!(first, vec![Ok(key.to_owned())]);
    // Access and CSRF tokens expire together: the write meets a 401, takes a new access
    // token and a new CSRF token, and goes through.
    fixture.remote.expire_tokens();
    let second = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Update,
            &[update("Two")],
        )
        .await
        .unwrap();
    assert_eq!(second, vec![Ok(key.to_owned())]);
    assert_eq!(fixture.remote.data().work_orders[&5].title, "Two");
    let token_requests = fixture
        .remote
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /oauth/token"))
        .count();
    assert_eq!(token_requests, 2);
    // Created orders take the connection's order type.
    let created = connector
        .write_batch(
            EntityType::WorkOrder,
            WriteOperation::Create,
            &[json!({ "title": "Preventive check", "assetKey": "10000003" })],
        )
        .await
        .unwrap();
    assert!(
        created[0]
            .as_ref()
            .unwrap_err()
            .contains("Order type ZZ99 is not defined"),
        "{created:?}"
    );
}

#[tokio::test]
async fn sap_writes_stop_at_a_rate_limit_mid_batch_and_at_revoked_credentials() {
    use millwright::{
        catalog::EntityType,
        connectors::{ConnectorError, WriteOperation},
    };
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let connector = s4_connector(credentials(S4HANA, &fixture));
    let records = write_records(
        "sap-test",
        &[
            json!({ "key": "4000001", "title": "First" }),
            json!({ "key": "4000002", "title": "Second" }),
            json!({ "key": "4000003", "title": "Third" }),
        ],
    );
    // Every request waits a moment before the fixture looks at its faults: long enough to
    // set a rate limit once the second record's request has arrived.
    fixture
        .remote
        .slow_down(Some(std::time::Duration::from_millis(300)));
    let steer = async {
        while order_writes(&fixture, "PATCH") < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        fixture.remote.rate_limit(1, 30);
    };
    let (reply, ()) = tokio::join!(
        write(
            &connector,
            EntityType::WorkOrder,
            WriteOperation::Update,
            &records,
            None
        ),
        steer
    );
    fixture.remote.slow_down(None);
    assert_eq!(reply.outcomes, vec![Ok("4000001".to_owned())]);
    assert!(
        matches!(reply.stopped, Some(ConnectorError::RateLimited { retry_after }) if retry_after.as_secs() == 30),
        "{:?}",
        reply.stopped
    );
    assert_eq!(order_writes(&fixture, "PATCH"), 2, "the third was not sent");
    {
        let data = fixture.remote.data();
        assert_eq!(data.work_orders[&1].title, "First");
        assert_ne!(data.work_orders[&2].title, "Second");
    }

    // The caller resends the rest after the pause.
    let reply = write(
        &connector,
        EntityType::WorkOrder,
        WriteOperation::Update,
        &records[1..],
        None,
    )
    .await;
    assert_eq!(
        reply.outcomes,
        vec![Ok("4000002".to_owned()), Ok("4000003".to_owned())]
    );
    assert!(reply.stopped.is_none());

    // A server error stops the batch too (the caller retries the rest).
    fixture.remote.fail(1);
    let reply = write(
        &connector,
        EntityType::Asset,
        WriteOperation::Update,
        &write_records("sap-test", &[json!({ "key": "10000001", "name": "x" })]),
        None,
    )
    .await;
    assert!(reply.outcomes.is_empty());
    assert!(
        matches!(reply.stopped, Some(ConnectorError::RemoteFault(_))),
        "{:?}",
        reply.stopped
    );

    fixture.remote.revoke();
    let reply = write(
        &connector,
        EntityType::WorkOrder,
        WriteOperation::Create,
        &write_records(
            "sap-test",
            &[json!({ "title": "New", "assetKey": "10000001" })],
        ),
        None,
    )
    .await;
    assert!(reply.outcomes.is_empty());
    assert!(
        matches!(reply.stopped, Some(ConnectorError::AuthRejected(_))),
        "{:?}",
        reply.stopped
    );
}

#[tokio::test]
async fn sap_creates_an_earlier_attempt_may_have_sent_are_not_sent_again() {
    use millwright::{
        catalog::EntityType,
        connectors::{OUTCOME_UNKNOWN, WriteOperation},
    };
    let fixture = Fixture::start(Kind::SapS4Hana, Sizes::small()).await;
    let connector = s4_connector(credentials(S4HANA, &fixture));
    let started = chrono::Utc::now();
    let orders = write_records(
        "sap-test",
        &[
            json!({ "title": "Once", "assetKey": "10000002" }),
            json!({ "title": "Only once", "assetKey": "10000004" }),
        ],
    );
    let equipment = write_records("sap-test", &[json!({ "name": "Single pump" })]);
    let first = write(
        &connector,
        EntityType::WorkOrder,
        WriteOperation::Create,
        &orders,
        None,
    )
    .await;
    assert!(
        first.outcomes.iter().all(Result::is_ok),
        "{:?}",
        first.outcomes
    );
    let first = write(
        &connector,
        EntityType::Asset,
        WriteOperation::Create,
        &equipment,
        None,
    )
    .await;
    assert!(first.outcomes[0].is_ok(), "{:?}", first.outcomes);
    let counts = |fixture: &Fixture| {
        let data = fixture.remote.data();
        (data.work_orders.len(), data.assets.len())
    };
    let before = counts(&fixture);
    let posts = fixture
        .remote
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST "))
        .count();

    // The same records again, as after a crash mid-batch: SAP takes no idempotency key, so
    // nothing is sent and each outcome is unknown.
    for (entity, records) in [
        (EntityType::WorkOrder, &orders),
        (EntityType::Asset, &equipment),
    ] {
        let again = write(
            &connector,
            entity,
            WriteOperation::Create,
            records,
            Some(started),
        )
        .await;
        assert_eq!(again.outcomes.len(), records.len());
        assert!(again.stopped.is_none());
        assert!(
            again
                .outcomes
                .iter()
                .all(|o| o.as_ref().unwrap_err() == OUTCOME_UNKNOWN),
            "{:?}",
            again.outcomes
        );
    }
    assert_eq!(counts(&fixture), before, "nothing was created twice");
    assert_eq!(
        fixture
            .remote
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST "))
            .count(),
        posts,
        "nothing was even sent"
    );

    // Updates are idempotent: they are sent again.
    let updates = write_records(
        "sap-test",
        &[json!({ "key": "4000003", "title": "Resent" })],
    );
    let again = write(
        &connector,
        EntityType::WorkOrder,
        WriteOperation::Update,
        &updates,
        Some(started),
    )
    .await;
    assert_eq!(again.outcomes, vec![Ok("4000003".to_owned())]);
    assert_eq!(fixture.remote.data().work_orders[&3].title, "Resent");
}
