//! The load's front: its inputs, from where an earlier run stopped, parsed into the chunks the
//! write pipeline takes (the same records `write` would make of the same data), each record
//! carrying its input position for its batch to record.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::value::RawValue;

use super::parse::{self, Fatal, Parser, Piece};
use super::source::{self, Input};
use crate::cli::InputFormat;
use crate::error::Failure;
use crate::protocol::output::now_ms;
use crate::write::batch::InputPosition;
use crate::write::reader::{self, Chunk, Item, NewRecord, Streams};

/// Records per chunk at most.
const CHUNK_ITEMS: usize = 1024;
/// Bytes of record data per chunk at most.
const CHUNK_BYTES: usize = 1024 * 1024;
/// How long a chunk may wait for more records before it is handed over (a slow pipe).
const CHUNK_WAIT: Duration = Duration::from_millis(100);

/// What the front has done so far: read by the progress display, from another thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from the inputs as stored (compressed ones: compressed bytes).
    pub raw_bytes: Arc<AtomicU64>,
    /// Bytes of record text read (decompressed).
    pub data_bytes: AtomicU64,
    /// Records read and handed to the writer in this run.
    pub records: AtomicU64,
    /// Records set aside (`--skip-bad`).
    pub rejected: AtomicU64,
}

/// Where records that cannot be loaded go with `--skip-bad`: one JSON line each, naming the
/// input, the line and the reason.
pub struct Rejects {
    out: BufWriter<File>,
    /// Its path, for messages.
    pub name: String,
}

impl Rejects {
    /// Opens (appends to) the file at `path`.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Rejects {
            out: BufWriter::new(file),
            name: path.display().to_string(),
        })
    }

    fn write(&mut self, input: &str, line: u64, reason: &str, text: &str) -> std::io::Result<()> {
        let entry =
            serde_json::json!({"input": input, "line": line, "reason": reason, "text": text});
        writeln!(self.out, "{entry}")
    }
}

/// A load's inputs and where to start reading them.
pub struct Front {
    /// Every input of the load, in order.
    pub inputs: Vec<Input>,
    /// Where the last committed record of an earlier run ended (the default: the start).
    pub from: InputPosition,
    /// `--csv-infer`.
    pub csv_infer: bool,
    /// `--skip-bad`.
    pub rejects: Option<Rejects>,
    /// Progress, shared with the display.
    pub counters: Arc<Counters>,
}

impl Front {
    /// Reads every input from [`Self::from`] on, sending chunks to `tx`; the first input failure
    /// (or bad record without `--skip-bad`) ends the chunks with an [`Item::Failed`].
    pub fn run(mut self, streams: Arc<Streams>, tx: Sender<Chunk>) {
        let mut sender = ChunkSender {
            tx,
            chunk: Chunk::default(),
            since: Instant::now(),
            closed: false,
        };
        if let Err(f) = self.read_all(&streams, &mut sender) {
            sender.chunk.items.push(Item::Failed(f));
        }
        if let Some(rejects) = &mut self.rejects {
            if let Err(e) = rejects.out.flush() {
                let f = Failure::system(
                    format!(
                        "Writing the rejected records to {} failed: {e}.",
                        rejects.name
                    ),
                    &e,
                );
                sender.chunk.items.push(Item::Failed(f));
            }
        }
        sender.flush();
    }

    fn read_all(&mut self, streams: &Streams, sender: &mut ChunkSender) -> Result<(), Failure> {
        let mut records = self.from.records;
        let inputs = self.inputs.clone();
        for (index, input) in inputs.iter().enumerate().skip(self.from.input as usize) {
            let (offset, line) = match index == self.from.input as usize {
                true => (self.from.offset, self.from.line),
                false => (0, 0),
            };
            let mut parser = self.parser(input, offset, line)?;
            // Only CSV from stdin resumes by parsing from the start (its header is there).
            let skip_to = match (input.format, &input.path, offset) {
                (InputFormat::Csv, None, o) if o > 0 => o,
                _ => 0,
            };
            loop {
                if parser.drained() && !sender.chunk.items.is_empty() {
                    // The next read may wait: what was read goes first.
                    self.flush_rejects()?;
                    sender.flush();
                    if sender.closed {
                        return Ok(());
                    }
                }
                let piece = parser.next_piece().map_err(|e| fatal(input, e))?;
                let Some(piece) = piece else { break };
                match piece {
                    Piece::Record { end, .. } | Piece::Bad { end, .. } if end <= skip_to => {}
                    Piece::Record { json, end, line } => {
                        let data: &RawValue = match serde_json::from_str(json) {
                            Ok(data) => data,
                            Err(e) => {
                                self.bad(input, line, &format!("is not JSON ({e})"), json)?;
                                continue;
                            }
                        };
                        let origin =
                            || format!("Record {} of {} (line {line})", records + 1, input.name);
                        let chunk = &mut sender.chunk;
                        let record = NewRecord {
                            stream: 0,
                            data,
                            emitted_at: now_ms(),
                            line,
                        };
                        match reader::push_record(streams, record, &origin, chunk) {
                            Ok(()) => {
                                records += 1;
                                if let Some(Item::Record { position, .. }) = chunk.items.last_mut()
                                {
                                    *position = Some(InputPosition {
                                        input: index as u32,
                                        offset: end,
                                        line,
                                        records,
                                    });
                                }
                                let c = &self.counters;
                                c.records.fetch_add(1, Ordering::Relaxed);
                                c.data_bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
                            }
                            Err(f) => self.refused(input, line, f, json)?,
                        }
                        if sender.due() {
                            // Rejects before the records after them: a batch that commits a
                            // position past a reject never leaves that reject unwritten.
                            self.flush_rejects()?;
                            sender.flush();
                            if sender.closed {
                                return Ok(());
                            }
                        }
                    }
                    Piece::Bad {
                        reason, text, line, ..
                    } => self.bad(input, line, &reason, &text)?,
                }
            }
        }
        Ok(())
    }

