//! The Confluent wire format: magic byte 0, the writer schema id as 4 big-endian
//! bytes, then the Avro binary datum.

use crate::{Error, Event, Result};

/// The first byte of every framed value.
pub const MAGIC: u8 = 0;
/// Length of the header before the Avro datum.
pub const HEADER_LEN: usize = 5;

/// Encodes `event` with its current schema, framed with `schema_id`.
pub fn encode<T: Event>(schema_id: u32, event: &T) -> Result<Vec<u8>> {
    let datum = event.encode()?;
    Ok(frame(schema_id, &datum))
}

/// Prefixes an Avro datum with the Confluent header.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits a framed value into the writer schema id and the Avro datum.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [_, _, _, _, _, ..] => Err(Error::Framing("magic byte is not 0")),
        _ => Err(Error::Framing("shorter than the 5-byte header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_what_frame_wrote() {
        let framed = frame(0x01020304, b"avro");
        assert_eq!(framed[..5], [0, 1, 2, 3, 4]);
        assert_eq!(split(&framed).unwrap(), (0x01020304, &b"avro"[..]));
    }

    #[test]
    fn refuses_short_values_and_wrong_magic() {
        assert!(matches!(split(&[0, 0, 0]), Err(Error::Framing(_))));
        assert!(matches!(split(&[1, 0, 0, 0, 1, 9]), Err(Error::Framing(_))));
    }
}
