//! The shop's asynchronous tasks, run by the task worker:
//!
//! - [`IssueInvoice`] (`shop.invoice`): an invoice generated and stored
//!   when an order is paid; the notifier enqueues it ([`InvoiceOnPaid`]) in
//!   the transaction that consumes the `OrderPaid` event.
//! - [`UnpaidReminders`] (`shop.unpaid_reminders`, periodic): finds the
//!   orders left unpaid past a threshold and subdivides the work: a chord of
//!   one [`RemindCustomer`] (`shop.remind_unpaid`) per customer, then
//!   [`RemindersDone`] (`shop.unpaid_reminders.done`) once all have finished.
//! - [`DailyReport`] (`shop.daily_report`, periodic): a day's sales from the
//!   read model, e-mailed to `notifier.email.reports_to`.
//!
//! They read the read model (`read_model.orders`, `order_lines`,
//! `daily_sales`) as analysts do, and retry while an event they react to is
//! not projected yet. Every side effect is keyed so a re-run repeats nothing.

mod invoice;
mod reminders;
mod report;

pub use invoice::{InvoiceArgs, InvoiceOnPaid, IssueInvoice};
pub use reminders::{
    RemindArgs, RemindCustomer, RemindersDone, UnpaidReminders, UnpaidRemindersArgs,
};
pub use report::{DailyReport, DailyReportArgs};

use sqlx::PgPool;
use tributary_notifier::email::SendEmail;
use tributary_tasks::Catalog;

/// The shop tasks' tables (`shop_tasks` schema).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `catalog` with every shop task; e-mails go through `email`, reports to `reports_to`.
pub fn with_tasks(
    catalog: Catalog,
    pool: &PgPool,
    email: &SendEmail,
    reports_to: &[String],
) -> Catalog {
    catalog
        .with(IssueInvoice::new(pool.clone()))
        .with(UnpaidReminders::new(pool.clone()))
        .with(RemindCustomer::new(pool.clone(), email.clone()))
        .with(RemindersDone)
        .with(DailyReport::new(
            pool.clone(),
            email.clone(),
            reports_to.to_vec(),
        ))
}
