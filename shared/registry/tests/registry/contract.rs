//! The contract's history: every version of every record must be accepted,
//! in order, at the default level. A new `.avsc` version that breaks
//! BACKWARD_TRANSITIVE compatibility fails here, in CI, before any deploy.

use tributary_schemas::{CONTRACT, subject};

use crate::helpers::spawn_registry;

#[tokio::test]
async fn every_version_of_every_contract_record_is_accepted_in_order_under_backward_transitive() {
    let app = spawn_registry().await;
    app.set_level(None, "BACKWARD_TRANSITIVE").await;
    for history in CONTRACT.iter().map(|history| history()) {
        let subject = subject(history.topic.name(), history.full_name);
        for (i, version) in history.versions.iter().enumerate() {
            let reply = app.register(&subject, version).await;
            assert_eq!(
                reply.status,
                200,
                "{} v{} is refused by the registry: {}",
                history.full_name,
                i + 1,
                reply.text
            );
        }
        let versions = app.get(&format!("/subjects/{subject}/versions")).await.body;
        let count = versions.as_array().map_or(0, Vec::len);
        assert_eq!(
            count,
            history.versions.len(),
            "{}: each version is distinct",
            history.full_name
        );
    }
}
