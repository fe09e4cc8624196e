//! Group commit against the local PostgreSQL: many inputs' writes land in one transaction and
//! are invisible until it commits; a transaction lost to a killed connection or a refused
//! statement is rebuilt from the journal, so every other input's write lands exactly once.

use std::time::Duration;

use pgstore::{GroupCommit, Lanes, Param, Prepared, StoreError};
use testkit::pg::TestSchema;
use tokio_postgres::{Client, Statement};

/// The test's statements on table `items` (the schema's search path picks the test's own).
struct Stmts {
    insert: Statement,
    count: Statement,
    pid: Statement,
}

impl Prepared for Stmts {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Stmts {
            insert: client
                .prepare("INSERT INTO items (id, v) VALUES ($1, $2) RETURNING id")
                .await?,
            count: client.prepare("SELECT count(*) FROM items").await?,
            pid: client.prepare("SELECT pg_backend_pid()").await?,
        })
    }
}

async fn schema(prefix: &str) -> anyhow::Result<TestSchema> {
    let s = TestSchema::create(prefix).await?;
    s.admin()
        .batch_execute(&format!(
            "CREATE TABLE {}.items (id bigint PRIMARY KEY, v int NOT NULL CHECK (v >= 0))",
            s.name()
        ))
        .await?;
    Ok(s)
}

fn settings(linger_ms: u64) -> GroupCommit {
    GroupCommit {
        lanes: 2,
        linger: Duration::from_millis(linger_ms),
        max_writes: 100_000,
    }
}

fn row(id: i64, v: i32) -> Vec<Param> {
    vec![Box::new(id), Box::new(v)]
}

async fn committed_ids(s: &TestSchema) -> anyhow::Result<Vec<i64>> {
    let rows = s
        .admin()
        .query(
            &format!("SELECT id FROM {}.items ORDER BY id", s.name()),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[tokio::test]
async fn many_inputs_share_few_transactions_and_wait_for_them() -> anyhow::Result<()> {
    let s = schema("pgstore_group").await?;
    let lanes: Lanes<Stmts> = Lanes::new("test", &s.url(), settings(20));
    let mut tickets = Vec::new();
    for id in 0..400i64 {
        let tx = lanes.lane((id % 4) as i32).await?;
        tx.write(|s| &s.insert, row(id, 1)).await?;
        // The lane's own reads see its uncommitted writes.
        let seen: i64 = tx.read(|s| &s.count, &[]).await?[0].get(0);
        assert!(seen >= 1);
        tickets.push(tx.ticket());
    }
    for t in tickets {
        tokio::time::timeout(Duration::from_secs(30), t.committed()).await?;
    }
    let ids = committed_ids(&s).await?;
    assert_eq!(ids, (0..400).collect::<Vec<_>>());
    // Rows written in one transaction share its id (xmin): far fewer than one per input.
    let transactions: i64 = s
        .admin()
        .query_one(
            &format!("SELECT count(DISTINCT xmin::text) FROM {}.items", s.name()),
            &[],
        )
        .await?
        .get(0);
    assert!(
        transactions < 100,
        "400 writes took {transactions} transactions"
    );
    drop(lanes);
    s.drop().await;
    Ok(())
}

#[tokio::test]
async fn writes_stay_invisible_until_their_ticket_resolves() -> anyhow::Result<()> {
    let s = schema("pgstore_group").await?;
    let lanes: Lanes<Stmts> = Lanes::new("test", &s.url(), settings(1_500));
    let tx = lanes.lane(0).await?;
    tx.write(|s| &s.insert, row(1, 1)).await?;
    let ticket = tx.ticket();
    drop(tx);
    assert_eq!(
        committed_ids(&s).await?,
        Vec::<i64>::new(),
        "not committed yet"
    );
    tokio::time::timeout(Duration::from_secs(30), ticket.committed()).await?;
    assert_eq!(committed_ids(&s).await?, vec![1]);
    drop(lanes);
    s.drop().await;
    Ok(())
}

#[tokio::test]
async fn a_killed_connection_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let s = schema("pgstore_group").await?;
    // A long linger: the transaction is still open when its connection is killed.
    let lanes: Lanes<Stmts> = Lanes::new("test", &s.url(), settings(2_000));
    let mut tickets = Vec::new();
    let mut pid = 0i32;
    for id in 0..50i64 {
        let tx = lanes.lane(0).await?;
        tx.write(|s| &s.insert, row(id, 1)).await?;
        pid = tx.read(|s| &s.pid, &[]).await?[0].get(0);
        tickets.push(tx.ticket());
    }
    s.admin()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await?;
    // Writes after the kill wait for the rebuilt transaction, or fail as unavailable (their
    // input is retried), never as refused.
    let mut retried = 0;
    for id in 50..60i64 {
        loop {
            let attempt = async {
                let tx = lanes.lane(0).await?;
                tx.write(|s| &s.insert, row(id, 1)).await?;
                Ok::<_, StoreError>(tx.ticket())
            };
            match attempt.await {
                Ok(t) => {
                    tickets.push(t);
                    break;
                }
                Err(StoreError::Unavailable(_)) => retried += 1,
                Err(e) => panic!("write {id} refused after the kill: {e}"),
            }
            assert!(retried < 100, "the lane never came back");
        }
    }
    for t in tickets {
        tokio::time::timeout(Duration::from_secs(30), t.committed()).await?;
    }
    assert_eq!(committed_ids(&s).await?, (0..60).collect::<Vec<_>>());
    drop(lanes);
    s.drop().await;
    Ok(())
}

#[tokio::test]
async fn a_refused_write_fails_alone() -> anyhow::Result<()> {
    let s = schema("pgstore_group").await?;
    let lanes: Lanes<Stmts> = Lanes::new("test", &s.url(), settings(1_000));
    let mut tickets = Vec::new();
    for id in 0..20i64 {
        let tx = lanes.lane(1).await?;
        tx.write(|s| &s.insert, row(id, 1)).await?;
        tickets.push(tx.ticket());
    }
    // Violates the CHECK: refused, and it aborts the open transaction server-side.
    let tx = lanes.lane(1).await?;
    let refused = tx.write(|s| &s.insert, row(1_000, -1)).await;
    assert!(
        matches!(refused, Err(StoreError::Query(ref m)) if m.contains("check")),
        "{refused:?}"
    );
    drop(tx);
    // The lane is rebuilt with the twenty earlier writes; later inputs go on.
    for id in 20..30i64 {
        let tx = lanes.lane(1).await?;
        tx.write(|s| &s.insert, row(id, 1)).await?;
        tickets.push(tx.ticket());
    }
    for t in tickets {
        tokio::time::timeout(Duration::from_secs(30), t.committed()).await?;
    }
    assert_eq!(committed_ids(&s).await?, (0..30).collect::<Vec<_>>());
    drop(lanes);
    s.drop().await;
    Ok(())
}
