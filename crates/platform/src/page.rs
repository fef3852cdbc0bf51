//! Cursor pagination: a page token is the last key of the previous page.

use redstore_proto::common::{PageRequest, PageResponse};

use crate::error::{Error, Result};
use crate::limits::{MAX_PAGE_BYTES, MAX_PAGE_TOKEN_BYTES};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// A validated page request: how many rows, and the key to start after.
pub struct Page {
    pub size: u32,
    pub after: String,
}

const PREFIX: &str = "after:";

/// The page token that continues after `key` (what a client sends for the next page).
pub fn token_after(key: &str) -> String {
    format!("{PREFIX}{key}")
}

impl Page {
    pub fn from_proto(field: &str, page: Option<&PageRequest>) -> Result<Self> {
        let Some(page) = page else {
            return Ok(Self { size: DEFAULT_PAGE_SIZE, after: String::new() });
        };
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    format!("{field}.page_size"),
                    format!("is {n}; at most {MAX_PAGE_SIZE} is allowed"),
                ));
            }
            n => n,
        };
        if page.page_token.len() > MAX_PAGE_TOKEN_BYTES {
            return Err(Error::invalid(format!("{field}.page_token"), "is not a token this server issued"));
        }
        let after = if page.page_token.is_empty() {
            String::new()
        } else {
            page.page_token
                .strip_prefix(PREFIX)
                .ok_or_else(|| Error::invalid(format!("{field}.page_token"), "is not a token this server issued"))?
                .to_owned()
        };
        Ok(Self { size, after })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> u32 {
        self.size + 1
    }

    /// Cuts the fetched rows to the page and returns the response cursor.
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> String) -> PageResponse {
        self.finish_within(rows, key, |_| 0)
    }

    /// Like [`Page::finish`], and also cuts the page before its rows' encoded size (`bytes`)
    /// passes [`MAX_PAGE_BYTES`] (a page always holds at least one row): rows that can be large,
    /// such as sales with many lines, never make a page a default client cannot receive.
    pub fn finish_within<T>(
        &self,
        rows: &mut Vec<T>,
        key: impl Fn(&T) -> String,
        bytes: impl Fn(&T) -> usize,
    ) -> PageResponse {
        let mut fits = rows.len().min(self.size as usize);
        let mut total = 0usize;
        for (i, row) in rows.iter().take(fits).enumerate() {
            total = total.saturating_add(bytes(row));
            if total > MAX_PAGE_BYTES && i > 0 {
                fits = i;
                break;
            }
        }
        if rows.len() > fits {
            rows.truncate(fits);
            let next = rows.last().map(|r| token_after(&key(r))).unwrap_or_default();
            PageResponse { next_page_token: next }
        } else {
            PageResponse::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(size: u32) -> Page {
        Page { size, after: String::new() }
    }

    #[test]
    fn a_page_holds_its_size_and_says_where_the_next_begins() {
        let mut rows: Vec<u32> = (1..=4).collect();
        let next = page(3).finish(&mut rows, u32::to_string);
        assert_eq!(rows, [1, 2, 3]);
        assert_eq!(next.next_page_token, token_after("3"));
        let mut rows: Vec<u32> = (1..=3).collect();
        assert_eq!(page(3).finish(&mut rows, u32::to_string).next_page_token, "");
    }

    #[test]
    fn large_rows_end_a_page_early_but_never_leave_it_empty() {
        let big = MAX_PAGE_BYTES / 3 + 1;
        let mut rows: Vec<u32> = (1..=10).collect();
        let next = page(50).finish_within(&mut rows, u32::to_string, |_| big);
        assert_eq!(rows, [1, 2], "a third row would pass the byte limit");
        assert_eq!(next.next_page_token, token_after("2"));
        let mut huge: Vec<u32> = vec![7, 8];
        let next = page(50).finish_within(&mut huge, u32::to_string, |_| MAX_PAGE_BYTES * 2);
        assert_eq!(huge, [7], "one row however large");
        assert_eq!(next.next_page_token, token_after("7"));
    }

    #[test]
    fn a_token_it_did_not_issue_is_refused_without_echoing_it() {
        let long = PageRequest { page_size: 0, page_token: format!("after:{}", "x".repeat(10_000)) };
        let err = Page::from_proto("page", Some(&long)).err().expect("refused");
        assert_eq!(err.field(), Some("page.page_token"));
        assert!(err.to_string().len() < 100, "{err}");
    }
}
