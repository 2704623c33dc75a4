//! The customer aggregate's command handler.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tributary_outbox::{Causation, OutboxRecord, Route};
use tributary_registry::ContractIds;
use tributary_schemas::customers::CustomerRegistered;
use uuid::Uuid;

use crate::{
    CommandError,
    domain::RegisterCustomer,
    idempotency::{self, Done, IdempotencyKey},
};

/// What RegisterCustomer answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerAccepted {
    pub customer_id: Uuid,
    pub email: String,
    pub name: String,
}

/// The customer aggregate's command handlers.
#[derive(Debug, Clone)]
pub struct Customers {
    pool: PgPool,
    registered: Route,
}

impl Customers {
    /// Handlers writing to `pool`, publishing with the schema ids in `ids`.
    pub fn new(pool: PgPool, ids: &ContractIds, topic_prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            registered: Route::of::<CustomerRegistered>(ids, topic_prefix)?,
        })
    }

    /// RegisterCustomer: a new customer, and `CustomerRegistered` in the outbox.
    /// An address already registered is refused with the customer it belongs to.
    pub async fn register(
        &self,
        customer: &RegisterCustomer,
        causation: &Causation,
        key: Option<&IdempotencyKey>,
    ) -> Result<Done<CustomerAccepted>, CommandError> {
        let customer_id = Uuid::now_v7();
        let now = DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis())
            .unwrap_or_default();
        let event = CustomerRegistered {
            customer_id: customer_id.to_string(),
            email: customer.email.clone(),
            name: customer.name.clone(),
            registered_at: now.timestamp_millis(),
        };
        let record = OutboxRecord::new(&self.registered, &event, causation)?;
        let done = idempotency::run(&self.pool, key, async move |tx: &mut PgConnection| {
            let inserted = sqlx::query!(
                "INSERT INTO commands.customers (customer_id, email, name, registered_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING",
                customer_id,
                &customer.email,
                &customer.name,
                now
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                let existing: Uuid = sqlx::query_scalar!(
                    "SELECT customer_id FROM commands.customers WHERE email = $1",
                    &customer.email
                )
                .fetch_one(&mut *tx)
                .await?;
                return Err(CommandError::EmailTaken {
                    email: customer.email.clone(),
                    customer_id: existing,
                });
            }
            record.append(tx).await?;
            Ok(CustomerAccepted {
                customer_id,
                email: customer.email.clone(),
                name: customer.name.clone(),
            })
        })
        .await?;
        if !done.replayed {
            metrics::counter!("tributary_commands_total", "command" => "register_customer")
                .increment(1);
        }
        Ok(done)
    }
}
