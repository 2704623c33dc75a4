//! Why a command was not carried out: what every command handler, the
//! idempotency wrapper and the HTTP layer share.

use uuid::Uuid;

use crate::domain::{Invalid, OrderStatus};

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A field of the command is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The order does not exist.
    #[error("order {0} does not exist")]
    NotFound(Uuid),
    /// The order's current state does not allow the command.
    #[error("order {order_id} is {current}: it cannot become {wanted}")]
    IllegalTransition {
        order_id: Uuid,
        current: OrderStatus,
        wanted: OrderStatus,
    },
    /// The command expected another version of the aggregate (optimistic concurrency).
    #[error("order {order_id} is at version {current}, not {expected}")]
    StaleVersion {
        order_id: Uuid,
        expected: i32,
        current: i32,
    },
    /// The e-mail address belongs to another customer.
    #[error("{email} is already registered")]
    EmailTaken { email: String, customer_id: Uuid },
    /// An order line names a SKU that is not in the product catalog.
    #[error("{field}: {sku} is not in the product catalog")]
    UnknownSku { field: String, sku: String },
    /// The idempotency key was used before with a different request.
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// Anything else; nothing was written.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database"))
    }
}
