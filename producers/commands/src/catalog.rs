//! The product catalog (`commands.products`): the SKUs orders may name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::domain::{Invalid, Sku};

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The body of `PUT /products/{sku}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    /// What the product is called, 1 to 200 characters.
    pub name: String,
}

impl ProductRequest {
    /// Checks the name.
    pub fn validate(&self) -> Result<&str, Invalid> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Invalid::new("name", "must be 1 to 200 characters"));
        }
        Ok(name)
    }
}

/// The catalog's reads and writes.
#[derive(Debug, Clone)]
pub struct ProductCatalog {
    pool: PgPool,
}

impl ProductCatalog {
    /// The catalog in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Adds the product or renames it; true when it was new.
    pub async fn put(&self, sku: &Sku, name: &str) -> sqlx::Result<(Product, bool)> {
        sqlx::query_as::<_, (String, String, DateTime<Utc>, DateTime<Utc>, bool)>(
            "INSERT INTO commands.products AS p (sku, name) VALUES ($1, $2)
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name, updated_at = now()
             RETURNING sku, name, created_at, updated_at, xmax = 0",
        )
        .bind(sku.as_str())
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map(|(sku, name, created_at, updated_at, created)| {
            (
                Product {
                    sku,
                    name,
                    created_at,
                    updated_at,
                },
                created,
            )
        })
    }

    /// Adds every `(sku, name)` missing from the catalog, in one statement
    /// (for seeding a demo or a benchmark); returns how many were new.
    pub async fn add_missing(&self, products: &[(Sku, &str)]) -> sqlx::Result<u64> {
        let skus: Vec<&str> = products.iter().map(|(sku, _)| sku.as_str()).collect();
        let names: Vec<&str> = products.iter().map(|(_, name)| *name).collect();
        let done = sqlx::query!(
            "INSERT INTO commands.products (sku, name) SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT (sku) DO NOTHING",
            &skus as &[&str],
            &names as &[&str]
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Up to `limit` products in SKU order, after `after`.
    pub async fn list(&self, after: Option<&str>, limit: i64) -> sqlx::Result<Vec<Product>> {
        sqlx::query_as!(
            Product,
            "SELECT sku, name, created_at, updated_at FROM commands.products
             WHERE $1::text IS NULL OR sku > $1 ORDER BY sku LIMIT $2",
            after,
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }
}

/// The first of `skus` (with its position) that is not in the catalog.
pub(crate) async fn first_unknown(
    pool: &PgPool,
    skus: &[&str],
) -> sqlx::Result<Option<(usize, String)>> {
    let found = sqlx::query!(
        r#"SELECT u.n - 1 AS "index!", u.sku AS "sku!"
           FROM UNNEST($1::text[]) WITH ORDINALITY AS u(sku, n)
           WHERE NOT EXISTS (SELECT 1 FROM commands.products p WHERE p.sku = u.sku)
           ORDER BY u.n LIMIT 1"#,
        skus as &[&str],
    )
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|row| (row.index as usize, row.sku)))
}
