//! Confluent wire format: magic byte `0`, 4-byte big-endian schema id, then the Avro body.

use crate::error::DecodeError;

/// The magic byte that starts every Confluent-framed record.
pub const MAGIC_BYTE: u8 = 0;
/// Header length: magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Split a framed record into its schema id and Avro body.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::ShortBuffer { len: bytes.len() });
    }
    if bytes[0] != MAGIC_BYTE {
        return Err(DecodeError::WrongMagicByte { found: bytes[0] });
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Start a framed record for `schema_id` in `buf` (cleared first).
pub fn write_header(buf: &mut Vec<u8>, schema_id: u32) {
    buf.clear();
    buf.push(MAGIC_BYTE);
    buf.extend_from_slice(&schema_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_header_and_body() {
        assert_eq!(
            split(&[0, 0, 0, 1, 2, 9, 9]).expect("framed"),
            (258, &[9u8, 9][..])
        );
        assert_eq!(split(&[0, 0, 0, 0, 7]).expect("framed").1, &[] as &[u8]);
    }

    #[test]
    fn short_and_wrong_magic_are_typed_errors() {
        assert!(matches!(
            split(&[]),
            Err(DecodeError::ShortBuffer { len: 0 })
        ));
        assert!(matches!(
            split(&[0, 0, 0, 1]),
            Err(DecodeError::ShortBuffer { len: 4 })
        ));
        assert!(matches!(
            split(b"{\"json\": true}"),
            Err(DecodeError::WrongMagicByte { found: b'{' })
        ));
    }

    #[test]
    fn header_round_trips() {
        let mut buf = vec![1, 2, 3];
        write_header(&mut buf, 0xdead_beef);
        assert_eq!(buf, [0, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(split(&buf).expect("framed").0, 0xdead_beef);
    }
}
