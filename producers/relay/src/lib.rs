//! The outbox relay: publishes `commands.outbox` rows to Kafka in id order and
//! marks them published only after the broker acknowledged them. The outbox
//! is the `tributary-outbox` crate's table; the relay reads and updates it
//! through that crate.
//!
//! - The producer is idempotent with `acks=all`; records are keyed by
//!   aggregate id, so one order's events land on one partition in order.
//!   With idempotence librdkafka keeps a partition gap-less: if a record
//!   fails, the records after it on that partition fail too, so marking every
//!   acknowledged row never lets a later event overtake an earlier one.
//! - A crash between the acknowledgement and the mark republishes the rows:
//!   delivery is at-least-once and consumers are idempotent.
//! - One relay publishes at a time: the leader holds a PostgreSQL advisory
//!   lock on its own connection; standbys take over when that connection dies.
//! - A busy relay reads the outbox round after round; only after a round
//!   found nothing does it ask inserts to NOTIFY it (a flag the outbox
//!   trigger reads), because a NOTIFY serializes the commits of concurrent
//!   commands. Polling every `poll_interval` is the fallback.

use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgListener};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The advisory lock key of the relay leader ("tributary relay").
const LEADER_LOCK: i64 = 0x7472_6962_7265_6c61;

use tributary_outbox::relay as outbox;
pub use tributary_outbox::relay::CHANNEL;

/// Settings of the relay role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Most rows published per round trip.
    pub batch_size: i64,
    /// Longest wait between looks at the outbox when no notification arrives
    /// (the relay wakes on LISTEN/NOTIFY; this is the fallback).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Wait after deliveries failed (Kafka unreachable) before trying again.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// How often a standby relay tries to become the leader.
    #[serde(with = "humantime_serde")]
    pub standby_interval: Duration,
    /// How often published rows older than `retention` are deleted.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// How long published rows stay in the outbox (for inspection) before clean-up.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
            retry_interval: Duration::from_millis(500),
            standby_interval: Duration::from_secs(1),
            cleanup_interval: Duration::from_secs(60),
            retention: Duration::from_secs(3600),
        }
    }
}

/// What one round of publishing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Rows acknowledged by the broker and marked published.
    pub published: usize,
    /// Rows whose delivery failed; they stay in the outbox for the next round.
    pub failed: usize,
}

