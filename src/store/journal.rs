//! Writing the order journal, with group commit: an order's new row or its next transitions are
//! handed in, and whatever was handed in while the previous commit was in flight goes in the
//! next one ([`super::group_commit`] queues them) — on PostgreSQL one statement for many orders,
//! on SQLite one transaction. Each writer is answered only once *its* batch has committed, with
//! the answer it would have had alone: a transition refused by its region's lease fence, or by
//! the journal having moved on, does not sink the others.

use std::collections::HashSet;
use std::time::Instant;

use sqlx::types::Json;
use uuid::Uuid;

use super::group_commit::{Leading, Pending, Waited, Write};
use super::leases::{FenceCheck, check_fence};
use super::orders::{INSERT_ORDERS, push_order_row};
use super::outbox::{OutboxRow, may_make_a_message, outbox_rows, sqlite_insert_outbox};
use super::{Pool, Store, StoreError};
use crate::domain::{JournalEntry, Order, OrderId};

/// A write ready to go into a statement: its lease check and the outbox rows its entries raise.
struct Prepared<'a> {
    write: &'a Write,
    fence: Result<Option<FenceCheck>, StoreError>,
    outbox: Vec<OutboxRow>,
}

/// The same failure, for another writer of the batch it failed.
fn copy_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Duplicate(why) => StoreError::Duplicate(why.clone()),
        StoreError::Conflict(why) => StoreError::Conflict(why.clone()),
        StoreError::LeaseLost(why) => StoreError::LeaseLost(why.clone()),
        StoreError::Corrupt(why) => StoreError::Corrupt(why.clone()),
        // Not reached: a batch that fails so is retried write by write (see `commit`).
        StoreError::Database(error) => StoreError::Unavailable(error.to_string()),
    }
}

/// A write whose batch's leader went away before answering: it may or may not have committed.
fn outcome_unknown() -> StoreError {
    StoreError::Unavailable("the journal commit carrying this write was abandoned".to_owned())
}

impl Store {
    /// Journal transactions this store has run: with group commit, fewer than the writes
    /// (for tests and the load tool).
    pub fn journal_commits(&self) -> u64 {
        self.inner.journal.commits()
    }

    /// Journals a new order: its row and its first entry, atomically.
    pub async fn create_order(
        &self,
        order: &Order,
        entry: &JournalEntry,
    ) -> Result<(), StoreError> {
        self.journal_write(Write::Create {
            order: order.clone(),
            entry: entry.clone(),
        })
        .await
    }

    /// Appends `entries` to the order's journal and moves its status row to `after` (the order
    /// with the entries applied), atomically. Refused with [`StoreError::Conflict`] when the
    /// journal has moved on since (another writer), so an entry is never written twice, and
    /// with [`StoreError::LeaseLost`] when this replica no longer holds the order's region.
    pub async fn append(&self, after: &Order, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.journal_write(Write::Append {
            after: after.clone(),
            entries: entries.to_vec(),
        })
        .await
    }

