//! Cursor pagination: a page token is the last key of the previous page.

use redstore_proto::common::{PageRequest, PageResponse};

use crate::error::{Error, Result};

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
        let size = self.size as usize;
        if rows.len() > size {
            rows.truncate(size);
            let next = rows.last().map(|r| token_after(&key(r))).unwrap_or_default();
            PageResponse { next_page_token: next }
        } else {
            PageResponse::default()
        }
    }
}
