//! Tributary: an event-driven shop on Kafka. One binary, a role per subcommand.
//!
//! This crate assembles the roles (`app`), and holds the `demo` and the
//! `bench`; the roles themselves live in `producers/`, `consumers/` and
//! `shared/`, the Avro contract in `schemas/`.

pub mod app;
pub mod bench;
pub mod ctl;
pub mod demo;
pub mod settings;
pub mod simulate;
pub mod traffic;

pub use app::{App, Listeners, Role};
pub use settings::Settings;