    async fn journal_write(&self, write: Write) -> Result<(), StoreError> {
        let started = Instant::now();
        let queue = &self.inner.journal;
        let result = if queue.grouped() {
            self.grouped_write(write).await
        } else {
            let (mut results, outboxed) = self.commit(vec![self.prepare(&write)]).await;
            self.outbox_written(outboxed);
            let result = results.remove(0);
            metrics::histogram!("journal_batch_transitions").record(1.0);
            result
        };
        metrics::histogram!("journal_write_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    /// Queues `write`, leads if no commit is in flight (or once handed the lead), and returns
    /// its batch's answer.
    async fn grouped_write(&self, write: Write) -> Result<(), StoreError> {
        let queue = &self.inner.journal;
        let (mut ticket, leads) = queue.enqueue(write);
        if !leads {
            match ticket.wait().await {
                Waited::Answered(answer) => return answer,
                Waited::Abandoned => return Err(outcome_unknown()),
                Waited::Lead => {}
            }
        }
        let mut leading = Leading::new(queue);
        loop {
            match ticket.answered() {
                Some(Waited::Answered(answer)) => return answer,
                Some(_) => return Err(outcome_unknown()),
                None => {}
            }
            let batch = leading.take_batch().await;
            if !batch.is_empty() {
                self.commit_batch(batch).await;
                leading.landed();
            }
        }
    }

    /// Commits one batch and answers each of its writers.
    async fn commit_batch(&self, batch: Vec<Pending<Result<(), StoreError>>>) {
        let started = Instant::now();
        metrics::histogram!("journal_batch_transitions").record(batch.len() as f64);
        let prepared: Vec<Prepared<'_>> = batch.iter().map(|p| self.prepare(&p.write)).collect();
        let (results, outboxed) = self.commit(prepared).await;
        metrics::histogram!("journal_commit_seconds").record(started.elapsed().as_secs_f64());
        for (pending, result) in batch.into_iter().zip(results) {
            // A writer that stopped waiting is not told; its write stands.
            let _ = pending.done.send(result);
        }
        self.outbox_written(outboxed);
    }

    fn prepare<'a>(&self, write: &'a Write) -> Prepared<'a> {
        Prepared {
            write,
            fence: self.fence_check(&write.order().region_id),
            outbox: outbox_rows(write.entries()),
        }
    }

    /// Writes `items` in one transaction and gives each its answer, and whether any outbox row
    /// was written. When the transaction as a whole fails for a reason that is not the database
    /// being away, nothing was written and each write is tried alone, so each gets the answer it
    /// would have had by itself.
    async fn commit(&self, items: Vec<Prepared<'_>>) -> (Vec<Result<(), StoreError>>, bool) {
        self.inner.journal.count_commit();
        let together = match self.journal_pool() {
            Err(error) => Err(error),
            Ok(Pool::Postgres(pool)) => pg_write(pool, &items).await,
            Ok(Pool::Sqlite(pool)) => sqlite_write(pool, &items).await,
        };
        match together {
            Ok(answer) => answer,
            // Away, or (never seen) committed but not as counted: the same for every write.
            Err(error)
                if items.len() == 1
                    || matches!(error, StoreError::Unavailable(_) | StoreError::Corrupt(_)) =>
            {
                let mut results = Vec::with_capacity(items.len());
                results.extend((1..items.len()).map(|_| Err(copy_error(&error))));
                results.push(Err(error));
                (results, false)
            }
            Err(error) => {
                tracing::debug!(error = %error, writes = items.len(), "journal batch failed; writing its writes one by one");
                let (mut results, mut outboxed) = (Vec::with_capacity(items.len()), false);
                for item in items {
                    self.inner.journal.count_commit();
                    let alone = vec![item];
                    let result = match self.journal_pool() {
                        Err(error) => Err(error),
                        Ok(Pool::Postgres(pool)) => pg_write(pool, &alone).await,
                        Ok(Pool::Sqlite(pool)) => sqlite_write(pool, &alone).await,
                    };
                    results.push(result.and_then(|(mut one, wrote)| {
                        outboxed |= wrote;
                        one.remove(0)
                    }));
                }
                (results, outboxed)
            }
        }
    }
}

