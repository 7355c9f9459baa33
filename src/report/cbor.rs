//! CBOR encoding of a report: a small serde `Serializer` that writes the wire form the spec pins.
//!
//! Why our own writer and not ciborium's: ciborium 0.2 always shrinks a float to the smallest
//! width that keeps its value (12.5 becomes half-precision `f9 4a40`) and has no option to force
//! float64, while the spec's golden bytes (metrics-report.md A.7) use `fb` float64. This writer
//! emits only definite lengths, text keys, major 0/1 integers and float64; it refuses unknown
//! lengths and enum variants, which the report view never produces. Decoding is `cbor_read.rs`.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

use super::view::ReportView;

/// Encodes `view` as CBOR.
pub(crate) fn encode(view: &ReportView<'_>) -> Vec<u8> {
    let mut w = Writer {
        out: Vec::with_capacity(view.size_hint()),
    };
    // Invariant: the view only declares known lengths and emits maps, arrays, text, integers and
    // floats, all of which the writer supports; writing into a Vec cannot fail.
    #[allow(clippy::expect_used)]
    view.serialize(&mut w)
        .expect("Invariant: a report view always serialises to CBOR");
    w.out
}

/// Why a value cannot be written as report CBOR.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CborError {
    /// A map or sequence of unknown length (indefinite lengths are never written, spec: A.7).
    #[error("CBOR length must be known up front")]
    UnknownLength,
    /// A serde shape the report never uses.
    #[error("unsupported value in a CBOR report: {0}")]
    Unsupported(&'static str),
    /// Error raised by a `Serialize` impl.
    #[error("{0}")]
    Custom(String),
}

impl ser::Error for CborError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CborError::Custom(msg.to_string())
    }
}

const MAJOR_UINT: u8 = 0;
const MAJOR_NEGINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const FLOAT64: u8 = 0xfb;

/// The output buffer.
pub(crate) struct Writer {
    pub(crate) out: Vec<u8>,
}

impl Writer {
    /// A data item head: major type plus the shortest argument encoding (RFC 8949 §3).
    #[inline]
    fn head(&mut self, major: u8, arg: u64) {
        let m = major << 5;
        if arg < 24 {
            self.out.push(m | arg as u8);
        } else if arg <= u64::from(u8::MAX) {
            self.out.extend_from_slice(&[m | 24, arg as u8]);
        } else if arg <= u64::from(u16::MAX) {
            self.out.push(m | 25);
            self.out.extend_from_slice(&(arg as u16).to_be_bytes());
        } else if arg <= u64::from(u32::MAX) {
            self.out.push(m | 26);
            self.out.extend_from_slice(&(arg as u32).to_be_bytes());
        } else {
            self.out.push(m | 27);
            self.out.extend_from_slice(&arg.to_be_bytes());
        }
    }

    fn text(&mut self, s: &str) {
        self.head(MAJOR_TEXT, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn len(len: Option<usize>) -> Result<u64, CborError> {
        len.map(|n| n as u64).ok_or(CborError::UnknownLength)
    }
}

impl ser::Serializer for &mut Writer {
    type Ok = ();
    type Error = CborError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), CborError>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), CborError>;

    fn serialize_bool(self, v: bool) -> Result<(), CborError> {
        self.out.push(if v { TRUE } else { FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), CborError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), CborError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), CborError> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), CborError> {
        if v >= 0 {
            self.head(MAJOR_UINT, v as u64);
        } else {
            // Major type 1 carries -1 - v, which is !v for two's complement.
            self.head(MAJOR_NEGINT, !v as u64);
        }
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), CborError> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), CborError> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), CborError> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), CborError> {
        self.head(MAJOR_UINT, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), CborError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), CborError> {
        // spec: A.7 — always float64, never a narrower width.
        self.out.push(FLOAT64);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), CborError> {
        let mut buf = [0u8; 4];
        self.text(v.encode_utf8(&mut buf));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), CborError> {
        self.text(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), CborError> {
        self.head(MAJOR_BYTES, v.len() as u64);
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), CborError> {
        self.out.push(NULL);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), CborError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), CborError> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), CborError> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), CborError> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), CborError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), CborError> {
        Err(CborError::Unsupported("enum variant with data"))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self, CborError> {
        let n = Writer::len(len)?;
        self.head(MAJOR_ARRAY, n);
        Ok(self)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self, CborError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Self, CborError> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, CborError> {
        Err(CborError::Unsupported("enum variant with data"))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, CborError> {
        let n = Writer::len(len)?;
        self.head(MAJOR_MAP, n);
        Ok(self)
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Self, CborError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, CborError> {
        Err(CborError::Unsupported("enum variant with data"))
    }
}

impl ser::SerializeSeq for &mut Writer {
    type Ok = ();
    type Error = CborError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CborError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CborError> {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Writer {
    type Ok = ();
    type Error = CborError;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CborError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CborError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Writer {
    type Ok = ();
    type Error = CborError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CborError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CborError> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Writer {
    type Ok = ();
    type Error = CborError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CborError> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CborError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CborError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Writer {
    type Ok = ();
    type Error = CborError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), CborError> {
        self.text(key);
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), CborError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor<T: Serialize>(v: &T) -> String {
        let mut w = Writer { out: Vec::new() };
        assert!(v.serialize(&mut w).is_ok());
        w.out.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn unsigned_integers_use_the_shortest_head() {
        assert_eq!(cbor(&0u64), "00");
        assert_eq!(cbor(&23u64), "17");
        assert_eq!(cbor(&24u64), "1818");
        assert_eq!(cbor(&41u64), "1829");
        assert_eq!(cbor(&256u64), "190100");
        assert_eq!(cbor(&1_717_171_717u64), "1a6659f605");
        assert_eq!(cbor(&(1u64 << 32)), "1b0000000100000000");
        assert_eq!(cbor(&u64::MAX), "1bffffffffffffffff");
    }

    #[test]
    fn negative_integers_use_major_type_one() {
        assert_eq!(cbor(&-1i64), "20");
        assert_eq!(cbor(&-100i64), "3863");
        assert_eq!(cbor(&i64::MIN), "3b7fffffffffffffff");
    }

    #[test]
    fn floats_are_always_written_as_float64() {
        assert_eq!(cbor(&12.5f64), "fb4029000000000000");
        assert_eq!(cbor(&43.5f32), "fb4045c00000000000");
    }

    #[test]
    fn text_and_containers_have_definite_lengths() {
        assert_eq!(cbor(&"hed"), "63686564");
        assert_eq!(cbor(&vec![1u8, 2]), "820102");
        let long = "x".repeat(100);
        assert!(cbor(&long.as_str()).starts_with("7864"));
    }

    #[test]
    fn a_map_of_unknown_length_is_refused() {
        struct Unknown;
        impl Serialize for Unknown {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeMap;
                s.serialize_map(None)?.end()
            }
        }
        let mut w = Writer { out: Vec::new() };
        assert!(matches!(
            Unknown.serialize(&mut w),
            Err(CborError::UnknownLength)
        ));
    }
}
