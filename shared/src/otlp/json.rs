//! OTLP/JSON as the OTLP specification maps protobuf to JSON: keys in
//! lowerCamelCase, unknown keys ignored, 64-bit integers as strings or
//! numbers, doubles as numbers or the strings `"NaN"`, `"Infinity"`,
//! `"-Infinity"`, enums as integers (their names are read too), `null` as
//! the field's default, `bytes` as base64. The `oneof`s (a metric's data,
//! a number point's value, an attribute's value) arrive as sibling keys and
//! are read through the helper shapes below.

use std::fmt;

use base64::Engine;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::proto::{
    AnyValue, ArrayValue, ExponentialHistogram, Gauge, Histogram, KeyValue, KeyValueList, Metric,
    NumberDataPoint, Sum, Summary, any_value, metric, number_data_point,
};

/// A number as OTLP/JSON may write it, before it is narrowed.
enum Raw {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Null,
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or a number in a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        let t = v.trim();
        if let Ok(u) = t.parse::<u64>() {
            return Ok(Raw::Unsigned(u));
        }
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Raw::Signed(i));
        }
        match t {
            "NaN" => Ok(Raw::Float(f64::NAN)),
            "Infinity" => Ok(Raw::Float(f64::INFINITY)),
            "-Infinity" => Ok(Raw::Float(f64::NEG_INFINITY)),
            _ => t
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Raw::Float)
                .ok_or_else(|| E::custom(format!("'{}' is not a number", excerpt(v)))),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
}

fn excerpt(s: &str) -> String {
    s.chars().take(32).collect()
}

fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
    d.deserialize_any(RawVisitor)
}

fn to_u64<E: de::Error>(r: Raw) -> Result<u64, E> {
    match r {
        Raw::Unsigned(u) => Ok(u),
        Raw::Signed(i) => u64::try_from(i).map_err(|_| E::custom(format!("{i} is negative"))),
        Raw::Float(f) if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => Ok(f as u64),
        Raw::Float(f) => Err(E::custom(format!("{f} is not an unsigned integer"))),
        Raw::Null => Ok(0),
    }
}

fn to_i64<E: de::Error>(r: Raw) -> Result<i64, E> {
    match r {
        Raw::Unsigned(u) => i64::try_from(u).map_err(|_| E::custom(format!("{u} is too large"))),
        Raw::Signed(i) => Ok(i),
        Raw::Float(f) if f.fract() == 0.0 && (-9.2e18..9.2e18).contains(&f) => Ok(f as i64),
        Raw::Float(f) => Err(E::custom(format!("{f} is not an integer"))),
        Raw::Null => Ok(0),
    }
}

fn to_f64(r: Raw) -> f64 {
    match r {
        Raw::Unsigned(u) => u as f64,
        Raw::Signed(i) => i as f64,
        Raw::Float(f) => f,
        Raw::Null => 0.0,
    }
}

/// A `uint64`/`fixed64` element of a repeated field.
struct U64(u64);
impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        to_u64(raw(d)?).map(U64)
    }
}

/// A `double` element of a repeated field.
struct F64(f64);
impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        raw(d).map(to_f64).map(F64)
    }
}

/// An `int64`/`sfixed64` inside a oneof.
struct I64(i64);
impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        to_i64(raw(d)?).map(I64)
    }
}

pub fn u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    to_u64(raw(d)?)
}

pub fn u32_any<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = to_u64(raw(d)?)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} is above 2^32")))
}

pub fn i32_any<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let v = to_i64(raw(d)?)?;
    i32::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of the 32-bit range")))
}

pub fn f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    raw(d).map(to_f64)
}

pub fn opt_f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match raw(d)? {
        Raw::Null => None,
        r => Some(to_f64(r)),
    })
}

pub fn vec_u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let v: Option<Vec<U64>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|u| u.0).collect())
}

pub fn vec_f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Option<Vec<F64>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|f| f.0).collect())
}

/// A message as OTLP/JSON writes it: an object. serde's derived structs
/// would also read an array as their fields in order, which OTLP/JSON never
/// writes and which would make `[[...]]` mean something.
struct Message<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Message<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Message)
    }
}

