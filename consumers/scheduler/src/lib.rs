//! Periodic tasks: cron schedules from configuration.
//!
//! Any number of schedulers may run; the one holding the lease in
//! `tasks.scheduler_lease` fires. Each firing is one transaction that locks
//! the schedule's row in `tasks.schedules`, checks the tick is still due,
//! enqueues the task through the outbox and moves `next_fire_at` on: a tick
//! fires once however many schedulers run, even while the lease changes hands.
//!
//! A tick found more than `schedule_grace` late is missed (the schedulers
//! were down): [`Missed::Skip`] drops missed ticks, [`Missed::CatchUpOnce`]
//! fires once for all of them. Times are UTC; cron patterns take 5 fields, or
//! 6 with seconds first.

//!
//! The scheduler role owns `tasks.schedules` and `tasks.scheduler_lease`
//! (migration 4002, which moved here from the task library unchanged).

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use croner::Cron;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use tributary_tasks::{
    Enqueue, Enqueuer,
    schedule::{Missed, Schedule},
};

/// A tick that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule.
    pub schedule: String,
    /// The tick it fired for.
    pub tick: DateTime<Utc>,
    /// The task it enqueued.
    pub task_id: Uuid,
}

/// A schedule's row, as `ctl task schedules` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ScheduleRow {
    /// The schedule's name.
    pub name: String,
    /// Its task.
    pub task: String,
    /// Its pattern.
    pub cron: String,
    /// Its next tick.
    pub next_fire_at: DateTime<Utc>,
    /// The last tick it fired for.
    pub last_tick: Option<DateTime<Utc>>,
    /// When it last fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The task it last enqueued.
    pub last_task_id: Option<Uuid>,
}

