//! Databases for tests. PostgreSQL is the run's server, started by `scripts/postgres.sh start`
//! (as `scripts/test.sh` does), whose URL is in `BIMRIDE_POSTGRES_URL`; a missing server fails
//! the test loudly.

use sqlx::Connection;

/// A fresh database of the test's own on the run's server: its URL.
pub async fn fresh_postgres() -> String {
    let base = std::env::var("BIMRIDE_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "BIMRIDE_POSTGRES_URL is not set: start PostgreSQL with `scripts/postgres.sh start` \
             and export the URL it prints (scripts/test.sh does both)"
        )
    });
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at BIMRIDE_POSTGRES_URL answers: {e}"));
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let (server, _) = base.rsplit_once('/').expect("the URL names a database");
    format!("{server}/{name}")
}

/// A fresh SQLite database file under the system's temporary folder: its URL.
pub fn fresh_sqlite() -> String {
    let file = std::env::temp_dir().join(format!("bimride-test-{}.db", uuid::Uuid::new_v4()));
    format!("sqlite:{}?mode=rwc", file.display())
}
