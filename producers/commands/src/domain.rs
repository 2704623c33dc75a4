//! The order aggregate: validated values, the state machine, and the commands.
//!
//! Wire types (Avro, JSON) are converted into these explicitly; nothing here
//! knows about HTTP or Kafka.

use std::{collections::HashSet, fmt};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value of a command that is not acceptable, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// Path of the field in the request (`lines[2].quantity`).
    pub field: String,
    /// Why it is refused, for people.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A stock keeping unit: 1 to 64 characters of letters, digits, `-`, `_`, `.`,
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    /// Longest SKU accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates a SKU.
    pub fn parse(value: &str) -> Result<Self, String> {
        let valid_chars = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let starts_well = value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if value.is_empty() || value.len() > Self::MAX_LEN || !valid_chars || !starts_well {
            return Err(format!(
                "must be 1 to {} characters of letters, digits, '-', '_' or '.', starting with a letter or digit",
                Self::MAX_LEN
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units of one line: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    /// Most units of one line.
    pub const MAX: i64 = 10_000;

    /// Validates a quantity.
    pub fn parse(value: i64) -> Result<Self, String> {
        if !(1..=Self::MAX).contains(&value) {
            return Err(format!("must be between 1 and {}", Self::MAX));
        }
        Ok(Self(value as i32))
    }

    /// The number of units.
    pub fn get(self) -> i32 {
        self.0
    }
}

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Validates an upper-case ISO 4217 code such as `EUR`.
    pub fn parse(code: &str) -> Result<Self, String> {
        iso_currency::Currency::from_code(code)
            .map(Self)
            .ok_or_else(|| format!("{code:?} is not an ISO 4217 currency code"))
    }

    /// The three-letter code.
    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount in minor units of a currency (cents for EUR). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinorUnits(i64);

impl MinorUnits {
    /// Highest unit price accepted: 10^12 minor units.
    pub const MAX_UNIT_PRICE: i64 = 1_000_000_000_000;

    /// Validates a unit price: 0 to [`Self::MAX_UNIT_PRICE`].
    pub fn unit_price(value: i64) -> Result<Self, String> {
        if !(0..=Self::MAX_UNIT_PRICE).contains(&value) {
            return Err(format!("must be between 0 and {}", Self::MAX_UNIT_PRICE));
        }
        Ok(Self(value))
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Where an order is in its life.
///
/// placed → paid → shipped → delivered; placed → cancelled;
/// paid, shipped or delivered → refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Cancelled,
    Paid,
    Shipped,
    Delivered,
    Refunded,
}

impl OrderStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Cancelled => "cancelled",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Refunded => "refunded",
        }
    }

    /// Parses a stored status.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "placed" => Self::Placed,
            "cancelled" => Self::Cancelled,
            "paid" => Self::Paid,
            "shipped" => Self::Shipped,
            "delivered" => Self::Delivered,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }

    /// Whether the state machine allows going from `self` to `next`.
    pub fn can_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Placed, Paid)
                | (Placed, Cancelled)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Paid | Shipped | Delivered, Refunded)
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of PlaceOrder as it arrives. Converted into [`PlaceOrder`] by [`PlaceOrderRequest::validate`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// UUID of the customer.
    pub customer_id: String,
    /// ISO 4217 code for every amount of the order.
    pub currency: String,
    /// 1 to [`PlaceOrder::MAX_LINES`] lines, one per SKU.
    pub lines: Vec<LineRequest>,
    /// Where the order came from (`web`, `app`, `api`...): 1 to 32 of
    /// a-z, 0-9, `-` and `_`. Optional.
    #[serde(default)]
    pub channel: Option<String>,
}

/// One line of a PlaceOrder body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// A validated line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: MinorUnits,
}

/// A validated PlaceOrder command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub customer_id: Uuid,
    pub currency: Currency,
    pub lines: Vec<Line>,
    pub channel: Option<String>,
}

impl PlaceOrder {
    /// Most lines in one order.
    pub const MAX_LINES: usize = 100;

