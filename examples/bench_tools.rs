//! Workloads for `scripts/bench.sh`, made from the same Airbyte input the destination reads:
//!
//! * `resp-hset IN OUT` — one `HSET <ns>:<stream>:<id>` per record with the destination's three
//!   fields and values: the server's limit for plain hashes, fed to `redis-cli --pipe`.
//! * `resp-evalsha IN OUT BATCH` — the destination's own append-script calls for the same records,
//!   BATCH records per call: the server's limit for this design, fed to `redis-cli --pipe`.
//! * `java-pattern PORT IN N` — the Java connector's access pattern for the first N records on one
//!   blocking connection: per record INCR + HSET into `tmp:` keys, then per stream KEYS and per record
//!   INCR + RENAME. Prints the seconds it took.
//! * `delay-line PORT MS` — a TCP relay on a free loopback port (printed on its first line) to
//!   127.0.0.1:PORT that holds every chunk MS milliseconds (a fraction is fine) in each direction:
//!   a network round trip of 2 × MS on loopback, with the bandwidth left whole (chunks in flight are
//!   not waited for one by one). Runs until killed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use destination_redis::keys::StreamKeys;
use destination_redis::protocol::input::{self, Message};
use destination_redis::protocol::StreamDescriptor;
use destination_redis::scripts::APPEND_BATCH;
use destination_redis::write::batch::{Batch, Expiry, StreamCall};
use destination_redis::write::resp;

type Failure = Box<dyn std::error::Error>;

/// (stream key, emitted_at, minified data) of every record of the input file.
fn records(path: &str) -> Result<Vec<(StreamDescriptor, i64, Vec<u8>)>, Failure> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(std::fs::File::open(path)?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if let Some(Message::Record(r)) = input::parse_line(&line, i as u64 + 1, || 0)? {
            let mut data = Vec::new();
            input::minify_into(r.data.get(), &mut data);
            let d = StreamDescriptor {
                name: r.stream.into_owned(),
                namespace: r.namespace.map(|n| n.into_owned()),
            };
            out.push((d, r.emitted_at, data));
        }
    }
    Ok(out)
}

fn resp_hset(inp: &str, outp: &str) -> Result<(), Failure> {
    let mut out = BufWriter::new(std::fs::File::create(outp)?);
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut buf = Vec::new();
    for (d, at, data) in records(inp)? {
        let keys = StreamKeys::new(&d);
        let id = ids.entry(keys.counter.clone()).or_insert(0);
        *id += 1;
        buf.clear();
        resp::array_header(&mut buf, 8);
        for part in [
            b"HSET".as_slice(),
            keys.record(*id).as_bytes(),
            b"_airbyte_ab_id",
            id.to_string().as_bytes(),
            b"_airbyte_emitted_at",
            at.to_string().as_bytes(),
            b"_airbyte_data",
            &data,
        ] {
            resp::bulk(&mut buf, part);
        }
        out.write_all(&buf)?;
    }
    out.flush()?;
    Ok(())
}

fn resp_evalsha(inp: &str, outp: &str, batch_size: usize) -> Result<(), Failure> {
    let mut out = BufWriter::new(std::fs::File::create(outp)?);
    let mut open: HashMap<String, (StreamCall, Batch)> = HashMap::new();
    let mut buf = Vec::new();
    let mut flush = |call: &StreamCall,
                     batch: &Batch,
                     out: &mut BufWriter<std::fs::File>|
     -> std::io::Result<()> {
        buf.clear();
        call.encode(batch, &mut buf);
        out.write_all(&buf)
    };
    for (d, at, data) in records(inp)? {
        let keys = StreamKeys::new(&d);
        let (call, batch) = open.entry(keys.counter.clone()).or_insert_with(|| {
            let call = StreamCall::new(&APPEND_BATCH, keys.clone(), "bench", Expiry::NONE);
            (
                call,
                Batch {
                    stream: 0,
                    seq: 1,
                    records: 0,
                    entries: 0,
                    args: 0,
                    first_ordinal: 0,
                    body: Vec::new(),
                },
            )
        });
        resp::bulk_int(&mut batch.body, at);
        resp::bulk(&mut batch.body, &data);
        batch.records += 1;
        batch.entries += 1;
        batch.args += 2;
        if batch.records == batch_size {
            flush(call, batch, &mut out)?;
            batch.seq += 1;
            batch.records = 0;
            batch.entries = 0;
            batch.args = 0;
            batch.body.clear();
        }
    }
    for (call, batch) in open.values() {
        if batch.records > 0 {
            flush(call, batch, &mut out)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn java_pattern(port: u16, inp: &str, n: usize) -> Result<(), Failure> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_connection()?;
    let all = records(inp)?;
    let started = Instant::now();
    let mut streams: Vec<String> = Vec::new();
    for (d, at, data) in all.iter().take(n) {
        let key = StreamKeys::new(d).counter;
        let tmp = format!("tmp:{key}");
        let m: u64 = redis::cmd("INCR").arg(&tmp).query(&mut con)?;
        redis::cmd("HSET")
            .arg(format!("{tmp}:{m}"))
            .arg("_airbyte_ab_id")
            .arg(m)
            .arg("_airbyte_data")
            .arg(data.as_slice())
            .arg("_airbyte_emitted_at")
            .arg(at)
            .query::<()>(&mut con)?;
        if !streams.contains(&key) {
            streams.push(key);
        }
    }
    for key in &streams {
        let staged: Vec<String> = redis::cmd("KEYS")
            .arg(format!("tmp:{key}:[0-9]*"))
            .query(&mut con)?;
        for s in staged {
            let id: u64 = redis::cmd("INCR").arg(key).query(&mut con)?;
            redis::cmd("RENAME")
                .arg(&s)
                .arg(format!("{key}:{id}"))
                .query::<()>(&mut con)?;
        }
    }
    println!("{:.6}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Relays connections to 127.0.0.1:`port`, each chunk held `one_way` in each direction.
fn delay_line(port: u16, one_way: Duration) -> Result<(), Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for client in listener.incoming() {
        let client = client?;
        let server = TcpStream::connect(("127.0.0.1", port))?;
        for s in [&client, &server] {
            s.set_nodelay(true)?;
        }
        delayed(client.try_clone()?, server.try_clone()?, one_way);
        delayed(server, client, one_way);
    }
    Ok(())
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (a reader thread stamps
/// the chunks, a writer thread releases them in order), then shuts `to` for writing.
fn delayed(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or("missing argument (see the file's header)")
    };
    match arg(0)?.as_str() {
        "resp-hset" => resp_hset(&arg(1)?, &arg(2)?),
        "resp-evalsha" => resp_evalsha(&arg(1)?, &arg(2)?, arg(3)?.parse()?),
        "java-pattern" => java_pattern(arg(1)?.parse()?, &arg(2)?, arg(3)?.parse()?),
        "delay-line" => delay_line(
            arg(1)?.parse()?,
            Duration::from_secs_f64(arg(2)?.parse::<f64>()? / 1000.0),
        ),
        other => Err(format!("unknown tool {other}").into()),
    }
}
