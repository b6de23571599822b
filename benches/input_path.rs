//! The input path alone, in MB/s of Airbyte input: read lines, parse, route, minify `data`, and append
//! each record to its stream's batch (what the reader thread and the coordinator do, on one thread,
//! with no Redis). `cargo bench --bench input_path`.

use std::io::{BufReader, Cursor};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use destination_redis::config::ValueFormat;
use destination_redis::protocol::StreamDescriptor;
use destination_redis::write::batcher::{Appended, Batcher};
use destination_redis::write::reader::Streams;
use destination_redis::write::reader::{read_all, Item};
use destination_redis::write::router::Router;

const STREAMS: [&str; 3] = ["users", "orders", "events"];

/// 20,000 records shaped like the demo's (about 330 bytes of `data`), a state every 1,000.
fn input() -> Vec<u8> {
    let mut out = String::new();
    for i in 0..20_000u64 {
        let s = STREAMS[(i % 3) as usize];
        out += &format!(
            r#"{{"type":"RECORD","record":{{"stream":"{s}","namespace":"demo","emitted_at":{},"data":{{"id":{i},"name":"Grace {i}","email":"grace.{i}@example.com","address":{{"street":"{} Main Street","city":"Lakeside","zip":"{:05}","country":"XX"}},"created_at":"2024-03-17T12:25:08Z","amount":{}.{:02},"active":{},"tags":["t4","t7"],"score":46.10,"note":"generated record number {i} for the destination-redis demo"}}}}}}"#,
            1_700_000_000_000 + i,
            i % 9999,
            i % 99999,
            i % 10_000,
            i % 100,
            i % 2 == 0
        );
        out.push('\n');
        if i % 1000 == 999 {
            out += &format!(
                r#"{{"type":"STATE","state":{{"type":"STREAM","stream":{{"stream_descriptor":{{"name":"{s}","namespace":"demo"}},"stream_state":{{"cursor":{i}}}}}}}}}"#
            );
            out.push('\n');
        }
    }
    out.into_bytes()
}

fn input_path(c: &mut Criterion) {
    let input = input();
    let descriptors: Vec<StreamDescriptor> = STREAMS
        .iter()
        .map(|s| StreamDescriptor {
            name: s.to_string(),
            namespace: Some("demo".into()),
        })
        .collect();
    let router = Arc::new(Streams {
        router: Router::new(&descriptors),
        upserts: vec![None; descriptors.len()],
        expire_at: vec![None; descriptors.len()],
        formats: vec![ValueFormat::Hash; descriptors.len()],
        descriptors: descriptors.clone(),
    });
    let mut group = c.benchmark_group("input_path");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("parse_route_minify_batch", |b| {
        b.iter(|| {
            let (tx, rx) = crossbeam_channel::unbounded();
            read_all(BufReader::new(Cursor::new(&input[..])), router.clone(), tx);
            let mut batcher =
                Batcher::new(vec![ValueFormat::Hash; STREAMS.len()], 500, 4 * 1024 * 1024);
            let mut sealed = Vec::new();
            let now = Instant::now();
            let mut ordinal = 0;
            for chunk in rx {
                for item in chunk.items {
                    if let Item::Record {
                        stream,
                        emitted_at,
                        data,
                        ..
                    } = item
                    {
                        let record = Appended {
                            emitted_at,
                            data: &chunk.arena[data],
                            fields: 0,
                            moment: None,
                        };
                        batcher.push(stream, record, ordinal, now, &mut sealed);
                        ordinal += 1;
                    }
                }
                sealed.clear();
            }
            batcher.seal_all(&mut sealed);
            sealed.len()
        })
    });
    group.finish();
}

criterion_group!(benches, input_path);
criterion_main!(benches);
