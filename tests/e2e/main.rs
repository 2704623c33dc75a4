//! End-to-end tests over real services: PostgreSQL (`DATABASE_URL`, default
//! the local server) and a Kafka-compatible broker (`KAFKA_BROKERS`, default
//! 127.0.0.1:9092; `.ci/run` starts tansu there).
//!
//! Every test gets its own database, topic prefix and consumer groups, so
//! tests run in parallel. Logs: `TEST_LOG=1`.

mod analyst;
mod auth;
mod bad_input;
mod cli;
mod commands;
mod dlq;
mod helpers;
mod ingest;
mod notifier;
mod process_manager;
mod projector;
mod query;
mod read_models;
mod relay;
mod schema_evolution;
mod shop;
mod shop_tasks;
mod simulate;
mod tasks;
mod walking_skeleton;
