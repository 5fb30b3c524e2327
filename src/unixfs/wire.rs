//! Protobuf wire primitives for the two tiny messages we speak (DAG-PB and UnixFS Data).
//!
//! Hand-written rather than generated because canonical DAG-PB needs a field order that
//! generic encoders do not give (Links before Data), and because every read here is on
//! bytes from disk or a peer: each length is checked, nothing can panic or overflow.

use super::FormatError;

pub const VARINT: u8 = 0;
pub const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn varint_len(v: u64) -> u64 {
    let bits = 64 - (v | 1).leading_zeros() as u64;
    bits.div_ceil(7)
}

pub fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, VARINT);
    put_varint(out, v);
}

/// Encoded size of a length-delimited field with a one-byte key.
pub fn bytes_field_len(len: u64) -> u64 {
    1 + varint_len(len) + len
}

/// A cursor over untrusted protobuf bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return Err(FormatError::Protobuf("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(FormatError::Protobuf("truncated varint"))
    }

    /// The next field key as (field number, wire type).
    pub fn key(&mut self) -> Result<(u32, u8), FormatError> {
        let k = self.varint()?;
        let field =
            u32::try_from(k >> 3).map_err(|_| FormatError::Protobuf("field number too large"))?;
        if field == 0 {
            return Err(FormatError::Protobuf("field number 0"));
        }
        Ok((field, (k & 7) as u8))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| FormatError::Protobuf("length too large"))?;
        if len > self.buf.len() {
            return Err(FormatError::Protobuf("length runs past the end"));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    pub fn fixed32(&mut self) -> Result<u32, FormatError> {
        if self.buf.len() < 4 {
            return Err(FormatError::Protobuf("truncated fixed32"));
        }
        let (head, rest) = self.buf.split_at(4);
        self.buf = rest;
        Ok(u32::from_le_bytes([head[0], head[1], head[2], head[3]]))
    }

    /// Skips a field of a type we do not read.
    pub fn skip(&mut self, wire: u8) -> Result<(), FormatError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => {
                if self.buf.len() < 8 {
                    return Err(FormatError::Protobuf("truncated fixed64"));
                }
                self.buf = &self.buf[8..];
                Ok(())
            }
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed32().map(drop),
            _ => Err(FormatError::Protobuf("unknown wire type")),
        }
    }

    /// Fails unless the field has the wire type we expect.
    pub fn expect(wire: u8, want: u8) -> Result<(), FormatError> {
        if wire == want {
            Ok(())
        } else {
            Err(FormatError::Protobuf("field has the wrong wire type"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_length() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len() as u64, varint_len(v));
            assert_eq!(Reader::new(&out).varint().unwrap(), v);
        }
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(r.bytes().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
    }
}