    /// The order total in minor units (cannot overflow within the limits).
    pub fn total_minor(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| i64::from(l.quantity.get()) * l.unit_price.get())
            .sum()
    }
}

impl PlaceOrderRequest {
    /// Checks every field, reporting the first one at fault.
    pub fn validate(&self) -> Result<PlaceOrder, Invalid> {
        let customer_id = Uuid::parse_str(&self.customer_id)
            .map_err(|_| Invalid::new("customer_id", "must be a UUID"))?;
        let currency = Currency::parse(&self.currency).map_err(|r| Invalid::new("currency", r))?;
        if self.lines.is_empty() || self.lines.len() > PlaceOrder::MAX_LINES {
            return Err(Invalid::new(
                "lines",
                format!("must hold 1 to {} lines", PlaceOrder::MAX_LINES),
            ));
        }
        let mut seen = HashSet::new();
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, line) in self.lines.iter().enumerate() {
            let sku =
                Sku::parse(&line.sku).map_err(|r| Invalid::new(format!("lines[{i}].sku"), r))?;
            if !seen.insert(sku.clone()) {
                return Err(Invalid::new(
                    format!("lines[{i}].sku"),
                    "appears on an earlier line; give each SKU one line",
                ));
            }
            let quantity = Quantity::parse(line.quantity)
                .map_err(|r| Invalid::new(format!("lines[{i}].quantity"), r))?;
            let unit_price = MinorUnits::unit_price(line.unit_price_minor)
                .map_err(|r| Invalid::new(format!("lines[{i}].unit_price_minor"), r))?;
            lines.push(Line {
                sku,
                quantity,
                unit_price,
            });
        }
        let channel = self.channel.as_deref().map(parse_channel).transpose()?;
        Ok(PlaceOrder {
            customer_id,
            currency,
            lines,
            channel,
        })
    }
}

fn parse_channel(channel: &str) -> Result<String, Invalid> {
    let valid = (1..=32).contains(&channel.len())
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(channel.to_owned())
    } else {
        Err(Invalid::new(
            "channel",
            "must be 1 to 32 of a-z, 0-9, '-' and '_'",
        ))
    }
}

/// The body of CancelOrder.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    /// Why the order is cancelled, up to 500 characters.
    #[serde(default)]
    pub reason: String,
    /// Refuse the command unless the order is at this version (optimistic concurrency).
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// A validated CancelOrder command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOrder {
    pub reason: String,
    pub expected_version: Option<i32>,
}

impl CancelOrderRequest {
    /// Longest reason accepted.
    pub const MAX_REASON: usize = 500;

    /// Checks the reason's length and the expected version.
    pub fn validate(&self) -> Result<CancelOrder, Invalid> {
        if self.reason.chars().count() > Self::MAX_REASON {
            return Err(Invalid::new(
                "reason",
                format!("must be at most {} characters", Self::MAX_REASON),
            ));
        }
        let expected_version = self
            .expected_version
            .map(|v| i32::try_from(v).ok().filter(|v| *v >= 1))
            .map(|v| {
                v.ok_or_else(|| {
                    Invalid::new("expected_version", "must be a version number, 1 or more")
                })
            })
            .transpose()?;
        Ok(CancelOrder {
            reason: self.reason.clone(),
            expected_version,
        })
    }
}

/// The body of RegisterCustomer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomerRequest {
    /// Contact address; stored lower-cased, one customer per address.
    pub email: String,
    /// Display name, 1 to 200 characters.
    pub name: String,
}

/// A validated RegisterCustomer command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterCustomer {
    pub email: String,
    pub name: String,
}

impl RegisterCustomerRequest {
    /// Longest name accepted.
    pub const MAX_NAME: usize = 200;

