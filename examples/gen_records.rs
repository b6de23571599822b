//! Prints a deterministic Airbyte input: RECORD lines of realistic records (about 300 bytes of JSON
//! each) spread round-robin over several streams of namespace `demo`, a STREAM state every K records,
//! and a STREAM_STATUS COMPLETE per stream at the end.
//!
//! `cargo run --release --example gen_records -- N [--streams S] [--state-every K] [--seed X]`
//! Stream names: users, orders, events, then stream3, stream4, ...

use std::io::{BufWriter, Write};

const NAMES: [&str; 3] = ["users", "orders", "events"];
const CITIES: [&str; 6] = [
    "Springfield",
    "Rivertown",
    "Lakeside",
    "Hillview",
    "Zürich",
    "São Paulo",
];
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances",
];

fn stream_name(i: usize) -> String {
    NAMES
        .get(i)
        .map_or_else(|| format!("stream{i}"), |s| s.to_string())
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let streams = arg(&args, "--streams", 3).max(1) as usize;
    let state_every = arg(&args, "--state-every", 1000).max(1);
    let mut rng = Rng(arg(&args, "--seed", 42));
    let names: Vec<String> = (0..streams).map(stream_name).collect();
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut last_stream = 0;
    for i in 0..n {
        let s = (i % streams as u64) as usize;
        last_stream = s;
        let first = FIRST[rng.below(FIRST.len() as u64) as usize];
        let city = CITIES[rng.below(CITIES.len() as u64) as usize];
        let cents = rng.below(1_000_000);
        let day = 1 + rng.below(28);
        writeln!(
            out,
            r#"{{"type":"RECORD","record":{{"stream":"{}","namespace":"demo","emitted_at":{},"data":{{"id":{i},"name":"{first} {i}","email":"{}.{i}@example.com","address":{{"street":"{} Main Street","city":"{city}","zip":"{:05}","country":"XX"}},"created_at":"2024-03-{day:02}T12:{:02}:{:02}Z","amount":{}.{:02},"active":{},"tags":["t{}","t{}"],"score":{}.10,"note":"generated record number {i} for the destination-redis demo"}}}}}}"#,
            names[s],
            1_700_000_000_000 + i,
            first.to_lowercase(),
            rng.below(9999),
            rng.below(99999),
            rng.below(60),
            rng.below(60),
            cents / 100,
            cents % 100,
            rng.below(2) == 0,
            rng.below(10),
            rng.below(10),
            rng.below(100),
        )?;
        if (i + 1).is_multiple_of(state_every) {
            writeln!(out, "{}", state(&names[s], i))?;
        }
    }
    if !n.is_multiple_of(state_every) {
        writeln!(out, "{}", state(&names[last_stream], n))?;
    }
    for name in &names {
        writeln!(
            out,
            r#"{{"type":"TRACE","trace":{{"type":"STREAM_STATUS","emitted_at":1700000000000.0,"stream_status":{{"stream_descriptor":{{"name":"{name}","namespace":"demo"}},"status":"COMPLETE"}}}}}}"#
        )?;
    }
    out.flush()
}

fn state(stream: &str, cursor: u64) -> String {
    format!(
        r#"{{"type":"STATE","state":{{"type":"STREAM","stream":{{"stream_descriptor":{{"name":"{stream}","namespace":"demo"}},"stream_state":{{"cursor":{cursor}}}}}}}}}"#
    )
}
