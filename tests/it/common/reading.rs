//! Reading what the destination wrote, straight from Redis.

use std::collections::HashMap;

/// Every key of the database (small test databases only).
pub fn all_keys(con: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).expect("KEYS");
    keys.sort();
    keys
}

/// The stream's counter key in the Java layout (`<namespace>:<stream>`).
pub fn counter_key(ns: Option<&str>, stream: &str) -> String {
    format!("{}:{stream}", ns.unwrap_or(""))
}

/// The stream's counter and its records 1..=counter in id order (a missing hash is an empty map).
pub fn read_stream(
    con: &mut redis::Connection,
    ns: Option<&str>,
    stream: &str,
) -> (Option<i64>, Vec<HashMap<String, String>>) {
    let key = counter_key(ns, stream);
    let counter: Option<i64> = redis::cmd("GET").arg(&key).query(con).expect("GET counter");
    let n = counter.unwrap_or(0);
    let mut pipe = redis::pipe();
    for id in 1..=n {
        pipe.cmd("HGETALL").arg(format!("{key}:{id}"));
    }
    let records: Vec<HashMap<String, String>> = if n > 0 {
        pipe.query(con).expect("HGETALL")
    } else {
        Vec::new()
    };
    (counter, records)
}

/// How many keys are the stream's prefix followed by digits only (found with a bounded SCAN).
pub fn count_record_keys(con: &mut redis::Connection, ns: Option<&str>, stream: &str) -> usize {
    count_prefixed(con, &format!("{}:", counter_key(ns, stream)))
}

/// How many keys are `prefix` followed by digits only (found with a bounded SCAN).
pub fn count_prefixed(con: &mut redis::Connection, prefix: &str) -> usize {
    let pattern: String = prefix
        .chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .chain("*".chars())
        .collect();
    let mut cursor = 0u64;
    let mut count = 0;
    for _ in 0..100_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        count += keys
            .iter()
            .filter(|k| {
                let tail = &k[prefix.len()..];
                !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())
            })
            .count();
        cursor = next;
        if cursor == 0 {
            return count;
        }
    }
    panic!("SCAN did not finish");
}
