//! [`BrokerAddresses`]: the broker addresses of a configuration, tried in
//! turn.
//!
//! [`RabbitConfig::amqp_url`](crate::RabbitConfig::amqp_url) is one AMQP URL
//! or a comma-separated list of them (the nodes of a cluster), each with its
//! own credentials and vhost. A connection goes to the first address that
//! answers, starting after the address the previous connection attempt
//! began with: the first connection of a process starts at the head of the
//! list (shuffled once per process unless
//! [`RabbitConfig::shuffle_addresses`](crate::RabbitConfig::shuffle_addresses)
//! is off, so that replicas spread over the nodes), and a reconnection after
//! a lost connection moves on to the next node.
//!
//! Addresses are only ever shown with their password left out.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::Duration,
};

use lapin::{uri::AMQPUri, Connection, ConnectionProperties};

use crate::RabbitError;

/// One broker address: the parsed URL and how it is shown.
#[derive(Clone)]
struct BrokerAddress {
    uri: AMQPUri,
    shown: String,
}

/// The parsed, validated broker addresses of a configuration, in the order
/// connections try them.
pub struct BrokerAddresses {
    entries: Vec<BrokerAddress>,
    /// Where the next connection attempt starts (modulo the length).
    next: AtomicUsize,
}

impl fmt::Debug for BrokerAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| &entry.shown))
            .finish()
    }
}

impl BrokerAddresses {
    /// Parses `list`, one AMQP URL or several separated by commas (blanks
    /// around each are ignored). A malformed or empty entry is a
    /// [`RabbitError::InvalidConfig`] naming its position (1-based), never
    /// its password. With `shuffle`, the order is shuffled, the same way for
    /// every list of the same length in this process.
    pub fn parse(list: &str, shuffle: bool) -> Result<Self, RabbitError> {
        let raw: Vec<&str> = list.split(',').map(str::trim).collect();
        let count = raw.len();
        let mut entries = Vec::with_capacity(count);
        for (index, entry) in raw.iter().enumerate() {
            let position = index + 1;
            if entry.is_empty() {
                return Err(RabbitError::InvalidConfig(format!(
                    "amqp_url: address {position} of {count} is empty"
                )));
            }
            let uri = entry.parse::<AMQPUri>().map_err(|error| {
                // The parser may quote the whole URL, password included.
                let error = if error.contains(entry) {
                    "not a URL".to_owned()
                } else {
                    error
                };
                RabbitError::InvalidConfig(format!(
                    "amqp_url: address {position} of {count} ({}) is not an AMQP URL \
                     (amqp://user:password@host:port/vhost): {error}",
                    redact(entry)
                ))
            })?;
            entries.push(BrokerAddress {
                uri,
                shown: redact(entry),
            });
        }
        if shuffle {
            shuffle_in_process_order(&mut entries);
        }
        Ok(Self {
            entries,
            next: AtomicUsize::new(0),
        })
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: a list holds at least one address.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The addresses in the order they are tried, passwords left out
    /// (`amqp://user@host:port/vhost`).
    pub fn shown(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|entry| entry.shown.clone())
            .collect()
    }

    /// Connects to the first address that answers, each attempt bounded by
    /// `attempt_timeout`, starting after the address the previous call
    /// started with (so a reconnection moves on to the next node). Returns
    /// the connection and the address it goes to (password left out).
    ///
    /// Cancellation-safe: an attempt cancelled halfway (by a caller's
    /// deadline) still moves the next call on to the following address.
    pub(crate) async fn connect(
        &self,
        properties: &ConnectionProperties,
        attempt_timeout: Duration,
    ) -> Result<(Connection, String), RabbitError> {
        let count = self.entries.len();
        let start = self.next.load(Ordering::SeqCst);
        let mut failures = Vec::with_capacity(count);
        for offset in 0..count {
            let index = (start + offset) % count;
            // Whatever happens to this attempt, the next call starts past it.
            self.next.store((index + 1) % count, Ordering::SeqCst);
            let entry = &self.entries[index];
            let attempt = tokio::time::timeout(
                attempt_timeout,
                Connection::connect_uri(entry.uri.clone(), properties.clone()),
            )
            .await;
            let error = match attempt {
                Ok(Ok(connection)) => return Ok((connection, entry.shown.clone())),
                Ok(Err(error)) => error.to_string(),
                Err(_elapsed) => format!("no answer within {attempt_timeout:?}"),
            };
            if count > 1 {
                tracing::warn!(address = %entry.shown, %error, "broker address did not answer, trying the next one");
            }
            failures.push(format!("{}: {error}", entry.shown));
        }
        Err(RabbitError::Connect(Box::new(Unreachable { failures })))
    }
}

/// No address answered.
#[derive(Debug, thiserror::Error)]
#[error("no broker address answered ({})", failures.join("; "))]
struct Unreachable {
    failures: Vec<String>,
}

/// `url` without its password: `amqp://user@host:port/vhost` (the query
/// string left out too).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Shuffles `entries` with a seed drawn once per process: every list of the
/// same length is put in the same order.
fn shuffle_in_process_order<T>(entries: &mut [T]) {
    static SEED: OnceLock<u64> = OnceLock::new();
    let mut state = *SEED.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        // xorshift must not start at 0.
        hasher.finish() | 1
    });
    // Fisher-Yates over xorshift64.
    for last in (1..entries.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pick = usize::try_from(state % (last as u64 + 1)).unwrap_or(0);
        entries.swap(last, pick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_its_order_without_shuffle_and_shows_no_password() {
        let addresses = BrokerAddresses::parse(
            "amqp://guest:secret@127.0.0.1:5681/%2f, amqp://app:s3cr3t@node-2:5682/shop,amqps://node-3",
            false,
        )
        .unwrap();
        assert_eq!(
            addresses.shown(),
            [
                "amqp://guest@127.0.0.1:5681/%2f",
                "amqp://app@node-2:5682/shop",
                "amqps://node-3"
            ]
        );
        assert!(!format!("{addresses:?}").contains("secret"));
    }

    #[test]
    fn a_shuffled_list_holds_the_same_addresses() {
        let list = (1..=5)
            .map(|port| format!("amqp://u:p@h:{port}/v"))
            .collect::<Vec<_>>();
        let addresses = BrokerAddresses::parse(&list.join(","), true).unwrap();
        let mut shown = addresses.shown();
        shown.sort();
        let mut expected = (1..=5)
            .map(|port| format!("amqp://u@h:{port}/v"))
            .collect::<Vec<_>>();
        expected.sort();
        assert_eq!(shown, expected);
        // Once per process: the same list gets the same order again.
        assert_eq!(
            BrokerAddresses::parse(&list.join(","), true)
                .unwrap()
                .shown(),
            addresses.shown()
        );
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_without_its_password() {
        let error = BrokerAddresses::parse("amqp://u:p@h:1/v,http://u:hunter2@h:2/v", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("address 2 of 2"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");

        let error = BrokerAddresses::parse("amqp://u:p@h:1/v,", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("address 2 of 2 is empty"), "{error}");

        let error = BrokerAddresses::parse("guest:hunter2@localhost", false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("address 1 of 1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
