//! Test helpers for any crate whose tests run on PostgreSQL: fresh, uniquely named schemas in the
//! test database (`DCB_TEST_POSTGRES_URL`, default the local `dcb_test`), and cleanup of those
//! left by earlier runs. Behind the `testkit` feature.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{Options, PostgresRecorder, PostgresStore};
use tokio_postgres::NoTls;

/// Prefix of every schema these tests create; the process id follows it.
const PREFIX: &str = "dcbpgtest_";

/// The test database: `DCB_TEST_POSTGRES_URL`, or the local `dcb_test` database.
pub fn url() -> String {
    std::env::var("DCB_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/dcb_test".to_owned())
}

/// A schema name no other test, run or process uses.
pub async fn fresh_schema() -> String {
    static CLEANED: AtomicBool = AtomicBool::new(false);
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    if !CLEANED.swap(true, Ordering::SeqCst) {
        drop_schemas_of_dead_processes().await;
    }
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{PREFIX}{}_{n}_{nanos}", std::process::id())
}

/// Options for a fresh schema, with an application name unique to it.
pub async fn fresh_options() -> Options {
    let schema = fresh_schema().await;
    Options::new(url(), schema.clone()).read_connections(1).application_name(schema)
}

/// A store in a fresh schema.
pub async fn fresh_store() -> PostgresStore {
    PostgresStore::open(fresh_options().await)
        .await
        .expect("open a store in a fresh schema (is PostgreSQL running? see scripts/ensure-postgres)")
}

/// An aggregate recorder in a fresh schema.
pub async fn fresh_recorder() -> PostgresRecorder {
    PostgresRecorder::open(fresh_options().await).await.expect("open a recorder in a fresh schema")
}

/// A plain connection to the test database, for checks behind the store's back.
pub async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&url(), NoTls).await.expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Terminates every backend whose application name is `name`; returns how many.
pub async fn kill_backends(admin: &tokio_postgres::Client, name: &str) -> i64 {
    let row = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()) t",
            &[&name],
        )
        .await
        .expect("terminate backends");
    row.get(0)
}

/// Drops `schema` and everything in it.
pub async fn drop_schema(schema: &str) {
    admin()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("drop schema");
}

/// Schemas made by test processes that no longer run: the generated tests cannot drop their own
/// schema at the end, so each run removes what finished runs left.
async fn drop_schemas_of_dead_processes() {
    let admin = admin().await;
    let rows = admin
        .query("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", &[&PREFIX])
        .await
        .expect("list test schemas");
    for row in rows {
        let name: String = row.get(0);
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // Another process may be dropping it at the same moment.
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await;
        }
    }
}