/// Every schedule's row, by name.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<ScheduleRow>> {
    Ok(sqlx::query_as!(
        ScheduleRow,
        "SELECT name, task, cron, next_fire_at, last_tick, last_fired_at, last_task_id
         FROM tasks.schedules ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Checks schedules: unique names, known tasks, valid patterns and arguments.
pub fn validate(schedules: &[Schedule], enqueuer: &Enqueuer) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for schedule in schedules {
        let at = format!("tasks.schedules {:?}", schedule.name);
        anyhow::ensure!(names.insert(&schedule.name), "{at}: the name is used twice");
        Cron::from_str(&schedule.cron)
            .with_context(|| format!("{at}: cron {:?}", schedule.cron))?;
        request(schedule, enqueuer).with_context(|| at.clone())?;
    }
    Ok(())
}

fn request(schedule: &Schedule, enqueuer: &Enqueuer) -> anyhow::Result<Enqueue> {
    let args = serde_json::to_vec(&schedule.args)?;
    Ok(Enqueue::json(enqueuer.catalog(), &schedule.task, &args)
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .priority(schedule.priority))
}

/// Fires schedules while it holds the lease.
#[derive(Debug)]
pub struct Scheduler {
    pool: PgPool,
    enqueuer: Enqueuer,
    schedules: Vec<(Schedule, Cron)>,
    holder: String,
    lease: Duration,
    grace: Duration,
}

impl Scheduler {
    /// A scheduler of `schedules` (validated), known to the others as
    /// `holder`, holding the lease for `lease` at a time.
    pub fn new(
        pool: PgPool,
        enqueuer: Enqueuer,
        schedules: &[Schedule],
        holder: String,
        lease: Duration,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        validate(schedules, &enqueuer)?;
        let schedules = schedules
            .iter()
            .map(|s| Ok((s.clone(), Cron::from_str(&s.cron)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            pool,
            enqueuer,
            schedules,
            holder,
            lease,
            grace,
        })
    }

    /// Records the configured schedules (a changed pattern starts from now)
    /// and fires until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        self.register().await?;
        let pace = (self.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut leading = false;
        loop {
            match self.lead().await {
                Ok(lead) => {
                    if lead != leading {
                        tracing::info!(holder = %self.holder, leading = lead, "scheduler lease");
                        leading = lead;
                    }
                    if lead && let Err(error) = self.fire_due(Utc::now()).await {
                        tracing::warn!(error = format!("{error:#}"), "firing schedules failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "scheduler lease failed")
                }
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(pace) => {}
            }
        }
        if leading {
            // Let another scheduler take over at once.
            sqlx::query!(
                "UPDATE tasks.scheduler_lease SET expires_at = now() WHERE holder = $1",
                &self.holder
            )
            .execute(&self.pool)
            .await
            .ok();
        }
        Ok(())
    }

    /// Writes each configured schedule's row; a new or changed pattern's
    /// next tick is computed from now.
    pub async fn register(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        for (schedule, cron) in &self.schedules {
            let next = cron
                .find_next_occurrence(&now, false)
                .with_context(|| format!("schedule {}: no next tick", schedule.name))?;
            sqlx::query!(
        "INSERT INTO tasks.schedules (name, task, cron, next_fire_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET task = EXCLUDED.task, cron = EXCLUDED.cron,
                     next_fire_at = CASE WHEN tasks.schedules.cron = EXCLUDED.cron
                                         THEN tasks.schedules.next_fire_at
                                         ELSE EXCLUDED.next_fire_at END,
                     updated_at = now()",
        &schedule.name,
        &schedule.task,
        &schedule.cron,
        next
    )
            .execute(&self.pool)
            .await
            .context("recording a schedule")?;
        }
        Ok(())
    }

    /// Takes or renews the lease; whether this scheduler holds it.
    pub async fn lead(&self) -> anyhow::Result<bool> {
        let held: Option<bool> = sqlx::query_scalar!(
            r#"UPDATE tasks.scheduler_lease SET holder = $1, expires_at = now() + $2
               WHERE expires_at < now() OR holder = $1 RETURNING true AS "held!""#,
            &self.holder,
            // A std Duration binds as an interval; the macro expects PgInterval.
            self.lease as _
        )
        .fetch_optional(&self.pool)
        .await
        .context("taking the scheduler lease")?;
        Ok(held.unwrap_or(false))
    }

    /// Fires every schedule due at `now`, each in its own transaction.
    pub async fn fire_due(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<Fired>> {
        let mut fired = Vec::new();
        for (schedule, cron) in &self.schedules {
            if let Some(one) = self.fire(schedule, cron, now).await? {
                fired.push(one);
            }
        }
        Ok(fired)
    }

    async fn fire(
        &self,
        schedule: &Schedule,
        cron: &Cron,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Fired>> {
        let mut tx = self.pool.begin().await?;
        let next: Option<DateTime<Utc>> = sqlx::query_scalar!(
            "SELECT next_fire_at FROM tasks.schedules WHERE name = $1 FOR UPDATE",
            &schedule.name
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(next) = next.filter(|next| *next <= now) else {
            return Ok(None);
        };
        // The latest tick due: the last occurrence at or before now.
        let tick = cron
            .find_previous_occurrence(&now, true)
            .ok()
            .filter(|tick| *tick >= next)
            .unwrap_or(next);
        let late = (now - tick).to_std().unwrap_or_default();
        let fire = late <= self.grace || schedule.missed == Missed::CatchUpOnce;
        let following = cron
            .find_next_occurrence(&now, false)
            .with_context(|| format!("schedule {}: no next tick", schedule.name))?;
        let mut task_id = None;
        if fire {
            let mut request = request(schedule, &self.enqueuer)?;
            request.correlation_id = Some(format!(
                "schedule:{}:{}",
                schedule.name,
                tributary_tasks::wire::timestamp(tick)
            ));
            task_id = Some(
                self.enqueuer
                    .enqueue_in(&mut tx, &request)
                    .await
                    .map_err(|error| anyhow::anyhow!("{error}"))?,
            );
        } else {
            tracing::info!(schedule = %schedule.name, %tick, "missed tick skipped");
        }
        sqlx::query!(
            "UPDATE tasks.schedules SET next_fire_at = $2,
                 last_tick = CASE WHEN $3::uuid IS NULL THEN last_tick ELSE $4 END,
                 last_fired_at = CASE WHEN $3::uuid IS NULL THEN last_fired_at ELSE now() END,
                 last_task_id = COALESCE($3, last_task_id), updated_at = now()
             WHERE name = $1",
            &schedule.name,
            following,
            task_id,
            tick
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(task_id.map(|task_id| Fired {
            schedule: schedule.name.clone(),
            tick,
            task_id,
        }))
    }
}

/// The scheduler's tables (`tasks.schedules`, `tasks.scheduler_lease`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
