//! A load's inputs: which files (or stdin), in which format, opened at a byte offset, gzip and zstd
//! undone.
//!
//! Offsets count decompressed bytes. A plain file is opened at an offset by seeking; compressed
//! input and stdin are read and skipped up to it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::cli::InputFormat;

/// Bytes read from an input at once.
const BUFFER: usize = 256 * 1024;

/// One input of a load, as found before it is read.
#[derive(Debug, Clone)]
pub struct Input {
    /// The file; `None` for stdin.
    pub path: Option<PathBuf>,
    /// How messages name it (the path as given, or `stdin`).
    pub name: String,
    /// Its size on disk (`None` for stdin).
    pub size: Option<u64>,
    /// Its modification time, in nanoseconds since the epoch (`None` for stdin).
    pub modified: Option<u128>,
    /// How its records are written.
    pub format: InputFormat,
}

/// Why an input cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be opened or read.
    #[error("cannot read {name}: {source}")]
    Io {
        /// The input's name.
        name: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Its format is neither given nor told by its name.
    #[error("cannot tell the format of {0} from its name: name it .jsonl, .ndjson, .json or .csv (optionally followed by .gz or .zst), or give --format")]
    UnknownFormat(String),
    /// Stdin is named more than once.
    #[error("stdin (-) can be an input only once")]
    StdinTwice,
}

/// The inputs named on the command line (none, or `-`: stdin), their formats from `format` or
/// their names (stdin: JSON Lines unless `format` says otherwise).
pub fn inputs(paths: &[PathBuf], format: Option<InputFormat>) -> Result<Vec<Input>, SourceError> {
    let stdin_only = [PathBuf::from("-")];
    let paths = if paths.is_empty() {
        &stdin_only[..]
    } else {
        paths
    };
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(SourceError::StdinTwice);
    }
    paths
        .iter()
        .map(|path| {
            if path.as_os_str() == "-" {
                return Ok(Input {
                    path: None,
                    name: "stdin".into(),
                    size: None,
                    modified: None,
                    format: format.unwrap_or(InputFormat::Jsonl),
                });
            }
            let name = path.display().to_string();
            let meta = std::fs::metadata(path).map_err(|source| SourceError::Io {
                name: name.clone(),
                source,
            })?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos());
            let format = match format {
                Some(f) => f,
                None => format_by_name(&name).ok_or(SourceError::UnknownFormat(name.clone()))?,
            };
            Ok(Input {
                path: Some(path.clone()),
                name,
                size: Some(meta.len()),
                modified,
                format,
            })
        })
        .collect()
}

/// The format a file name says, looked at after a `.gz`, `.zst` or `.zstd` suffix.
pub fn format_by_name(name: &str) -> Option<InputFormat> {
    let lower = name.to_ascii_lowercase();
    let base = [".gz", ".zst", ".zstd"]
        .iter()
        .find_map(|s| lower.strip_suffix(s))
        .unwrap_or(&lower);
    if base.ends_with(".jsonl") || base.ends_with(".ndjson") {
        Some(InputFormat::Jsonl)
    } else if base.ends_with(".json") {
        Some(InputFormat::Json)
    } else if base.ends_with(".csv") {
        Some(InputFormat::Csv)
    } else {
        None
    }
}

/// An opened input: its bytes, and whether a read would have to wait for more (nothing is
/// buffered at the top), so that records read so far are handed over first (a slow pipe's
/// records never wait for the next ones). A compressed input may say so while its decoder still
/// holds data: the records then go a little sooner, never later.
pub trait Opened: BufRead + Send {
    /// Whether nothing is buffered.
    fn drained(&self) -> bool;
}

impl<R: Read + Send> Opened for BufReader<R> {
    fn drained(&self) -> bool {
        self.buffer().is_empty()
    }
}

/// Counts the bytes read through it into a shared counter (the progress bar's input bytes).
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// How an input's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression the first bytes of an input say.
fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Opens `input` for reading its decompressed bytes from `offset` on; the bytes read from the
/// file (or stdin) itself are added to `raw` as they are read (a plain file opened at an offset
/// counts the bytes it skipped by seeking).
pub fn open(
    input: &Input,
    offset: u64,
    raw: Arc<AtomicU64>,
) -> Result<Box<dyn Opened>, SourceError> {
    let io_err = |source| SourceError::Io {
        name: input.name.clone(),
        source,
    };
    let counted = |inner: Box<dyn Read + Send>| {
        BufReader::with_capacity(
            BUFFER,
            Counted {
                inner,
                count: raw.clone(),
            },
        )
    };
    let mut reader = match &input.path {
        None => counted(Box::new(io::stdin())),
        Some(path) => {
            let mut file = File::open(path).map_err(io_err)?;
            let mut head = [0u8; 4];
            let mut seen = 0;
            while seen < head.len() {
                match file.read(&mut head[seen..]).map_err(io_err)? {
                    0 => break,
                    n => seen += n,
                }
            }
            // A plain file is opened at the offset by seeking.
            let start = match sniff(&head[..seen]) {
                Compression::None => offset,
                _ => 0,
            };
            let len = file.metadata().map_err(io_err)?.len();
            if start > len {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("it is shorter ({len} bytes) than where the load stopped ({offset} bytes): it changed since; give another --load-id to load it anew"),
                )));
            }
            file.seek(SeekFrom::Start(start)).map_err(io_err)?;
            raw.fetch_add(start, Ordering::Relaxed);
            let reader = counted(Box::new(file));
            if start > 0 {
                return Ok(Box::new(reader));
            }
            reader
        }
    };
    let compression = sniff(reader.fill_buf().map_err(io_err)?);
    let mut decoded: Box<dyn Opened> = match compression {
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUFFER,
            flate2::bufread::MultiGzDecoder::new(reader),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUFFER,
            zstd::stream::read::Decoder::with_buffer(reader).map_err(io_err)?,
        )),
        Compression::None => Box::new(reader),
    };
    if offset > 0 {
        let skipped =
            io::copy(&mut (&mut decoded).take(offset), &mut io::sink()).map_err(io_err)?;
        if skipped < offset {
            return Err(io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("it is shorter ({skipped} bytes) than where the load stopped ({offset} bytes): it changed since; give another --load-id to load it anew"),
            )));
        }
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_names_after_compression_suffixes() {
        assert_eq!(format_by_name("a.jsonl"), Some(InputFormat::Jsonl));
        assert_eq!(format_by_name("a.NDJSON.gz"), Some(InputFormat::Jsonl));
        assert_eq!(format_by_name("dir.v2/a.json.zst"), Some(InputFormat::Json));
        assert_eq!(format_by_name("a.csv.zstd"), Some(InputFormat::Csv));
        assert_eq!(format_by_name("a.txt"), None);
        assert_eq!(format_by_name("a.gz"), None);
    }

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(sniff(b"{\"a\":1}"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }
}
