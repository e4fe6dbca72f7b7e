//! The serializer side of the mapping: a domain event's value split into the serde name of its
//! variant (or struct), which becomes the stored type, and the JSON of its content alone.

use serde::ser::{self, Serialize};

use super::{Message, unsupported};

/// Serializes an event's content to JSON and returns the serde name of its variant or struct.
pub(super) struct Split<'w> {
    pub(super) out: &'w mut Vec<u8>,
}

impl Split<'_> {
    fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Message> {
        serde_json::to_writer(&mut *self.out, value).map_err(Message::from)
    }
}

/// Writes a JSON object or array field by field, then yields the type name.
pub(super) struct Fields<'w> {
    split: Split<'w>,
    name: &'static str,
    first: bool,
    close: u8,
}

impl<'w> Fields<'w> {
    fn open(split: Split<'w>, name: &'static str, open: u8, close: u8) -> Self {
        split.out.push(open);
        Fields { split, name, first: true, close }
    }

    fn separate(&mut self) {
        if !self.first {
            self.split.out.push(b',');
        }
        self.first = false;
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Message> {
        self.separate();
        self.split.json(key)?;
        self.split.out.push(b':');
        self.split.json(value)
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Message> {
        self.separate();
        self.split.json(value)
    }

    fn close(self) -> Result<&'static str, Message> {
        self.split.out.push(self.close);
        Ok(self.name)
    }
}

impl ser::SerializeStructVariant for Fields<'_> {
    type Ok = &'static str;
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        self.field(key, value)
    }
    fn end(self) -> Result<&'static str, Message> {
        self.close()
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = &'static str;
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Message> {
        // An adjacently tagged enum is a struct named after the enum whose first field, the tag,
        // is a unit variant of that same enum. Its `Deserialize` asks for that struct name too,
        // so the check of `encode` would let every variant be stored under the enum's name.
        if self.first && value.serialize(UnitVariantOf).is_ok_and(|enum_name| enum_name == self.name) {
            return Err(unsupported("an adjacently tagged enum"));
        }
        self.field(key, value)
    }
    fn end(self) -> Result<&'static str, Message> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Fields<'_> {
    type Ok = &'static str;
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Message> {
        self.element(value)
    }
    fn end(self) -> Result<&'static str, Message> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Fields<'_> {
    type Ok = &'static str;
    type Error = Message;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Message> {
        self.element(value)
    }
    fn end(self) -> Result<&'static str, Message> {
        self.close()
    }
}

macro_rules! refuse {
    ($error:expr; $($method:ident($($arg:ty),*) $what:literal;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<&'static str, Message> {
            Err($error($what))
        })*
    };
}

impl<'w> ser::Serializer for Split<'w> {
    type Ok = &'static str;
    type Error = Message;
    type SerializeSeq = ser::Impossible<&'static str, Message>;
    type SerializeTuple = ser::Impossible<&'static str, Message>;
    type SerializeTupleStruct = Fields<'w>;
    type SerializeTupleVariant = Fields<'w>;
    type SerializeMap = ser::Impossible<&'static str, Message>;
    type SerializeStruct = Fields<'w>;
    type SerializeStructVariant = Fields<'w>;

    refuse! {
        unsupported;
        serialize_bool(bool) "a bool";
        serialize_i8(i8) "a number";
        serialize_i16(i16) "a number";
        serialize_i32(i32) "a number";
        serialize_i64(i64) "a number";
        serialize_u8(u8) "a number";
        serialize_u16(u16) "a number";
        serialize_u32(u32) "a number";
        serialize_u64(u64) "a number";
        serialize_f32(f32) "a number";
        serialize_f64(f64) "a number";
        serialize_char(char) "a char";
        serialize_str(&str) "a string";
        serialize_bytes(&[u8]) "bytes";
        serialize_none() "an option";
        serialize_unit() "a unit";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<&'static str, Message> {
        Err(unsupported("an option"))
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<&'static str, Message> {
        self.out.extend_from_slice(b"null");
        Ok(name)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<&'static str, Message> {
        self.out.extend_from_slice(b"null");
        Ok(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        mut self,
        name: &'static str,
        value: &T,
    ) -> Result<&'static str, Message> {
        self.json(value)?;
        Ok(name)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<&'static str, Message> {
        self.json(value)?;
        Ok(variant)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Message> {
        Err(unsupported("a sequence"))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Message> {
        Err(unsupported("a tuple"))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Message> {
        Ok(Fields::open(self, name, b'[', b']'))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Message> {
        Ok(Fields::open(self, variant, b'[', b']'))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Message> {
        Err(unsupported("a map"))
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self::SerializeStruct, Message> {
        Ok(Fields::open(self, name, b'{', b'}'))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Message> {
        Ok(Fields::open(self, variant, b'{', b'}'))
    }
}

/// Serializes nothing: the name of the enum of a unit variant, and an empty error for any other
/// value (so that a field which is not a tag costs no allocation).
struct UnitVariantOf;

fn not_a_tag(_: &str) -> Message {
    Message(String::new())
}

impl ser::Serializer for UnitVariantOf {
    type Ok = &'static str;
    type Error = Message;
    type SerializeSeq = ser::Impossible<&'static str, Message>;
    type SerializeTuple = ser::Impossible<&'static str, Message>;
    type SerializeTupleStruct = ser::Impossible<&'static str, Message>;
    type SerializeTupleVariant = ser::Impossible<&'static str, Message>;
    type SerializeMap = ser::Impossible<&'static str, Message>;
    type SerializeStruct = ser::Impossible<&'static str, Message>;
    type SerializeStructVariant = ser::Impossible<&'static str, Message>;

    refuse! {
        not_a_tag;
        serialize_bool(bool) "";
        serialize_i8(i8) "";
        serialize_i16(i16) "";
        serialize_i32(i32) "";
        serialize_i64(i64) "";
        serialize_u8(u8) "";
        serialize_u16(u16) "";
        serialize_u32(u32) "";
        serialize_u64(u64) "";
        serialize_f32(f32) "";
        serialize_f64(f64) "";
        serialize_char(char) "";
        serialize_str(&str) "";
        serialize_bytes(&[u8]) "";
        serialize_none() "";
        serialize_unit() "";
        serialize_unit_struct(&'static str) "";
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<&'static str, Message> {
        Ok(name)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<&'static str, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Message> {
        Err(not_a_tag(""))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Message> {
        Err(not_a_tag(""))
    }
}
