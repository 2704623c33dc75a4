//! One shutdown coordinator per process.
//!
//! Named tasks run until the first of: a signal (SIGINT/SIGTERM), a task
//! failing, or a task ending. Then every task is cancelled through one token
//! and given `grace` to finish; a second signal exits at once (code 130).

use std::{future::Future, time::Duration};

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs a process's named tasks and stops them together.
#[derive(Debug)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A coordinator with no tasks yet.
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    /// The token every task watches; cancelled when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts a named task. It should return when the token is cancelled.
    pub fn spawn<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.to_owned();
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Waits for a signal or the first task to end, cancels the rest and waits
    /// up to `grace` for them. Returns the first failure, if any.
    pub async fn run(mut self, grace: Duration) -> anyhow::Result<()> {
        let signals = listen_for_signals(self.token.clone());
        let mut first_error = None;
        tokio::select! {
            () = self.token.cancelled() => tracing::info!("shutting down"),
            Some(joined) = self.tasks.join_next() => {
                first_error = record(joined);
                if first_error.is_none() {
                    tracing::info!("a task finished; shutting down the others");
                }
            }
        }
        self.token.cancel();
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                let error = record(joined);
                if first_error.is_none() {
                    first_error = error;
                }
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            self.tasks.abort_all();
            first_error.get_or_insert_with(|| anyhow!("tasks did not stop within {grace:?}"));
        }
        signals.abort();
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn record(
    joined: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::info!(task = %name, "task stopped");
            None
        }
        Ok((name, Err(error))) => {
            tracing::error!(task = %name, error = format!("{error:#}"), "task failed");
            Some(error.context(format!("task {name} failed")))
        }
        Err(join) => Some(anyhow!("a task panicked: {join}")),
    }
}

fn listen_for_signals(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for round in 0.. {
            if wait_for_signal().await.is_err() {
                return;
            }
            if round == 0 {
                tracing::info!("signal received; stopping (send another to exit at once)");
                token.cancel();
            } else {
                tracing::warn!("second signal; exiting now");
                std::process::exit(130);
            }
        }
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_stops_every_task_and_is_returned() {
        let mut shutdown = Shutdown::new();
        let token = shutdown.token();
        shutdown.spawn("waits", async move {
            token.cancelled().await;
            Ok(())
        });
        shutdown.spawn("fails", async { Err(anyhow!("boom")) });
        let error = shutdown.run(Duration::from_secs(5)).await.unwrap_err();
        assert!(format!("{error:#}").contains("fails"), "{error:#}");
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_token_is_aborted_after_the_grace_period() {
        let mut shutdown = Shutdown::new();
        shutdown.spawn("stubborn", std::future::pending());
        shutdown.spawn("done", async { Ok(()) });
        let error = shutdown.run(Duration::from_millis(50)).await.unwrap_err();
        assert!(error.to_string().contains("did not stop"), "{error}");
    }
}
