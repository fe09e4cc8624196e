//! A PostgreSQL schema of one test's own on the local server (127.0.0.1:5432, trust auth, user
//! postgres, database test), so parallel and repeated runs never see each other's tables.

use anyhow::Context as _;

/// The local PostgreSQL the tests use.
pub const PG: &str = "host=127.0.0.1 user=postgres dbname=test";

/// A fresh schema; [`TestSchema::url`] connects with it as the search path. Dropped (with
/// everything in it) by [`TestSchema::drop`]; a schema left by a killed run is harmless.
#[derive(Debug)]
pub struct TestSchema {
    admin: tokio_postgres::Client,
    name: String,
}

impl TestSchema {
    /// Create `<prefix>_<random>`.
    pub async fn create(prefix: &str) -> anyhow::Result<TestSchema> {
        let name = format!("{prefix}_{:016x}", crate::unique());
        let (admin, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
            .await
            .context("PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is running")?;
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .with_context(|| format!("creating schema {name}"))?;
        Ok(TestSchema { admin, name })
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection string whose search path is this schema.
    pub fn url(&self) -> String {
        format!("{PG} options='-c search_path={}'", self.name)
    }

    /// [`Self::url`] through a local port (a [`crate::CutProxy`] in front of the server).
    pub fn url_via(&self, port: u16) -> String {
        format!("{} port={port}", self.url())
    }

    /// A client of the server, for assertions (schema-qualify the tables with [`Self::name`]).
    pub fn admin(&self) -> &tokio_postgres::Client {
        &self.admin
    }

    /// `SELECT count(*) FROM <schema>.<from>`, e.g. `count("rules_definitions WHERE org_id =
    /// 1")`; `None` while the table does not exist yet (the stage has not migrated).
    pub async fn count(&self, from: &str) -> Option<i64> {
        self.admin
            .query_one(&format!("SELECT count(*) FROM {}.{from}", self.name), &[])
            .await
            .ok()
            .map(|r| r.get(0))
    }

    /// Drop the schema and everything in it.
    pub async fn drop(self) {
        if let Err(e) = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
        {
            eprintln!("dropping test schema {}: {e}", self.name);
        }
    }
}
