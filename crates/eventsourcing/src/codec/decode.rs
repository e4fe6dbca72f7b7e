//! The deserializer side of the mapping: a stored event read back as the variant its type
//! names, and the probe that lists the names a type's `Deserialize` asks for.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::{Message, unsupported};

/// Reports the variant (or struct) names a type's `Deserialize` asks for.
pub(super) struct Probe<'n> {
    pub(super) seen: &'n mut dyn FnMut(&[&'static str]),
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Message> {
        Err(unsupported("this shape"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Message> {
        (self.seen)(variants);
        Err(Message(String::new()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Message> {
        (self.seen)(&[name]);
        Err(Message(String::new()))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: usize,
        _: V,
    ) -> Result<V::Value, Message> {
        (self.seen)(&[name]);
        Err(Message(String::new()))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: V,
    ) -> Result<V::Value, Message> {
        (self.seen)(&[name]);
        Err(Message(String::new()))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, _: V) -> Result<V::Value, Message> {
        (self.seen)(&[name]);
        Err(Message(String::new()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit seq tuple map identifier ignored_any
    }
}

/// A stored event seen by serde as an externally tagged enum: the type names the variant, the
/// data is its content.
pub(super) struct Stored<'a> {
    pub(super) event_type: &'a str,
    pub(super) data: &'a [u8],
}

impl<'a> Stored<'a> {
    fn json<T>(
        &self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::SliceRead<'a>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, Message> {
        let mut de = serde_json::Deserializer::from_slice(self.data);
        let value = read(&mut de)?;
        de.end()?;
        Ok(value)
    }

    fn expect(&self, name: &str) -> Result<(), Message> {
        if self.event_type == name {
            Ok(())
        } else {
            Err(Message(format!("unknown event type {:?}, expected {name:?}", self.event_type)))
        }
    }
}

impl<'de> de::Deserializer<'de> for Stored<'de> {
    type Error = Message;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Message> {
        Err(unsupported("this shape"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        visitor.visit_enum(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.expect(name)?;
        self.json(|de| de::Deserializer::deserialize_struct(de, name, fields, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.expect(name)?;
        self.json(|de| de::Deserializer::deserialize_tuple_struct(de, name, len, visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.expect(name)?;
        self.json(|de| visitor.visit_newtype_struct(de))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.expect(name)?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit seq tuple map identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for Stored<'de> {
    type Error = Message;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Message> {
        let event_type: de::value::StrDeserializer<'_, Message> = self.event_type.into_deserializer();
        let variant = seed.deserialize(event_type)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Stored<'de> {
    type Error = Message;

    fn unit_variant(self) -> Result<(), Message> {
        // Unit variants are stored as `null`; empty data is accepted for events written by hand.
        // Other data is ignored (it must still be JSON): that is what lets a `#[serde(other)]`
        // variant stand for event types with content that the enum does not know.
        if self.data.is_empty() {
            return Ok(());
        }
        self.json(|de| <de::IgnoredAny as de::Deserialize>::deserialize(de)).map(|_| ())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Message> {
        self.json(|de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Message> {
        self.json(|de| de::Deserializer::deserialize_tuple(de, len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Message> {
        self.json(|de| de::Deserializer::deserialize_struct(de, "", fields, visitor))
    }
}