/// One column of a batch, for binding as an array.
fn col<T, U>(rows: &[T], value: impl Fn(&T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}

/// The lease held for `fence`, as the batch statement reports the lease rows it locked.
fn fence_held(fence: &FenceCheck, held: &[(String, String, i64)]) -> bool {
    held.iter().any(|(region, owner, epoch)| {
        *region == fence.region && *owner == fence.node && *epoch == fence.epoch()
    })
}

/// What the batch statement reports: the lease rows it locked (regions, owners, epochs), the
/// orders it created and moved, and how many journal entries and outbox rows it wrote.
type BatchAnswer = (
    Vec<String>,
    Vec<String>,
    Vec<i64>,
    Vec<Uuid>,
    Vec<Uuid>,
    i64,
    i64,
);

/// PostgreSQL: every write of the batch in one statement (one round trip, one transaction).
/// The lease rows of the fenced regions are key-share-locked first — a takeover (which locks its
/// row for update) waits for this commit, a renewal (expiry only) does not, and a write meeting a takeover re-reads the row and finds the new
/// epoch — then the new orders are inserted and the moved ones updated where their fence holds
/// and (for moves) their version is still the expected one; only orders so written get their
/// journal entries and the outbox rows that may become a message. The answer names what was
/// written, so each write learns its own fate.
async fn pg_write(
    pool: &sqlx::PgPool,
    items: &[Prepared<'_>],
) -> Result<(Vec<Result<(), StoreError>>, bool), StoreError> {
    const SQL: &str = concat!(
        "WITH fence AS ( \
            SELECT region_id, owner, epoch FROM region_leases \
            WHERE region_id = ANY($1::text[]) FOR KEY SHARE), \
        created AS ( \
            INSERT INTO orders (id, region_id, merchant_id, customer_id, items, total_cents, \
                pickup_lat, pickup_lon, dropoff_lat, dropoff_lon, dropoff_address, status, \
                dispatch_status, driver_id, version, created_at, updated_at, delivery_fee_cents, \
                pickup_address) \
            SELECT c.id, c.region_id, c.merchant_id, c.customer_id, c.items, c.total_cents, \
                c.pickup_lat, c.pickup_lon, c.dropoff_lat, c.dropoff_lon, c.dropoff_address, \
                c.status, c.dispatch_status, c.driver_id, c.version, c.created_at, c.updated_at, \
                c.delivery_fee_cents, c.pickup_address \
            FROM UNNEST($2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::jsonb[], $7::bigint[], \
                $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::text[], $13::text[], \
                $14::text[], $15::uuid[], $16::bigint[], $17::timestamptz[], $18::timestamptz[], \
                $19::bigint[], $20::text[], $21::text[], $22::bigint[]) \
                AS c(id, region_id, merchant_id, customer_id, items, total_cents, pickup_lat, \
                    pickup_lon, dropoff_lat, dropoff_lon, dropoff_address, status, dispatch_status, \
                    driver_id, version, created_at, updated_at, delivery_fee_cents, pickup_address, \
                    fence_owner, fence_epoch) \
            WHERE c.fence_owner IS NULL OR EXISTS (SELECT 1 FROM fence f \
                WHERE f.region_id = c.region_id AND f.owner = c.fence_owner \
                AND f.epoch = c.fence_epoch) \
            ON CONFLICT (id) DO NOTHING \
            RETURNING id), \
        moved AS ( \
            UPDATE orders o SET status = u.status, dispatch_status = u.dispatch_status, \
                driver_id = u.driver_id, version = u.version, updated_at = u.updated_at \
            FROM UNNEST($23::uuid[], $24::text[], $25::text[], $26::uuid[], $27::bigint[], \
                $28::timestamptz[], $29::bigint[], $30::text[], $31::text[], $32::bigint[]) \
                AS u(id, status, dispatch_status, driver_id, version, updated_at, expected, \
                    region_id, fence_owner, fence_epoch) \
            WHERE o.id = u.id AND o.version = u.expected AND (u.fence_owner IS NULL OR EXISTS ( \
                SELECT 1 FROM fence f WHERE f.region_id = u.region_id \
                AND f.owner = u.fence_owner AND f.epoch = u.fence_epoch)) \
            RETURNING o.id), \
        written AS (SELECT id FROM created UNION ALL SELECT id FROM moved), \
        journaled AS ( \
            INSERT INTO order_events (order_id, seq, event, detail, at) \
            SELECT e.order_id, e.seq, e.event, e.detail, e.at \
            FROM UNNEST($33::uuid[], $34::bigint[], $35::text[], $36::jsonb[], \
                $37::timestamptz[]) AS e(order_id, seq, event, detail, at) \
            WHERE e.order_id IN (SELECT id FROM written) \
            RETURNING 1), \
        outboxed AS ( \
            INSERT INTO outbox (id, order_id, seq, event, at, created_at) \
            SELECT x.id, x.order_id, x.seq, x.event, x.at, x.at \
            FROM UNNEST($38::uuid[], $39::uuid[], $40::bigint[], $41::text[], \
                $42::timestamptz[], $43::uuid[], $44::uuid[], $45::bool[]) \
                AS x(id, order_id, seq, event, at, merchant_id, customer_id, tells_customer) \
            WHERE x.order_id IN (SELECT id FROM written) AND ",
        may_make_a_message!(),
        " \
            RETURNING 1) \
        SELECT \
            ARRAY(SELECT region_id FROM fence), ARRAY(SELECT owner FROM fence), \
            ARRAY(SELECT epoch FROM fence), ARRAY(SELECT id FROM created), \
            ARRAY(SELECT id FROM moved), (SELECT COUNT(*) FROM journaled), \
            (SELECT COUNT(*) FROM outboxed)"
    );

    let mut results: Vec<Option<Result<(), StoreError>>> = Vec::with_capacity(items.len());
    let mut regions: Vec<&str> = Vec::new();
    let mut creates: Vec<(&Order, Option<&FenceCheck>)> = Vec::new();
    let mut moves: Vec<(&Order, i64, Option<&FenceCheck>)> = Vec::new();
    let mut events: Vec<(OrderId, &JournalEntry)> = Vec::new();
    let mut outbox: Vec<(&Order, &OutboxRow)> = Vec::new();
    for item in items {
        let fence = match &item.fence {
            Err(error) => {
                results.push(Some(Err(copy_error(error))));
                continue;
            }
            Ok(fence) => fence.as_ref(),
        };
        results.push(None);
        if let Some(fence) = fence
            && !regions.contains(&fence.region.as_str())
        {
            regions.push(&fence.region);
        }
        let order = item.write.order();
        match item.write.expected_version() {
            None => creates.push((order, fence)),
            Some(expected) => moves.push((order, expected, fence)),
        }
        events.extend(item.write.entries().iter().map(|e| (order.id, e)));
        outbox.extend(item.outbox.iter().map(|row| (order, row)));
    }
    if creates.is_empty() && moves.is_empty() {
        return Ok((results.into_iter().flatten().collect(), false));
    }

    // On the journal's own connections, whose planner settings keep the cached plan's moves
    // lookups by id however the table grows (see `JOURNAL_PLANNER_OPTIONS`).
    let (held_regions, held_owners, held_epochs, created, moved, journaled, outboxed): BatchAnswer =
        sqlx::query_as(SQL)
            .bind(&regions)
            .bind(col(&creates, |(o, _)| o.id.as_uuid()))
            .bind(col(&creates, |(o, _)| o.region_id.as_str()))
            .bind(col(&creates, |(o, _)| o.merchant_id.as_uuid()))
            .bind(col(&creates, |(o, _)| o.customer_id.as_uuid()))
            .bind(col(&creates, |(o, _)| Json(&o.items)))
            .bind(col(&creates, |(o, _)| o.total_cents.0))
            .bind(col(&creates, |(o, _)| o.pickup.lat))
            .bind(col(&creates, |(o, _)| o.pickup.lon))
            .bind(col(&creates, |(o, _)| o.dropoff.lat))
            .bind(col(&creates, |(o, _)| o.dropoff.lon))
            .bind(col(&creates, |(o, _)| o.dropoff_address.as_str()))
            .bind(col(&creates, |(o, _)| o.state.status.as_str()))
            .bind(col(&creates, |(o, _)| o.state.dispatch.as_str()))
            .bind(col(&creates, |(o, _)| o.driver_id.map(|d| d.as_uuid())))
            .bind(col(&creates, |(o, _)| o.version))
            .bind(col(&creates, |(o, _)| o.created_at))
            .bind(col(&creates, |(o, _)| o.updated_at))
            .bind(col(&creates, |(o, _)| o.delivery_fee_cents.0))
            .bind(col(&creates, |(o, _)| o.pickup_address.as_str()))
            .bind(col(&creates, |(_, f)| f.map(|f| f.node.as_str())))
            .bind(col(&creates, |(_, f)| f.map(FenceCheck::epoch)))
            .bind(col(&moves, |(o, ..)| o.id.as_uuid()))
            .bind(col(&moves, |(o, ..)| o.state.status.as_str()))
            .bind(col(&moves, |(o, ..)| o.state.dispatch.as_str()))
            .bind(col(&moves, |(o, ..)| o.driver_id.map(|d| d.as_uuid())))
            .bind(col(&moves, |(o, ..)| o.version))
            .bind(col(&moves, |(o, ..)| o.updated_at))
            .bind(col(&moves, |(_, expected, _)| *expected))
            .bind(col(&moves, |(o, ..)| o.region_id.as_str()))
            .bind(col(&moves, |(.., f)| f.map(|f| f.node.as_str())))
            .bind(col(&moves, |(.., f)| f.map(FenceCheck::epoch)))
            .bind(col(&events, |(id, _)| id.as_uuid()))
            .bind(col(&events, |(_, e)| e.seq))
            .bind(col(&events, |(_, e)| e.change.name()))
            .bind(col(&events, |(_, e)| Json(&e.change)))
            .bind(col(&events, |(_, e)| e.at))
            .bind(col(&outbox, |(_, row)| row.id))
            .bind(col(&outbox, |(o, _)| o.id.as_uuid()))
            .bind(col(&outbox, |(_, row)| row.seq))
            .bind(col(&outbox, |(_, row)| row.event))
            .bind(col(&outbox, |(_, row)| row.at))
            .bind(col(&outbox, |(o, _)| o.merchant_id.as_uuid()))
            .bind(col(&outbox, |(o, _)| o.customer_id.as_uuid()))
            .bind(col(&outbox, |(_, row)| row.tells_customer))
            .fetch_one(pool)
            .await?;

    let held: Vec<(String, String, i64)> = held_regions
        .into_iter()
        .zip(held_owners)
        .zip(held_epochs)
        .map(|((region, owner), epoch)| (region, owner, epoch))
        .collect();
    let created: HashSet<Uuid> = created.into_iter().collect();
    let moved: HashSet<Uuid> = moved.into_iter().collect();
    let (mut entries_due, mut outbox_due) = (0_i64, 0_i64);
    for (item, result) in items.iter().zip(results.iter_mut()) {
        if result.is_some() {
            continue;
        }
        let fence = item.fence.as_ref().ok().and_then(Option::as_ref);
        let order = item.write.order();
        let id = order.id.as_uuid();
        *result = Some(if fence.is_some_and(|fence| !fence_held(fence, &held)) {
            Err(fence.map_or_else(
                || StoreError::Conflict("lease check failed".to_owned()),
                FenceCheck::refusal,
            ))
        } else {
            match item.write.expected_version() {
                None if created.contains(&id) => Ok(()),
                None => Err(StoreError::Duplicate("orders_pkey".to_owned())),
                Some(_) if moved.contains(&id) => Ok(()),
                Some(expected) => Err(StoreError::Conflict(format!(
                    "order {} is no longer at version {expected}",
                    order.id
                ))),
            }
        });
        if matches!(result, Some(Ok(()))) {
            entries_due += item.write.entries().len() as i64;
            outbox_due += item.outbox.len() as i64;
        }
    }
    // Outbox rows that can make no message are left out (`may_make_a_message`): fewer is right.
    if journaled != entries_due || outboxed > outbox_due {
        return Err(StoreError::Corrupt(format!(
            "a journal batch wrote {journaled} of {entries_due} entries and {outboxed} of at \
             most {outbox_due} outbox rows"
        )));
    }
    Ok((results.into_iter().flatten().collect(), outboxed > 0))
}

/// SQLite: the writes in one transaction (one fsync). A write refused at its order row (lease
/// fence, version, an order that exists) has written nothing — SQLite undoes a failed statement
/// alone and the transaction goes on — so the others stand without a savepoint each (two
/// statements a write fewer). A write that fails after its order row was written fails the
/// batch: nothing of it commits, and [`Store::commit`] writes each alone.
async fn sqlite_write(
    pool: &sqlx::SqlitePool,
    items: &[Prepared<'_>],
) -> Result<(Vec<Result<(), StoreError>>, bool), StoreError> {
    let mut tx = pool.begin().await?;
    let (mut results, mut outboxed) = (Vec::with_capacity(items.len()), false);
    for item in items {
        let fence = match &item.fence {
            Err(error) => {
                results.push(Err(copy_error(error)));
                continue;
            }
            Ok(fence) => fence.as_ref(),
        };
        match sqlite_write_one(&mut tx, item, fence).await {
            Ok(written) => {
                outboxed |= written > 0;
                results.push(Ok(()));
            }
            Err(SqliteFailure::Refused(error)) if items.len() > 1 => results.push(Err(error)),
            // Alone, or part-way: rolled back on drop.
            Err(SqliteFailure::Refused(error) | SqliteFailure::PartWay(error)) => {
                return Err(error);
            }
        }
    }
    tx.commit().await?;
    Ok((results, outboxed))
}

/// How one write of a SQLite batch failed.
enum SqliteFailure {
    /// Refused at its order row, before anything of it was written.
    Refused(StoreError),
    /// Failed with part of it written, or in a way that may have ended the transaction.
    PartWay(StoreError),
}

/// Writes one write's order row, then its entries and outbox rows; returns the outbox rows
/// written.
async fn sqlite_write_one(
    tx: &mut sqlx::SqliteConnection,
    item: &Prepared<'_>,
    fence: Option<&FenceCheck>,
) -> Result<u64, SqliteFailure> {
    sqlite_write_order(tx, item, fence)
        .await
        .map_err(|error| match error {
            // Refusals of ours, or a constraint that undid its statement alone.
            StoreError::Conflict(_) | StoreError::Duplicate(_) | StoreError::LeaseLost(_) => {
                SqliteFailure::Refused(error)
            }
            other => SqliteFailure::PartWay(other),
        })?;
    sqlite_write_entries(tx, item)
        .await
        .map_err(SqliteFailure::PartWay)
}

/// The lease fence, then the order's row: inserted (a new order) or moved where it is still at
/// the version the write expects.
async fn sqlite_write_order(
    tx: &mut sqlx::SqliteConnection,
    item: &Prepared<'_>,
    fence: Option<&FenceCheck>,
) -> Result<(), StoreError> {
    check_fence!(fence, tx);
    let order = item.write.order();
    match item.write.expected_version() {
        None => {
            let mut insert = sqlx::QueryBuilder::new(INSERT_ORDERS);
            insert.push_values([order], |mut row, order| push_order_row!(row, order));
            insert.build().execute(&mut *tx).await?;
        }
        Some(expected) => {
            let moved = sqlx::query(
                "UPDATE orders SET status = $1, dispatch_status = $2, driver_id = $3, version = $4, \
                 updated_at = $5 WHERE id = $6 AND version = $7",
            )
            .bind(order.state.status.as_str())
            .bind(order.state.dispatch.as_str())
            .bind(order.driver_id.map(|d| d.as_uuid()))
            .bind(order.version)
            .bind(order.updated_at)
            .bind(order.id.as_uuid())
            .bind(expected)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved != 1 {
                return Err(StoreError::Conflict(format!(
                    "order {} is no longer at version {expected}",
                    order.id
                )));
            }
        }
    }
    Ok(())
}

/// The write's journal entries and the outbox rows they raise; returns the outbox rows written.
async fn sqlite_write_entries(
    tx: &mut sqlx::SqliteConnection,
    item: &Prepared<'_>,
) -> Result<u64, StoreError> {
    let order = item.write.order();
    for entry in item.write.entries() {
        sqlx::query(
            "INSERT INTO order_events (order_id, seq, event, detail, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order.id.as_uuid())
        .bind(entry.seq)
        .bind(entry.change.name())
        .bind(Json(&entry.change))
        .bind(entry.at)
        .execute(&mut *tx)
        .await?;
    }
    sqlite_insert_outbox(tx, order, &item.outbox).await
}
