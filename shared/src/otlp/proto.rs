//! The OTLP metrics messages the service reads and answers with, declared
//! by hand with `prost`'s derives (field numbers and types as in
//! `opentelemetry/proto/{collector/metrics/v1/metrics_service,
//! metrics/v1/metrics,common/v1/common,resource/v1/resource}.proto` and
//! `google/rpc/status.proto`). Exemplars are not declared: prost skips
//! unknown fields, so they cost nothing.
//!
//! Each message also derives `serde::Deserialize` for OTLP/JSON
//! (lowerCamelCase keys, unknown keys ignored); 64-bit integers and doubles
//! go through [`super::json`]'s lenient readers (string or number), and
//! the `oneof`s through small helper shapes there.

use serde::Deserialize;

use super::json;

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExportMetricsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportMetricsServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportMetricsPartialSuccess>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ExportMetricsPartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_data_points: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceMetrics {
    #[prost(message, optional, tag = "1")]
    #[serde(deserialize_with = "json::message")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    #[serde(deserialize_with = "json::vec")]
    pub scope_metrics: Vec<ScopeMetrics>,
    #[prost(string, tag = "3")]
    #[serde(deserialize_with = "json::string")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    #[serde(deserialize_with = "json::u32_any")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeMetrics {
    #[prost(message, optional, tag = "1")]
    #[serde(deserialize_with = "json::message")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    #[serde(deserialize_with = "json::vec")]
    pub metrics: Vec<Metric>,
    #[prost(string, tag = "3")]
    #[serde(deserialize_with = "json::string")]
    pub schema_url: String,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    #[serde(deserialize_with = "json::string")]
    pub name: String,
    #[prost(string, tag = "2")]
    #[serde(deserialize_with = "json::string")]
    pub version: String,
    #[prost(message, repeated, tag = "3")]
    #[serde(deserialize_with = "json::vec")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    #[serde(deserialize_with = "json::u32_any")]
    pub dropped_attributes_count: u32,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(from = "json::MetricJson")]
pub struct Metric {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(string, tag = "3")]
    pub unit: String,
    #[prost(oneof = "metric::Data", tags = "5, 7, 9, 10, 11")]
    pub data: Option<metric::Data>,
}

pub mod metric {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "5")]
        Gauge(super::Gauge),
        #[prost(message, tag = "7")]
        Sum(super::Sum),
        #[prost(message, tag = "9")]
        Histogram(super::Histogram),
        #[prost(message, tag = "10")]
        ExponentialHistogram(super::ExponentialHistogram),
        #[prost(message, tag = "11")]
        Summary(super::Summary),
    }
}

/// `AggregationTemporality`: 0 unspecified, 1 delta, 2 cumulative.
pub const TEMPORALITY_DELTA: i32 = 1;
pub const TEMPORALITY_CUMULATIVE: i32 = 2;
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Gauge {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub data_points: Vec<NumberDataPoint>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sum {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub data_points: Vec<NumberDataPoint>,
    #[prost(int32, tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
    #[prost(bool, tag = "3")]
    #[serde(deserialize_with = "json::boolean")]
    pub is_monotonic: bool,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Histogram {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub data_points: Vec<HistogramDataPoint>,
    #[prost(int32, tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogram {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub data_points: Vec<ExponentialHistogramDataPoint>,
    #[prost(int32, tag = "2")]
    #[serde(deserialize_with = "json::temporality")]
    pub aggregation_temporality: i32,
}

/// Summaries are not mapped (no bucket counts to merge); only their points
/// are counted, to name the metric as ignored.
#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub data_points: Vec<SummaryDataPoint>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SummaryDataPoint {
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64_any")]
    pub time_unix_nano: u64,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(from = "json::NumberDataPointJson")]
pub struct NumberDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(oneof = "number_data_point::Value", tags = "4, 6")]
    pub value: Option<number_data_point::Value>,
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

pub mod number_data_point {
    #[derive(Clone, Copy, PartialEq, ::prost::Oneof)]
    pub enum Value {
        #[prost(double, tag = "4")]
        AsDouble(f64),
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HistogramDataPoint {
    #[prost(message, repeated, tag = "9")]
    #[serde(deserialize_with = "json::vec")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64_any")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64_any")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    #[serde(deserialize_with = "json::u64_any")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub sum: Option<f64>,
    #[prost(fixed64, repeated, tag = "6")]
    #[serde(deserialize_with = "json::vec_u64_any")]
    pub bucket_counts: Vec<u64>,
    #[prost(double, repeated, tag = "7")]
    #[serde(deserialize_with = "json::vec_f64_any")]
    pub explicit_bounds: Vec<f64>,
    #[prost(uint32, tag = "10")]
    #[serde(deserialize_with = "json::u32_any")]
    pub flags: u32,
    #[prost(double, optional, tag = "11")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "12")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub max: Option<f64>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExponentialHistogramDataPoint {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    #[serde(deserialize_with = "json::u64_any")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    #[serde(deserialize_with = "json::u64_any")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    #[serde(deserialize_with = "json::u64_any")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub sum: Option<f64>,
    #[prost(sint32, tag = "6")]
    #[serde(deserialize_with = "json::i32_any")]
    pub scale: i32,
    #[prost(fixed64, tag = "7")]
    #[serde(deserialize_with = "json::u64_any")]
    pub zero_count: u64,
    #[prost(message, optional, tag = "8")]
    #[serde(deserialize_with = "json::message")]
    pub positive: Option<Buckets>,
    #[prost(message, optional, tag = "9")]
    #[serde(deserialize_with = "json::message")]
    pub negative: Option<Buckets>,
    #[prost(uint32, tag = "10")]
    #[serde(deserialize_with = "json::u32_any")]
    pub flags: u32,
    #[prost(double, optional, tag = "12")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub min: Option<f64>,
    #[prost(double, optional, tag = "13")]
    #[serde(deserialize_with = "json::opt_f64_any")]
    pub max: Option<f64>,
    #[prost(double, tag = "14")]
    #[serde(deserialize_with = "json::f64_any")]
    pub zero_threshold: f64,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Buckets {
    #[prost(sint32, tag = "1")]
    #[serde(deserialize_with = "json::i32_any")]
    pub offset: i32,
    #[prost(uint64, repeated, tag = "2")]
    #[serde(deserialize_with = "json::vec_u64_any")]
    pub bucket_counts: Vec<u64>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    #[serde(deserialize_with = "json::string")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    #[serde(deserialize_with = "json::message")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(from = "json::AnyValueJson")]
pub struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub value: Option<any_value::Value>,
}

pub mod any_value {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(super::ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(super::KeyValueList),
        #[prost(bytes, tag = "7")]
        BytesValue(Vec<u8>),
    }
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, ::prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "json::vec")]
    pub values: Vec<KeyValue>,
}

/// `google.rpc.Status`: the body of an error answered to a protobuf request.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any` (never filled: `Status.details` stays empty).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
