//! Compatibility levels and the checks they require, with Confluent's meaning:
//! BACKWARD lets the new schema read data written with earlier ones, FORWARD
//! lets earlier schemas read data written with the new one, FULL both; the
//! plain levels check against the latest version, the `_TRANSITIVE` ones
//! against every version.

use std::{fmt, str::FromStr};

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
};

/// A subject's (or the global) compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Any schema is accepted.
    None,
    /// The new schema reads data written with the latest version.
    Backward,
    /// The new schema reads data written with every version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema.
    Forward,
    /// Every version reads data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl Level {
    /// The global level when none is configured.
    pub const DEFAULT: Level = Level::BackwardTransitive;

    /// Every level.
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    /// The level's name on the wire, e.g. `BACKWARD_TRANSITIVE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read data written with the versions checked.
    pub const fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Whether the versions checked must read data written with the new schema.
    pub const fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Whether every version is checked rather than only the latest.
    pub const fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// The versions (oldest first) a new schema is checked against: none, the
    /// latest, or all of them.
    pub fn versions_to_check<T>(self, versions: &[T]) -> &[T] {
        match self {
            Level::None => &[],
            _ if self.transitive() => versions,
            _ => versions
                .len()
                .checked_sub(1)
                .map_or(&[], |last| &versions[last..]),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A compatibility level name that is not one of [`Level::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "invalid compatibility level {0:?}: expected one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE"
)]
pub struct InvalidLevel(pub String);

impl FromStr for Level {
    type Err = InvalidLevel;

    /// Parses a level name, ignoring ASCII case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| InvalidLevel(name.to_owned()))
    }
}

/// Why a new schema is incompatible with one registered version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The version the new schema is incompatible with.
    pub version: i32,
    /// Whether the failing direction is the new schema reading the old one's
    /// data (`true`) or the old schema reading the new one's (`false`).
    pub backward: bool,
    /// The checker's reason.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.version;
        if self.backward {
            write!(
                f,
                "the new schema cannot read data written with version {version}: {}",
                self.reason
            )
        } else {
            write!(
                f,
                "version {version} cannot read data written with the new schema: {}",
                self.reason
            )
        }
    }
}

/// Whether data written with `writer` can always be read with `reader`. A
/// partial match (resolution may fail for some values, e.g. an enum symbol
/// or union branch the reader lacks) counts as incompatible.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "only partially compatible: reading fails for some values (an enum symbol or a union branch the reader lacks)"
                .to_owned(),
        ),
        Err(error) => Err(error.to_string()),
    }
}

/// Checks `new` against `versions` (oldest first, as `(version, schema)`)
/// as `level` requires, and returns every incompatibility, newest version first.
pub fn check(level: Level, new: &Schema, versions: &[(i32, Schema)]) -> Vec<Incompatibility> {
    let mut found = Vec::new();
    for (version, old) in level.versions_to_check(versions).iter().rev() {
        if level.backward()
            && let Err(reason) = can_read(old, new)
        {
            found.push(Incompatibility {
                version: *version,
                backward: true,
                reason,
            });
        }
        if level.forward()
            && let Err(reason) = can_read(new, old)
        {
            found.push(Incompatibility {
                version: *version,
                backward: false,
                reason,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("test schema parses")
    }

    #[test]
    fn parses_level_names_ignoring_case_and_refuses_others() {
        assert_eq!(
            "backward_transitive".parse::<Level>().ok(),
            Some(Level::BackwardTransitive)
        );
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>().ok(), Some(level));
        }
        assert!("SIDEWAYS".parse::<Level>().is_err());
    }

    #[test]
    fn plain_levels_check_the_latest_version_and_transitive_ones_all() {
        let versions = [1, 2, 3];
        assert_eq!(Level::Backward.versions_to_check(&versions), &[3]);
        assert_eq!(
            Level::FullTransitive.versions_to_check(&versions),
            &[1, 2, 3]
        );
        assert!(Level::None.versions_to_check(&versions).is_empty());
        assert!(Level::Forward.versions_to_check::<i32>(&[]).is_empty());
    }

    #[test]
    fn a_new_field_without_default_breaks_backward_but_not_forward() {
        let old = record(r#"{"name":"a","type":"string"}"#);
        let new = record(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        let versions = [(1, old)];
        assert_eq!(check(Level::Backward, &new, &versions).len(), 1);
        assert!(check(Level::Forward, &new, &versions).is_empty());
        assert_eq!(check(Level::Full, &new, &versions)[0].version, 1);
    }

    #[test]
    fn a_removed_enum_symbol_is_only_partially_compatible_and_refused() {
        let schema = |symbols: &str| {
            Schema::parse_str(&format!(
                r#"{{"type":"enum","name":"E","symbols":[{symbols}]}}"#
            ))
            .expect("test schema parses")
        };
        assert!(can_read(&schema(r#""A","B""#), &schema(r#""A""#)).is_err());
        assert!(can_read(&schema(r#""A""#), &schema(r#""A","B""#)).is_ok());
    }
}