/// Publishes the outbox.
pub struct Relay {
    pool: PgPool,
    producer: std::sync::Mutex<FutureProducer>,
    producer_config: ClientConfig,
    settings: RelaySettings,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `pool` producing with `producer_config`
    /// (see `KafkaSettings::producer_config`).
    pub fn new(
        pool: PgPool,
        producer_config: &ClientConfig,
        settings: RelaySettings,
    ) -> anyhow::Result<Self> {
        let producer = producer_config
            .create()
            .context("creating the relay's Kafka producer")?;
        Ok(Self {
            pool,
            producer: std::sync::Mutex::new(producer),
            producer_config: producer_config.clone(),
            settings,
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .lock()
            .expect("the producer lock is never poisoned")
            .clone()
    }

    /// Replaces the producer after failed deliveries. An idempotent producer
    /// whose broker lost its state (a restarted broker, an expired producer
    /// id) can keep timing out; a new one starts a fresh sequence. Everything
    /// the old one had in flight has failed by now, so order is kept.
    fn renew_producer(&self) -> anyhow::Result<()> {
        let producer = self
            .producer_config
            .create()
            .context("re-creating the relay's Kafka producer")?;
        *self
            .producer
            .lock()
            .expect("the producer lock is never poisoned") = producer;
        metrics::counter!("tributary_relay_producer_renewals_total").increment(1);
        Ok(())
    }

    /// Publishes until `token` is cancelled; standby while another relay leads.
    pub async fn run(&self, token: CancellationToken) -> anyhow::Result<()> {
        while !token.is_cancelled() {
            let Some(mut leader) = self.try_lead().await? else {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(self.settings.standby_interval) => continue,
                }
            };
            tracing::info!("relay is the leader");
            let outcome = self.lead(&mut leader, &token).await;
            // Closing the connection releases the advisory lock.
            let _ = leader.close().await;
            if let Err(error) = outcome {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "relay lost its database connection; retrying"
                );
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(self.settings.standby_interval) => {}
                }
            }
        }
        // Whatever is in flight was already awaited by the last round.
        self.producer().flush(Duration::from_secs(5)).ok();
        Ok(())
    }

    /// A dedicated connection holding the leader lock, or `None` if another relay leads.
    async fn try_lead(&self) -> anyhow::Result<Option<PgConnection>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("connecting the relay")?
            .detach();
        let leader = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1) AS "leader!""#,
            LEADER_LOCK
        )
        .fetch_one(&mut conn)
        .await?;
        Ok(leader.then_some(conn))
    }

    async fn lead(&self, conn: &mut PgConnection, token: &CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("connecting the outbox listener")?;
        listener
            .listen(CHANNEL)
            .await
            .context("listening for outbox notifications")?;
        let mut cleanup = tokio::time::interval(self.settings.cleanup_interval);
        cleanup.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut reported = None::<Instant>;
        // Whether inserts are asked to notify: only once a round found nothing.
        let mut idle = false;
        set_idle(conn, idle).await?;
        while !token.is_cancelled() {
            let round = self.publish_round(conn).await?;
            let found = round.published + round.failed > 0;
            if found && idle {
                set_idle(conn, false).await?;
                idle = false;
            } else if !found && !idle {
                // Ask to be woken, then look once more: an insert that read
                // the flag before it was set is committed by now.
                set_idle(conn, true).await?;
                idle = true;
                continue;
            }
            if reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                let (count, age) = backlog(&mut *conn).await?;
                metrics::gauge!("tributary_relay_backlog_events").set(count as f64);
                metrics::gauge!("tributary_relay_backlog_age_seconds").set(age);
                reported = Some(Instant::now());
            }
            if round.failed > 0 {
                tracing::warn!(
                    failed = round.failed,
                    "deliveries failed; retrying shortly with a new producer"
                );
                self.renew_producer()?;
            } else if found {
                // Busy: inserts do not notify, so read again straight away.
                continue;
            }
            let wait = if round.failed > 0 {
                self.settings.retry_interval
            } else {
                self.settings.poll_interval
            };
            tokio::select! {
                () = token.cancelled() => break,
                notification = listener.recv(), if round.failed == 0 => {
                    if let Err(error) = notification {
                        tracing::debug!(error = %error, "outbox listener interrupted; polling until it reconnects");
                        tokio::time::sleep(self.settings.poll_interval).await;
                    }
                }
                () = tokio::time::sleep(wait) => {}
                _ = cleanup.tick() => {
                    let cleaned = self.clean_up(conn).await?;
                    metrics::counter!("tributary_relay_cleaned_total").increment(cleaned);
                }
            }
        }
        Ok(())
    }

    /// Deletes published rows older than the retention, a bounded slice at a time.
    pub async fn clean_up(&self, conn: &mut PgConnection) -> anyhow::Result<u64> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.settings.retention)
                .context("relay.retention is too long")?;
        outbox::delete_published_before(conn, cutoff)
            .await
            .context("cleaning up published rows")
    }

    /// One unit of work: publish up to `batch_size` unpublished rows in id
    /// order, wait for every acknowledgement, mark the acknowledged rows.
    pub async fn publish_round(&self, conn: &mut PgConnection) -> anyhow::Result<Round> {
        let rows = outbox::unpublished(&mut *conn, self.settings.batch_size)
            .await
            .context("reading the outbox")?;
        if rows.is_empty() {
            return Ok(Round::default());
        }

        let producer = self.producer();
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut headers = OwnedHeaders::new_with_capacity(row.headers.len());
            for (name, value) in row.headers.iter() {
                if let Some(value) = value.as_str() {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(value),
                    });
                }
            }
            let record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(&row.value)
                .headers(headers);
            // Enqueueing waits while librdkafka's queue is full.
            deliveries.push(producer.send(record, rdkafka::util::Timeout::Never));
        }
        let results = join_all(deliveries).await;

        let mut published = Vec::with_capacity(rows.len());
        let mut failed = 0;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(_) => published.push(row.id),
                Err((error, _)) => {
                    failed += 1;
                    tracing::debug!(id = row.id, topic = %row.topic, error = %error, "delivery failed");
                }
            }
        }
        if !published.is_empty() {
            outbox::mark_published(&mut *conn, &published)
                .await
                .context("marking rows published")?;
        }
        metrics::counter!("tributary_relay_published_total").increment(published.len() as u64);
        metrics::counter!("tributary_relay_failed_total").increment(failed as u64);
        Ok(Round {
            published: published.len(),
            failed,
        })
    }

    /// A connection for driving [`Relay::publish_round`] directly (tests, benchmarks).
    pub async fn connection(&self) -> anyhow::Result<PgConnection> {
        Ok(self.pool.acquire().await?.detach())
    }
}

/// Tells inserting transactions whether to notify (the leader calls it; public
/// for tests): see [`tributary_outbox::relay::set_idle`].
pub async fn set_idle(conn: &mut PgConnection, idle: bool) -> anyhow::Result<()> {
    outbox::set_idle(conn, idle)
        .await
        .context("setting the relay's idle flag")
}

/// Rows not yet published, and the age in seconds of the oldest.
pub async fn backlog(conn: &mut PgConnection) -> anyhow::Result<(i64, f64)> {
    Ok(outbox::backlog(conn).await?)
}