    /// Writes the rejects set aside so far to their file.
    fn flush_rejects(&mut self) -> Result<(), Failure> {
        match &mut self.rejects {
            Some(rejects) => rejects.out.flush().map_err(|e| {
                Failure::system(
                    format!(
                        "Writing the rejected records to {} failed: {e}.",
                        rejects.name
                    ),
                    &e,
                )
            }),
            None => Ok(()),
        }
    }

    fn parser(&self, input: &Input, offset: u64, line: u64) -> Result<Parser, Failure> {
        let raw = Arc::new(AtomicU64::new(0));
        let open = |at: u64, raw: Arc<AtomicU64>| {
            source::open(input, at, raw)
                .map_err(|e| Failure::config(format!("The input {}: {e}.", input.name), &e))
        };
        let (start, line, header) = match (input.format, &input.path, offset) {
            // A plain CSV file resumed: its header row, then the rows from the offset on.
            (InputFormat::Csv, Some(_), o) if o > 0 => {
                let header = parse::csv_header(open(0, raw)?).map_err(|e| fatal(input, e))?;
                (o, line, header)
            }
            (InputFormat::Csv, None, _) => (0, 0, None),
            _ => (offset, line, None),
        };
        let reader = open(start, self.counters.raw_bytes.clone())?;
        Ok(Parser::new(
            input.format,
            reader,
            start,
            line,
            header,
            self.csv_infer,
        ))
    }

    /// A record that cannot be a record: set aside with `--skip-bad`, else the load's end.
    fn bad(&mut self, input: &Input, line: u64, reason: &str, text: &str) -> Result<(), Failure> {
        let message = format!(
            "{} line {line} {reason}. Fix it, or give --skip-bad FILE to set such records aside and go on.",
            input.name
        );
        self.set_aside(input, line, reason, text, Failure::config(message, reason))
    }

    /// A record the stream cannot store (`push_record` refused it).
    fn refused(&mut self, input: &Input, line: u64, f: Failure, text: &str) -> Result<(), Failure> {
        let reason = f.message.clone();
        self.set_aside(input, line, &reason, text, f)
    }

    fn set_aside(
        &mut self,
        input: &Input,
        line: u64,
        reason: &str,
        text: &str,
        f: Failure,
    ) -> Result<(), Failure> {
        let Some(rejects) = &mut self.rejects else {
            return Err(f);
        };
        rejects
            .write(&input.name, line, reason, text)
            .map_err(|e| {
                Failure::system(
                    format!("Writing a rejected record to {} failed: {e}.", rejects.name),
                    &e,
                )
            })?;
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn fatal(input: &Input, e: Fatal) -> Failure {
    let message = format!("The input {} cannot be read on: {e}.", input.name);
    match e {
        Fatal::Io { .. } => Failure::transient(message, &e),
        Fatal::Structure { .. } => Failure::config(message, &e),
    }
}

/// The chunk being filled, handed over when full or when it has waited long enough.
struct ChunkSender {
    tx: Sender<Chunk>,
    chunk: Chunk,
    since: Instant,
    /// The run ended (the channel is closed): reading on is moot.
    closed: bool,
}

impl ChunkSender {
    /// Whether the chunk is due: full, or waiting long enough.
    fn due(&self) -> bool {
        let full = self.chunk.items.len() >= CHUNK_ITEMS || self.chunk.arena.len() >= CHUNK_BYTES;
        full || self.since.elapsed() >= CHUNK_WAIT
    }

    fn flush(&mut self) {
        if !self.chunk.items.is_empty() && self.tx.send(std::mem::take(&mut self.chunk)).is_err() {
            self.closed = true;
        }
        self.since = Instant::now();
    }
}
