//! The transactional outbox: `commands.outbox`, owned here.
//!
//! A state change and the events it causes are written in one PostgreSQL
//! transaction: the caller appends an [`OutboxRecord`] (an event encoded
//! exactly as it will travel on Kafka) inside its own transaction, and the
//! relay publishes the rows later, in id order ([`relay`]).
//!
//! Everything that touches the table goes through this crate:
//!
//! - [`OutboxRecord::append`]: the one insert, inside the caller's transaction
//!   (the command API, the process manager, the task enqueuer).
//! - `commands.outbox_append(event_id, topic, key, value, headers)`: the same
//!   insert as a SQL function (migration 2006), for a caller that must write
//!   its state and its event in one statement (PlaceOrder, a chord's
//!   callback). It is this crate's SQL-level interface; no other crate names
//!   the outbox's columns.
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
//! its trigger, wake-up flag and append function are this crate's migrations
//! (2003, 2005, 2006), and later changes to the table go here.

mod record;
pub mod relay;

pub use record::{Causation, OutboxRecord, Route};

/// The outbox's migrations (`commands.outbox`'s trigger, wake-up flag and append function).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
