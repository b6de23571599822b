//! A targeted walk of a record's `data`: the values of a few named fields, found without parsing
//! the rest into values (everything else is skipped) and without re-serializing anything.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The text walked is not a JSON object (serde_json's reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAnObject(pub String);

/// The values of the fields `names` of the object `data` (the last one, for a repeated field).
pub fn walk<'a>(data: &'a str, names: &[String]) -> Result<Vec<Option<&'a RawValue>>, NotAnObject> {
    let mut de = serde_json::Deserializer::from_str(data);
    de.deserialize_map(Fields { names })
        .map_err(|e| NotAnObject(e.to_string()))
}

/// The value at the nested `path` inside the object text `data`, if present; a path through a
/// value that is not an object finds nothing.
pub fn lookup<'a>(data: &'a str, path: &[String]) -> Result<Option<&'a RawValue>, NotAnObject> {
    let mut current = data;
    let mut found = None;
    for name in path {
        if !current.trim_start().starts_with('{') {
            return Ok(None);
        }
        found = walk(current, std::slice::from_ref(name))?[0];
        match found {
            Some(v) => current = v.get(),
            None => return Ok(None),
        }
    }
    Ok(found)
}

/// Calls `each(name, value)` for every top-level field of the object `data`, in order (names
/// unescaped; values as their raw JSON text).
pub fn each_field<'a>(
    data: &'a str,
    each: impl FnMut(&str, &'a RawValue),
) -> Result<(), NotAnObject> {
    let mut de = serde_json::Deserializer::from_str(data);
    de.deserialize_map(Every { each })
        .map_err(|e| NotAnObject(e.to_string()))
}

/// A visitor that hands every field of one object to a closure.
struct Every<F> {
    each: F,
}

impl<'de, F: FnMut(&str, &'de RawValue)> Visitor<'de> for Every<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Name<'de>>()? {
            let value = map.next_value::<&'de RawValue>()?;
            (self.each)(key.as_str(), value);
        }
        Ok(())
    }
}

/// A visitor that walks one object and keeps the values of some fields, skipping the rest.
struct Fields<'n> {
    names: &'n [String],
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Vec<Option<&'de RawValue>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = vec![None; self.names.len()];
        while let Some(key) = map.next_key::<Name<'de>>()? {
            match self.names.iter().position(|n| n == key.as_str()) {
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// An object key: borrowed from the text, or unescaped into a string when it has escapes.
enum Name<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Owned(s) => s,
        }
    }
}

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name::Owned(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}
