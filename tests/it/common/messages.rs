//! Building Airbyte messages and catalogs as the platform sends them.

use serde_json::{json, Value};

/// A catalog of these streams with one destination sync mode and generation ids.
pub fn catalog_with(
    streams: &[(Option<&str>, &str)],
    mode: &str,
    generation: i64,
    minimum: i64,
) -> Value {
    let mut c = catalog(streams);
    for s in c["streams"].as_array_mut().expect("streams") {
        s["destination_sync_mode"] = json!(mode);
        s["generation_id"] = json!(generation);
        s["minimum_generation_id"] = json!(minimum);
    }
    c
}

/// A TRACE STREAM_STATUS line.
pub fn status(ns: Option<&str>, stream: &str, status: &str) -> String {
    let descriptor = match ns {
        Some(ns) => json!({"name": stream, "namespace": ns}),
        None => json!({"name": stream}),
    };
    json!({"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": 1.0,
        "stream_status": {"stream_descriptor": descriptor, "status": status}}})
    .to_string()
}

/// An append catalog of these (namespace, name) streams.
pub fn catalog(streams: &[(Option<&str>, &str)]) -> Value {
    let streams: Vec<Value> = streams
        .iter()
        .map(|(ns, name)| {
            let mut stream = json!({"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]});
            if let Some(ns) = ns {
                stream["namespace"] = json!(ns);
            }
            json!({"stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append"})
        })
        .collect();
    json!({ "streams": streams })
}

fn descriptor_fields(ns: Option<&str>, stream: &str) -> String {
    let name = serde_json::to_string(stream).expect("name");
    match ns {
        Some(ns) => format!(
            r#""stream":{name},"namespace":{}"#,
            serde_json::to_string(ns).expect("ns")
        ),
        None => format!(r#""stream":{name}"#),
    }
}

/// A RECORD line whose `data` is `data` verbatim (raw JSON text).
pub fn record(ns: Option<&str>, stream: &str, data: &str, emitted_at: i64) -> String {
    format!(
        r#"{{"type":"RECORD","record":{{{},"emitted_at":{emitted_at},"data":{data}}}}}"#,
        descriptor_fields(ns, stream)
    )
}

/// A STREAM state line; `state` is the raw JSON of `stream_state`.
pub fn stream_state(ns: Option<&str>, stream: &str, state: &str) -> String {
    let descriptor = match ns {
        Some(ns) => json!({"name": stream, "namespace": ns}),
        None => json!({"name": stream}),
    };
    format!(
        r#"{{"type":"STATE","state":{{"type":"STREAM","stream":{{"stream_descriptor":{descriptor},"stream_state":{state}}}}}}}"#
    )
}

/// A GLOBAL state line; `shared` is the raw JSON of `shared_state`.
pub fn global_state(shared: &str) -> String {
    format!(
        r#"{{"type":"STATE","state":{{"type":"GLOBAL","global":{{"shared_state":{shared},"stream_states":[]}}}}}}"#
    )
}

/// A typeless (LEGACY) state line; `data` is raw JSON.
pub fn legacy_state(data: &str) -> String {
    format!(r#"{{"type":"STATE","state":{{"data":{data}}}}}"#)
}

/// Epoch milliseconds now (this machine's clock, which the local servers share).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
