//! Webhook deliveries: signed, deduplicated, guarded against reaching inside
//! the network.
//!
//! A delivery is an HTTP `POST` of the event as JSON with these headers:
//!
//! - `Tributary-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256, keyed
//!   with the subscription's secret, over `<t>.<body>`. A receiver recomputes
//!   it, compares in constant time and refuses a `t` too far from its clock
//!   (replays). For a while after the secret is rotated, a second `v1=`
//!   signs with the secret it replaced: a receiver accepts the delivery when
//!   any `v1` matches its key.
//! - `Idempotency-Key` and `Tributary-Event-Id`: the event id, the same on
//!   every attempt: a receiver that saw it already acknowledges and does
//!   nothing.
//! - `Tributary-Event-Type`, `Tributary-Delivery-Attempt`.
//!
//! Any 2xx is success; `410 Gone` gives up at once; anything else (another
//! status, a timeout, a refused connection) is retried with backoff, and
//! dead-lettered after the last attempt.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::{Context, anyhow};
use apache_avro::AvroSchema;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Url, redirect::Policy};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use sqlx::PgPool;
use tributary_tasks::{Task, TaskContext, TaskError};
use uuid::Uuid;

use crate::WebhookSettings;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Tributary-Signature";

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp` (unix
/// seconds): one `v1` per secret, the current one first.
pub fn signature(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let digest = mac(secret, timestamp, body).finalize().into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex::encode(digest));
    }
    header
}

/// HMAC-SHA256 keyed with `secret` over `<timestamp>.<body>`.
fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a [`SIGNATURE_HEADER`] value against `body`: whether any of its
/// `v1` signatures is `secret`'s, each compared in constant time. What a
/// receiver does (and what our tests do).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut given = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => given.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    given
        .iter()
        .any(|given| mac(secret, timestamp, body).verify_slice(given).is_ok())
}

/// Why deliveries must not go to `url`'s host, when its address is known
/// without resolving it (an IP literal, `localhost`); `None` when it may.
pub fn target_refusal(url: &Url, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    match url.host()? {
        url::Host::Ipv4(ip) => refused_address(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => refused_address(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            (name == "localhost" || name.ends_with(".localhost"))
                .then(|| format!("{name} is a loopback name"))
        }
    }
}

/// Why `ip` is not a public address; `None` when it is.
fn refused_address(ip: IpAddr) -> Option<String> {
    let private = match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                // 100.64.0.0/10 (carrier-grade NAT), 0.0.0.0/8, 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4
                || (a == 100 && (64..128).contains(&b))
                || a == 0
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return refused_address(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || v6.is_multicast()
                    // 2001:db8::/32, documentation
                    || (v6.segments()[0] == 0x2001 && v6.segments()[1] == 0xdb8)
            }
        },
    };
    private.then(|| {
        format!("{ip} is not a public address (loopback, private, link-local or reserved)")
    })
}

/// Resolves names to public addresses only: a name that resolves to a
/// private one (a DNS record pointing inside, a rebinding attack) is refused
/// at connection time, whatever it resolved to when the subscription was made.
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|addr| refused_address(addr.ip()).is_none())
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address ({all:?}): refused (notifier.webhooks.allow_private_targets)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of deliveries: no redirects (a redirect could lead
/// inside), no proxy (the guard must see the real target), the timeout.
pub fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    tributary_platform::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("tributary-notifier/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().context("building the webhook client")
}

/// The arguments of a delivery: which subscription, which event, and the
/// body, fixed when the event was consumed so every attempt sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "tributary.notifier")]
pub struct WebhookDelivery {
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
}

/// The task that delivers one event to one subscription.
#[derive(Debug, Clone)]
pub struct DeliverWebhook {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl DeliverWebhook {
    /// Deliveries with `settings`, their dedupe record in `pool`.
    pub fn new(pool: PgPool, settings: WebhookSettings) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            client: client(&settings)?,
            settings,
        })
    }
}

impl Task for DeliverWebhook {
    const NAME: &'static str = "notifier.webhook";
    type Args = WebhookDelivery;

    async fn run(
        &self,
        ctx: TaskContext,
        args: WebhookDelivery,
    ) -> Result<serde_json::Value, TaskError> {
        let subscription_id = Uuid::parse_str(&args.subscription_id)
            .map_err(|e| TaskError::Permanent(anyhow!("subscription_id: {e}")))?;
        if crate::deliveries::delivered(
            &self.pool,
            "webhook",
            &args.subscription_id,
            &args.event_id,
        )
        .await?
        {
            return Ok(json!({"already_delivered": true}));
        }
        let target: Option<(String, String, Option<String>)> = sqlx::query!(
            "SELECT url, secret,
                    CASE WHEN previous_secret_expires_at > now() THEN previous_secret END AS previous
             FROM notifier.subscriptions WHERE subscription_id = $1",
            subscription_id
        )
        .fetch_optional(&self.pool)
        .await
        .context("reading the subscription")?
        .map(|r| (r.url, r.secret, r.previous));
        let Some((url, secret, previous)) = target else {
            return Ok(json!({"skipped": "the subscription was deleted"}));
        };
        let secrets: Vec<&str> = std::iter::once(secret.as_str())
            .chain(previous.as_deref())
            .collect();
        let url = Url::parse(&url).map_err(|e| TaskError::Permanent(anyhow!("url: {e}")))?;
        if let Some(refusal) = target_refusal(&url, self.settings.allow_private_targets) {
            return Err(TaskError::Permanent(anyhow!("{url}: {refusal}")));
        }
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(&secrets, timestamp, args.body.as_bytes()),
            )
            .header("Idempotency-Key", &args.event_id)
            .header("Tributary-Event-Id", &args.event_id)
            .header("Tributary-Event-Type", &args.event_type)
            .header("Tributary-Delivery-Attempt", ctx.attempt.to_string())
            .body(args.body)
            .send()
            .await
            .map_err(|e| TaskError::Retry(anyhow::Error::new(e).context(format!("POST {url}"))))?;
        let status = response.status();
        let answer = read_capped(response, self.settings.max_response_bytes).await;
        if status.is_success() {
            crate::deliveries::record_delivery(
                &self.pool,
                "webhook",
                &args.subscription_id,
                &args.event_id,
                ctx.attempt,
                Some(status.as_u16()),
            )
            .await?;
            return Ok(json!({"status": status.as_u16(), "attempt": ctx.attempt}));
        }
        let error = anyhow!("POST {url}: HTTP {status}: {answer}");
        Err(if status == reqwest::StatusCode::GONE {
            TaskError::Permanent(error)
        } else {
            TaskError::Retry(error)
        })
    }
}

/// At most `cap` bytes of the answer, as text for an error message.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let header = signature(&["whsec_test"], 1_700_000_000, b"{\"id\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("whsec_test", &header, b"{\"id\":1}"));
        assert!(!verify("whsec_test", &header, b"{\"id\":2}"));
        assert!(!verify("another", &header, b"{\"id\":1}"));
        assert!(!verify("whsec_test", "v1=00", b"{\"id\":1}"));
    }

    #[test]
    fn while_secrets_overlap_either_verifies() {
        let body = b"{\"id\":1}";
        let header = signature(&["whsec_new", "whsec_old"], 1_700_000_000, body);
        assert_eq!(header.matches("v1=").count(), 2);
        assert!(header.starts_with(&signature(&["whsec_new"], 1_700_000_000, body)));
        assert!(verify("whsec_new", &header, body));
        assert!(verify("whsec_old", &header, body));
        assert!(!verify("whsec_other", &header, body));
    }

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(refused_address(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(refused_address(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_inside_are_refused() {
        use reqwest::dns::Resolve;
        let refused = PublicOnly.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
    }
}
