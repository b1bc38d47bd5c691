//! Slim reading of Flux objects: a document or API object decoded into a [`Value`] that holds
//! only the fields fluxgate reads, the rest skipped while it is parsed.
//!
//! A Kustomization or HelmRelease as a source delivers it is mostly bytes fluxgate never looks
//! at: managedFields, status conditions other than `Ready`, Helm values, the source's own fields.
//! Parsing each one into a whole [`Value`] first makes the peak of a large load (100,000 objects
//! from files, or 200 list pages of 500) a multiple of what is kept, and the allocator keeps that
//! peak resident afterwards. Decoding through [`Shape`] instead never builds the unread parts.
//!
//! The slim value has the layout of the object, so the readers are the same functions that read
//! a whole object ([`FluxObject::from_value`](crate::object::FluxObject::from_value),
//! [`ObjectStatus::from_value`](crate::status::ObjectStatus::from_value)) and give the same
//! result on either: [`OBJECT`] must keep every field they, the manifest loader and the watch
//! read (a property test in `tests/integration/slim.rs` holds them to it on real objects).
//!
//! A field of an unexpected type (a `spec` that is a list, `dependsOn` that is a string) is kept
//! whole, so that the readers report it exactly as they would on the whole object.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::object::{OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};

/// Which parts of a value to keep.
#[derive(Debug)]
pub enum Shape {
    /// The value whole.
    All,
    /// An object: only these keys, each with its own shape.
    Fields(&'static [(&'static str, Shape)]),
    /// A list: every item, each with the shape.
    Each(&'static Shape),
}

use Shape::{All, Each, Fields};

/// `metadata.managedFields`: each entry only says whether it owns `spec.wait`
/// ([`field_is_unowned`](crate::object::field_is_unowned)).
pub(crate) const MANAGED_FIELDS: Shape =
    Each(&Fields(&[("fieldsV1", Fields(&[("f:spec", Fields(&[("f:wait", All)]))]))]));

/// The status fields the status reader takes: the conditions and the observed generation.
pub(crate) const STATUS: Shape = Fields(&[
    (
        "conditions",
        Each(&Fields(&[
            ("type", All),
            ("status", All),
            ("reason", All),
            ("message", All),
            ("lastTransitionTime", All),
        ])),
    ),
    ("observedGeneration", All),
]);

/// A Flux object (or a `kind: List` of them) as fluxgate reads it: identity, owner labels,
/// the `spec` fields of the rules, the status and time budget, and what the manifest loader
/// needs to resolve kustomize trees (`spec.path`, `spec.sourceRef`, `spec.targetNamespace`,
/// `spec.postBuild.substitute`).
pub static OBJECT: Shape = Fields(&[
    ("apiVersion", All),
    ("kind", All),
    (
        "metadata",
        Fields(&[
            ("name", All),
            ("namespace", All),
            ("uid", All),
            ("generation", All),
            ("resourceVersion", All),
            ("deletionTimestamp", All),
            ("labels", Fields(&[(OWNER_NAME_LABEL, All), (OWNER_NAMESPACE_LABEL, All)])),
            ("managedFields", MANAGED_FIELDS),
        ]),
    ),
    (
        "spec",
        Fields(&[
            ("dependsOn", All),
            ("wait", All),
            ("healthChecks", All),
            ("suspend", All),
            ("timeout", All),
            ("interval", All),
            ("path", All),
            ("sourceRef", All),
            ("targetNamespace", All),
            ("postBuild", Fields(&[("substitute", All)])),
        ]),
    ),
    ("status", STATUS),
    ("items", Each(&OBJECT)),
]);

/// A Flux object decoded through [`OBJECT`]: a list item, a watch event's object, a manifest
/// document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct SlimObject(pub Value);

impl<'de> Deserialize<'de> for SlimObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Shaped(&OBJECT).deserialize(deserializer).map(SlimObject)
    }
}

impl SlimObject {
    /// The slim form of a whole object.
    pub fn from_value(value: Value) -> SlimObject {
        // A `Value` always deserializes into a `Value`.
        SlimObject::deserialize(value).unwrap_or_else(|e| unreachable!("a Value reads as a Value: {e}"))
    }
}

/// A [`DeserializeSeed`] that reads a value keeping what `shape` keeps.
#[derive(Clone, Copy)]
pub struct Shaped(pub &'static Shape);

impl<'de> DeserializeSeed<'de> for Shaped {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            All => Value::deserialize(deserializer),
            shape => deserializer.deserialize_any(ShapedVisitor(shape)),
        }
    }
}

struct ShapedVisitor(&'static Shape);

/// A scalar as [`Value`] reads it.
fn scalar<'de, E: de::Error, D: IntoDeserializer<'de, E>>(v: D) -> Result<Value, E> {
    Value::deserialize(v.into_deserializer())
}

impl<'de> Visitor<'de> for ShapedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        scalar(v)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        scalar(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        scalar(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        scalar(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Shaped(self.0).deserialize(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Shaped(self.0).deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let Each(item) = self.0 else {
            return Value::deserialize(de::value::SeqAccessDeserializer::new(seq));
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(Shaped(item))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Fields(fields) = self.0 else {
            return Value::deserialize(de::value::MapAccessDeserializer::new(map));
        };
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match fields.iter().find(|(name, _)| *name == key) {
                Some((_, shape)) => {
                    let v = map.next_value_seed(Shaped(shape))?;
                    out.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A map key, borrowed from the input where the format allows it. Read as [`Value`] reads its
/// keys (`deserialize_str`).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_read_fields_are_kept() {
        let full = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "a", "namespace": "ns", "annotations": {"x": "y"},
                         "labels": {"app": "a", OWNER_NAME_LABEL: "p"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:wait": {}, "f:path": {}}}}, {"manager": "n"}]},
            "spec": {"path": "./a", "prune": true, "dependsOn": [{"name": "b", "extra": 1}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 3}], "inventory": {"entries": []}}
        });
        let slim = SlimObject::from_value(full).0;
        assert_eq!(
            slim,
            json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                "metadata": {"name": "a", "namespace": "ns", "labels": {OWNER_NAME_LABEL: "p"},
                             "managedFields": [{"fieldsV1": {"f:spec": {"f:wait": {}}}}, {}]},
                "spec": {"path": "./a", "dependsOn": [{"name": "b", "extra": 1}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            })
        );
    }

    #[test]
    fn fields_of_an_unexpected_type_are_kept_whole() {
        let full = json!({"metadata": {"name": "a", "labels": ["x"]}, "spec": [1, {"dependsOn": 2}]});
        assert_eq!(SlimObject::from_value(full.clone()).0, full);
        let text = r#"{"spec": "text", "status": {"conditions": {"type": "Ready"}}, "items": 7}"#;
        let slim: SlimObject = serde_json::from_str(text).unwrap();
        assert_eq!(slim.0, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn list_items_are_slimmed_too() {
        let text =
            r#"{"kind": "List", "items": [{"kind": "Kustomization", "metadata": {"name": "a", "finalizers": ["f"]}}]}"#;
        let slim: SlimObject = serde_json::from_str(text).unwrap();
        assert_eq!(slim.0, json!({"kind": "List", "items": [{"kind": "Kustomization", "metadata": {"name": "a"}}]}));
    }
}
