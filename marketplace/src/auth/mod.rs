//! Who is asking: bearer tokens (RFC 6750) verified into a [`Principal`].

use uuid::Uuid;

/// The signed-in user of a request: the verified token's `sub`.
///
/// The authentication layer puts it in the request's extensions when the
/// request carries a valid token; the edge (rate limits) and the routes
/// read it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The user id (`sub`).
    pub user: Uuid,
}
