//! PostgreSQL test databases cloned from a template migrated once: a test's database is a
//! `CREATE DATABASE … TEMPLATE …` copy instead of a fresh run of every migration.

use migration::MigratorTrait;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// Serializes template builds across test processes on one server (an arbitrary constant).
const TEMPLATE_LOCK: i64 = 0x6d77_7465_6d70;

/// Creates database `name` on the server of `base` as a copy of the current template.
pub async fn create_database(base: &str, name: &str) {
    let template = template(base).await;
    let admin = connect_admin(base).await;
    execute(
        &admin,
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    )
    .await;
    admin.close().await.ok();
}

/// Creates database `name` on the server of `base`, empty: not migrated.
pub async fn create_empty_database(base: &str, name: &str) {
    let admin = connect_admin(base).await;
    execute(&admin, &format!("CREATE DATABASE {name}")).await;
    admin.close().await.ok();
}

/// The template for the binary's migrations, built by the first test of this process that
/// needs it unless another process already did.
async fn template(base: &str) -> String {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE.get_or_init(|| build_template(base)).await.clone()
}

/// Named by a hash of the migrations, their names and their source: a new migration, or a
/// change to one not yet released, gets a new template; otherwise one is reused as it stands.
fn template_name() -> String {
    let mut hash = Sha256::new();
    for migration in migration::Migrator::migrations() {
        hash.update(migration.name());
        hash.update("\n");
    }
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migration/src");
    let mut files: Vec<_> = std::fs::read_dir(&sources)
        .expect("migration/src is readable")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        hash.update(file.file_name().unwrap().as_encoded_bytes());
        hash.update(std::fs::read(&file).unwrap());
    }
    let digest: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("mw_template_{digest}")
}

async fn build_template(base: &str) -> String {
    let name = template_name();
    // One connection: the session-level advisory lock is released by the same session.
    let admin = connect_admin(base).await;
    execute(&admin, &format!("SELECT pg_advisory_lock({TEMPLATE_LOCK})")).await;
    if !exists(&admin, &name).await {
        // Built under a scratch name and renamed once complete, so a template under `name`
        // is always fully migrated, even after a test process died while building one.
        let scratch = format!("{name}_building");
        execute(
            &admin,
            &format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"),
        )
        .await;
        execute(&admin, &format!("CREATE DATABASE {scratch}")).await;
        migrate(&database_url(base, &scratch)).await;
        // No session may stay connected to a template: PostgreSQL refuses to copy it then.
        execute(
            &admin,
            &format!("ALTER DATABASE {scratch} WITH ALLOW_CONNECTIONS false"),
        )
        .await;
        execute(
            &admin,
            &format!("ALTER DATABASE {scratch} RENAME TO {name}"),
        )
        .await;
    }
    execute(
        &admin,
        &format!("SELECT pg_advisory_unlock({TEMPLATE_LOCK})"),
    )
    .await;
    admin.close().await.ok();
    name
}

/// Runs every migration on `url` and closes the connection.
async fn migrate(url: &str) {
    let db = Database::connect(url)
        .await
        .expect("connect to the template");
    migration::Migrator::up(&db, None)
        .await
        .expect("migrate the template");
    db.close().await.expect("close the template's connection");
}

async fn exists(admin: &DatabaseConnection, name: &str) -> bool {
    let sql = "SELECT 1 FROM pg_database WHERE datname = $1";
    let statement =
        Statement::from_sql_and_values(admin.get_database_backend(), sql, [name.into()]);
    admin
        .query_one_raw(statement)
        .await
        .expect("look up the template")
        .is_some()
}

async fn connect_admin(base: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(base);
    options
        .max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .expect("connect to the test server")
}

async fn execute(admin: &DatabaseConnection, sql: &str) {
    admin
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// The URL of database `name` on the server of `base`.
pub fn database_url(base: &str, name: &str) -> String {
    let (prefix, _) = base.rsplit_once('/').expect("postgres URL with a database");
    format!("{prefix}/{name}")
}