    /// Checks the address and the name.
    pub fn validate(&self) -> Result<RegisterCustomer, Invalid> {
        let email = self.email.trim().to_lowercase();
        if email.len() > 254 || !email_address::EmailAddress::is_valid(&email) {
            return Err(Invalid::new("email", "must be an e-mail address"));
        }
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > Self::MAX_NAME
            || name.chars().any(char::is_control)
        {
            return Err(Invalid::new(
                "name",
                format!(
                    "must be 1 to {} characters without control characters",
                    Self::MAX_NAME
                ),
            ));
        }
        Ok(RegisterCustomer {
            email,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PlaceOrderRequest {
        PlaceOrderRequest {
            customer_id: Uuid::now_v7().to_string(),
            currency: "EUR".into(),
            lines: vec![
                LineRequest {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: 1250,
                },
                LineRequest {
                    sku: "SKU-2".into(),
                    quantity: 1,
                    unit_price_minor: 99,
                },
            ],
            channel: Some("web".into()),
        }
    }

    fn field_of(request: PlaceOrderRequest) -> String {
        request.validate().unwrap_err().field
    }

    #[test]
    fn a_valid_order_totals_its_lines() {
        assert_eq!(request().validate().unwrap().total_minor(), 2599);
    }

    #[test]
    fn each_invalid_value_names_its_field() {
        let mut r = request();
        r.customer_id = "bob".into();
        assert_eq!(field_of(r), "customer_id");

        let mut r = request();
        r.currency = "EURO".into();
        assert_eq!(field_of(r), "currency");

        let mut r = request();
        r.lines.clear();
        assert_eq!(field_of(r), "lines");

        let mut r = request();
        r.lines[1].quantity = 0;
        assert_eq!(field_of(r), "lines[1].quantity");

        let mut r = request();
        r.lines[0].quantity = -3;
        assert_eq!(field_of(r), "lines[0].quantity");

        let mut r = request();
        r.lines[1].unit_price_minor = -1;
        assert_eq!(field_of(r), "lines[1].unit_price_minor");

        let mut r = request();
        r.lines[0].sku = "has space".into();
        assert_eq!(field_of(r), "lines[0].sku");

        let mut r = request();
        r.lines[1].sku = "SKU-1".into();
        assert_eq!(field_of(r), "lines[1].sku");

        for channel in ["", "Web", "web shop", &"x".repeat(33)] {
            let mut r = request();
            r.channel = Some(channel.into());
            assert_eq!(field_of(r), "channel", "{channel:?}");
        }
        let mut r = request();
        r.channel = None;
        assert_eq!(
            r.validate().unwrap().channel,
            None,
            "the channel is optional"
        );
    }

    #[test]
    fn cancel_and_register_validate_their_fields() {
        let cancel = |expected_version| CancelOrderRequest {
            reason: String::new(),
            expected_version,
        };
        assert_eq!(
            cancel(Some(2)).validate().unwrap().expected_version,
            Some(2)
        );
        assert_eq!(
            cancel(Some(0)).validate().unwrap_err().field,
            "expected_version"
        );
        assert_eq!(
            cancel(Some(1 << 40)).validate().unwrap_err().field,
            "expected_version"
        );

        let register = |email: &str, name: &str| RegisterCustomerRequest {
            email: email.into(),
            name: name.into(),
        };
        assert_eq!(
            register(" Ada@Example.COM ", "Ada")
                .validate()
                .unwrap()
                .email,
            "ada@example.com"
        );
        assert_eq!(
            register("not an address", "Ada")
                .validate()
                .unwrap_err()
                .field,
            "email"
        );
        assert_eq!(
            register("ada@example.com", "  ")
                .validate()
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            register("ada@example.com", "a\u{7}b")
                .validate()
                .unwrap_err()
                .field,
            "name"
        );
    }

    #[test]
    fn the_state_machine_allows_only_the_designed_transitions() {
        use OrderStatus::*;
        let all = [Placed, Cancelled, Paid, Shipped, Delivered, Refunded];
        let allowed = [
            (Placed, Paid),
            (Placed, Cancelled),
            (Paid, Shipped),
            (Shipped, Delivered),
            (Paid, Refunded),
            (Shipped, Refunded),
            (Delivered, Refunded),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }
}
