//! How a failure to apply a batch is handled.
//!
//! - **bad input**: this message will never apply. It goes to the consumer
//!   group's dead-letter topic and the partition carries on.
//! - **transient**: the database or the registry is unavailable, a
//!   deadlock, a serialization failure. The batch is retried in place, with
//!   backoff, keeping the partition's order.
//! - **fatal**: retrying cannot help and skipping would be wrong (our SQL
//!   does not match the schema, a permission is missing). The role stops
//!   with the error.
//!
//! Handlers mark their own errors with [`BadInput`] or [`Fatal`];
//! PostgreSQL errors are classified by their SQLSTATE class.

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Dead-letter the message and carry on.
    BadInput,
    /// Retry in place with backoff.
    Transient,
    /// Stop the role.
    Fatal,
}

/// Marks an error as caused by the message itself: it is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Marks an error that retrying cannot fix: the consumer stops with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Classifies `error` by the first cause that says what it is.
pub fn classify(error: &anyhow::Error) -> Failure {
    for cause in error.chain() {
        if cause.is::<BadInput>() {
            return Failure::BadInput;
        }
        if cause.is::<Fatal>() {
            return Failure::Fatal;
        }
        if let Some(error) = cause.downcast_ref::<sqlx::Error>() {
            return classify_sqlx(error);
        }
    }
    Failure::Transient
}

fn classify_sqlx(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref().map(|c| c.get(..2).unwrap_or(c)) {
            // Data exception, integrity constraint violation: the row the message makes is bad.
            Some("22" | "23") => Failure::BadInput,
            // Syntax error or access rule violation (an undefined table or
            // column, a missing permission), invalid schema or catalog name:
            // a deployment or code error that retrying will not fix.
            Some("42" | "3F") => Failure::Fatal,
            // Deadlocks and serialization failures (40), lost connections
            // (08), insufficient resources (53), operator intervention (57)...
            _ => Failure::Transient,
        },
        // The rows our own statements return do not decode: a code error.
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Decode(_) => Failure::Fatal,
        _ => Failure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_errors_keep_their_class_through_context() {
        let bad = anyhow::Error::new(BadInput("no such order".into())).context("applying");
        assert_eq!(classify(&bad), Failure::BadInput);
        let fatal = anyhow::Error::new(Fatal("misconfigured".into())).context("applying");
        assert_eq!(classify(&fatal), Failure::Fatal);
    }

    #[test]
    fn unknown_errors_are_transient() {
        assert_eq!(classify(&anyhow::anyhow!("timed out")), Failure::Transient);
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut.into()),
            Failure::Transient
        );
    }
}
