//! TLS for outbound HTTP (reqwest) and PostgreSQL (sqlx) is rustls with the
//! `ring` provider; install it once per process before building an HTTP client.

/// Installs rustls' `ring` crypto provider as the process default. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
