//! The order of a list, which a request asks for and a cursor remembers.

use tributary_platform::http::Problem;

use crate::model::{Column, ReadModel};

/// The order of a list: one column, ascending or descending, then the key
/// columns in the same direction (the tie-breaker that makes it total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sort {
    pub(crate) column: &'static Column,
    pub(crate) descending: bool,
}

impl Sort {
    /// Parses `column` or `-column` from the model's sort whitelist.
    pub(crate) fn parse(model: &'static ReadModel, spec: &str) -> Result<Self, Problem> {
        let (name, descending) = match spec.strip_prefix('-') {
            Some(name) => (name, true),
            None => (spec, false),
        };
        match model.column(name) {
            Some(column) if model.sorts.contains(&name) => Ok(Self { column, descending }),
            _ => Err(Problem::invalid_field(
                "sort",
                format!(
                    "cannot sort /{} by {name:?}: sort by one of {} (prefix - for descending)",
                    model.path,
                    model.sorts.join(", ")
                ),
            )),
        }
    }

    /// `column` or `-column`.
    pub(crate) fn spec(&self) -> String {
        let sign = if self.descending { "-" } else { "" };
        format!("{sign}{}", self.column.name)
    }

    /// The columns rows are ordered by: the sort column, then the key
    /// columns that are not it.
    pub(crate) fn order(&self, model: &'static ReadModel) -> Vec<&'static Column> {
        std::iter::once(self.column)
            .chain(
                model
                    .key
                    .iter()
                    .filter(|k| **k != self.column.name)
                    .map(|k| model.column(k).expect("key columns are columns")),
            )
            .collect()
    }
}
