//! The Rust types and the `.avsc` files must say the same thing.

use std::collections::BTreeSet;

use apache_avro::Schema;
use serde_json::Value;
use tributary_schemas::{
    CONTRACT, Event, customers::*, framing, orders::*, payments::*, warehouse::*,
};

/// The schema as JSON without `doc` keys: docs live in the `.avsc` only.
fn structure(schema: &Schema) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("doc");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(schema).unwrap();
    strip(&mut json);
    json
}

fn assert_bound<T: Event>() {
    let from_avsc = Schema::parse_str(T::history().current())
        .unwrap_or_else(|e| panic!("{}: .avsc does not parse: {e}", T::FULL_NAME));
    assert_eq!(
        structure(&T::get_schema()),
        structure(&from_avsc),
        "{}: the Rust type and its current .avsc disagree",
        T::FULL_NAME
    );
    assert_eq!(from_avsc.name().unwrap().fullname(None), T::FULL_NAME);
}

#[test]
fn every_rust_type_matches_its_current_avsc() {
    assert_bound::<CustomerRegistered>();
    assert_bound::<OrderPlaced>();
    assert_bound::<OrderCancelled>();
    assert_bound::<OrderPaid>();
    assert_bound::<OrderShipped>();
    assert_bound::<OrderDelivered>();
    assert_bound::<OrderRefunded>();
    assert_bound::<PaymentCaptured>();
    assert_bound::<PaymentFailed>();
    assert_bound::<RefundIssued>();
    assert_bound::<ShipmentDispatched>();
    assert_bound::<ShipmentDelivered>();
}

#[test]
fn every_avsc_folder_is_in_the_contract_with_all_its_versions() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/avro");
    let on_disk: BTreeSet<(String, usize)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let versions = std::fs::read_dir(entry.path()).unwrap().count();
            (entry.file_name().into_string().unwrap(), versions)
        })
        .collect();
    let in_contract: BTreeSet<(String, usize)> = CONTRACT
        .iter()
        .map(|history| {
            let h = history();
            (h.full_name.to_owned(), h.versions.len())
        })
        .collect();
    assert_eq!(on_disk, in_contract);
}

#[test]
fn an_event_round_trips_through_the_wire_format() {
    let event = OrderPlaced {
        order_id: "0190f1d2-0000-7000-8000-000000000001".into(),
        customer_id: "0190f1d2-0000-7000-8000-0000000000aa".into(),
        currency: "EUR".into(),
        lines: vec![
            OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_minor: 1250,
            },
            OrderLine {
                sku: "SKU-2".into(),
                quantity: 1,
                unit_price_minor: 99,
            },
        ],
        total_minor: 2599,
        placed_at: 1_732_406_400_000,
        channel: Some("web".into()),
    };
    let framed = framing::encode(7, &event).unwrap();
    let (id, datum) = framing::split(&framed).unwrap();
    assert_eq!(id, 7);
    assert_eq!(OrderPlaced::decode(datum).unwrap(), event);
    // The resolving path agrees with the fast path.
    assert_eq!(
        OrderPlaced::decode_resolving(OrderPlaced::schema(), datum).unwrap(),
        event
    );
    let decoded =
        <OrderEvent as tributary_schemas::Decode>::decode(OrderPlaced::FULL_NAME, None, datum)
            .unwrap();
    assert_eq!(decoded, Some(OrderEvent::Placed(event)));
}

#[test]
fn decoding_refuses_truncated_and_padded_datums() {
    let event = OrderCancelled {
        order_id: "o-1".into(),
        reason: "r".into(),
        cancelled_at: 1,
    };
    let datum = event.encode().unwrap();
    assert!(OrderCancelled::decode(&datum[..datum.len() - 1]).is_err());
    let mut padded = datum.clone();
    padded.push(0);
    assert!(OrderCancelled::decode(&padded).is_err());
}

#[test]
fn a_newer_writer_with_an_added_optional_field_resolves_into_the_current_type() {
    let v2 = Schema::parse_str(
        r#"{"type":"record","name":"OrderCancelled","namespace":"shop.orders","fields":[
            {"name":"order_id","type":"string"},
            {"name":"reason","type":"string"},
            {"name":"cancelled_at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"cancelled_by","type":["null","string"],"default":null}]}"#,
    )
    .unwrap();
    let value = apache_avro::types::Value::Record(vec![
        ("order_id".into(), "o-1".into()),
        ("reason".into(), "r".into()),
        (
            "cancelled_at".into(),
            apache_avro::types::Value::TimestampMillis(5),
        ),
        (
            "cancelled_by".into(),
            apache_avro::types::Value::Union(1, Box::new("ops".into())),
        ),
    ]);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&v2)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let decoded = OrderCancelled::decode_resolving(&v2, &datum).unwrap();
    assert_eq!(
        decoded,
        OrderCancelled {
            order_id: "o-1".into(),
            reason: "r".into(),
            cancelled_at: 5
        }
    );
}
