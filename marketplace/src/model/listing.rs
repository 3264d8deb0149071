//! Lists read newest first, a page at a time: where a row stands in such a
//! list, and what a page of it holds.
//!
//! A user's orders and a seller's offers are listed newest first: by
//! creation time, then by id (both descending), so two rows created at the
//! same instant still have a fixed order. A page starts strictly after the
//! [`ListPosition`] of the previous page's last row (keyset paging): rows
//! added meanwhile neither shift nor repeat the others.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Where a row stands in a list read newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// The row's id, which orders rows created at the same instant.
    pub id: Uuid,
}

/// A page of a list: up to a page's worth of rows, and whether more follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice<T> {
    /// The rows, in the list's order.
    pub items: Vec<T>,
    /// Whether rows follow the last one of this page.
    pub more: bool,
}

impl<T> Slice<T> {
    /// The page of `limit` rows out of `rows`, read with one row more than
    /// the page holds (`limit + 1`): that extra row, if it came, tells that
    /// more follow, and is left for the next page.
    pub fn of_overfetched(mut rows: Vec<T>, limit: u32) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        Self { items: rows, more }
    }
}

#[cfg(test)]
mod tests {
    use super::Slice;

    #[test]
    fn the_extra_row_says_more_follow_and_is_left_out() {
        assert_eq!(
            Slice::of_overfetched(vec![1, 2, 3], 2),
            Slice {
                items: vec![1, 2],
                more: true
            }
        );
        assert_eq!(
            Slice::of_overfetched(vec![1, 2], 2),
            Slice {
                items: vec![1, 2],
                more: false
            }
        );
        assert!(Slice::<u8>::of_overfetched(vec![], 2).items.is_empty());
    }
}