/// An optional message field: an object, `null` or absent.
pub fn message<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Message<T>>::deserialize(d)?.map(|m| m.0))
}

/// A repeated message field: an array of objects, `null` or absent.
pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let messages = Option::<Vec<Message<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(messages.into_iter().map(|m| m.0).collect())
}

pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

/// `AggregationTemporality`: an integer (OTLP/JSON), or its name.
pub fn temporality<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = i32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an aggregation temporality (0, 1 or 2)")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom("temporality out of range"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom("temporality out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            match v {
                "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Ok(0),
                "AGGREGATION_TEMPORALITY_DELTA" => Ok(1),
                "AGGREGATION_TEMPORALITY_CUMULATIVE" => Ok(2),
                other => other
                    .parse()
                    .map_err(|_| E::custom(format!("'{}' is not a temporality", excerpt(other)))),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

/// A metric as OTLP/JSON writes it: its `oneof data` as sibling keys.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricJson {
    #[serde(deserialize_with = "string")]
    name: String,
    #[serde(deserialize_with = "string")]
    description: String,
    #[serde(deserialize_with = "string")]
    unit: String,
    #[serde(deserialize_with = "message")]
    gauge: Option<Gauge>,
    #[serde(deserialize_with = "message")]
    sum: Option<Sum>,
    #[serde(deserialize_with = "message")]
    histogram: Option<Histogram>,
    #[serde(deserialize_with = "message")]
    exponential_histogram: Option<ExponentialHistogram>,
    #[serde(deserialize_with = "message")]
    summary: Option<Summary>,
}

impl From<MetricJson> for Metric {
    fn from(m: MetricJson) -> Self {
        let data = m
            .gauge
            .map(metric::Data::Gauge)
            .or(m.sum.map(metric::Data::Sum))
            .or(m.histogram.map(metric::Data::Histogram))
            .or(m
                .exponential_histogram
                .map(metric::Data::ExponentialHistogram))
            .or(m.summary.map(metric::Data::Summary));
        Metric {
            name: m.name,
            description: m.description,
            unit: m.unit,
            data,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct NumberDataPointJson {
    #[serde(deserialize_with = "vec")]
    attributes: Vec<KeyValue>,
    #[serde(deserialize_with = "u64_any")]
    start_time_unix_nano: u64,
    #[serde(deserialize_with = "u64_any")]
    time_unix_nano: u64,
    as_double: Option<F64>,
    as_int: Option<I64>,
    #[serde(deserialize_with = "u32_any")]
    flags: u32,
}

impl From<NumberDataPointJson> for NumberDataPoint {
    fn from(p: NumberDataPointJson) -> Self {
        let value = p
            .as_double
            .map(|v| number_data_point::Value::AsDouble(v.0))
            .or(p.as_int.map(|v| number_data_point::Value::AsInt(v.0)));
        NumberDataPoint {
            attributes: p.attributes,
            start_time_unix_nano: p.start_time_unix_nano,
            time_unix_nano: p.time_unix_nano,
            value,
            flags: p.flags,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AnyValueJson {
    string_value: Option<String>,
    bool_value: Option<bool>,
    int_value: Option<I64>,
    double_value: Option<F64>,
    #[serde(deserialize_with = "message")]
    array_value: Option<ArrayValue>,
    #[serde(deserialize_with = "message")]
    kvlist_value: Option<KeyValueList>,
    bytes_value: Option<String>,
}

impl From<AnyValueJson> for AnyValue {
    fn from(v: AnyValueJson) -> Self {
        use any_value::Value as V;
        let value = v
            .string_value
            .map(V::StringValue)
            .or(v.bool_value.map(V::BoolValue))
            .or(v.int_value.map(|i| V::IntValue(i.0)))
            .or(v.double_value.map(|f| V::DoubleValue(f.0)))
            .or(v.array_value.map(V::ArrayValue))
            .or(v.kvlist_value.map(V::KvlistValue))
            .or(v.bytes_value.map(|b| {
                V::BytesValue(
                    base64::engine::general_purpose::STANDARD
                        .decode(b.as_bytes())
                        .unwrap_or_else(|_| b.into_bytes()),
                )
            }));
        AnyValue { value }
    }
}
