//! The transactional outbox: `commands.outbox`, owned here.
//!
//! A state change and the events it causes are written in one PostgreSQL
//! transaction: the caller appends an [`OutboxRecord`] (an event encoded
//! exactly as it will travel on Kafka) inside its own transaction, and the
//! relay publishes the rows later, in id order ([`relay`]).
//!
//! Everything that touches the table goes through this crate:
//!
//! - [`OutboxRecord::append`]: the insert, inside the caller's transaction
//!   (the command API, the process manager, the task enqueuer).
//! - [`outbox_query!`]: the same insert at the end of a caller's own
//!   statement, for a caller that must write its state and its events in one
//!   round trip (PlaceOrder; a chord's callbacks). It names the outbox's
//!   columns, so no other crate does; the statement is still checked at
//!   compile time as a whole.
//! - [`relay`]: the reads, updates and deletes the relay needs, and the
//!   wake-up machinery (the insert trigger's NOTIFY, the idle flag).
//!
//! ```no_run
//! # async fn example(conn: &mut sqlx::PgConnection, record: tributary_outbox::OutboxRecord) -> sqlx::Result<()> {
//! // Inside the caller's transaction, after its own writes:
//! record.append(conn).await?;
//! # Ok(()) }
//! ```
//!
//! The table itself was created by the command side's first migration
//! (2001, with the orders; a migration's text cannot change once applied);
//! its trigger and wake-up flag are this crate's migrations (2003, 2005),
//! and later changes to the table go here.

mod record;
pub mod relay;

pub use record::{Causation, OutboxRecord, Route};

/// A compile-checked statement (`sqlx::query!`) that ends by inserting into
/// the outbox: `$prelude` (the caller's `WITH … ( … ), … ( … ) ` writing its
/// own state, or `""`), then `INSERT INTO commands.outbox (event_id, topic,
/// key, value, headers) `, then `$rows` (`VALUES ($n, …)` or a `SELECT` of
/// the five columns), with the statement's arguments in `$` order.
///
/// One statement is one round trip, and without a transaction of its own
/// (PlaceOrder without an idempotency key) it commits by itself.
///
/// ```ignore
/// tributary_outbox::outbox_query!(
///     "WITH done AS (UPDATE app.things SET done = true WHERE id = $1) ",
///     "VALUES ($2, $3, $4, $5, $6)",
///     id, record.event_id, record.topic, record.key, record.value, record.headers_json(),
/// )
/// .execute(&mut *tx)
/// .await?;
/// ```
#[macro_export]
macro_rules! outbox_query {
    ($prelude:literal, $rows:literal $(, $arg:expr)* $(,)?) => {
        ::sqlx::query!(
            $prelude + "INSERT INTO commands.outbox (event_id, topic, key, value, headers) " + $rows
            $(, $arg)*
        )
    };
}

/// The outbox's migrations (`commands.outbox`'s trigger and wake-up flag).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
