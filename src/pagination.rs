//! Keyset pagination shared by every list: opaque cursors over time-ordered ids, forwards
//! (`first`/`after`) and backwards (`last`/`before`), stable under concurrent inserts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

use crate::error::AppError;

pub const DEFAULT_PAGE_SIZE: i32 = 50;
pub const MAX_PAGE_SIZE: i32 = 100;
const CURSOR_TAG: &str = "k1:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// A validated page request.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub direction: Direction,
    pub limit: u64,
    pub cursor: Option<Uuid>,
}

impl PageRequest {
    /// Validates Relay arguments: `first` and `last` exclude each other, 0..=100, default 50.
    pub fn from_args(
        first: Option<i32>,
        after: Option<&str>,
        last: Option<i32>,
        before: Option<&str>,
    ) -> Result<Self, AppError> {
        let direction = match (
            first.is_some() || after.is_some(),
            last.is_some() || before.is_some(),
        ) {
            (true, true) => {
                return Err(AppError::bad_input(
                    "use either `first`/`after` or `last`/`before`, not both",
                ));
            }
            (_, true) => Direction::Backward,
            _ => Direction::Forward,
        };
        let (size, size_name, cursor) = match direction {
            Direction::Forward => (first, "first", after),
            Direction::Backward => (last, "last", before),
        };
        let size = size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(0..=MAX_PAGE_SIZE).contains(&size) {
            return Err(AppError::bad_input(format!(
                "`{size_name}` must be between 0 and {MAX_PAGE_SIZE}"
            )));
        }
        let cursor = cursor.map(decode_cursor).transpose()?;
        Ok(Self {
            direction,
            limit: size as u64,
            cursor,
        })
    }

    pub fn first(limit: u64) -> Self {
        Self {
            direction: Direction::Forward,
            limit,
            cursor: None,
        }
    }
}

/// One page of rows in ascending order, with whether more exist on either side.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_previous: bool,
    pub has_next: bool,
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_TAG}{}", id.simple()))
}

pub fn decode_cursor(cursor: &str) -> Result<Uuid, AppError> {
    let invalid = || AppError::bad_input("malformed cursor");
    if cursor.len() > 128 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid())?;
    let id = text.strip_prefix(CURSOR_TAG).ok_or_else(invalid)?;
    Uuid::try_parse(id).map_err(|_| invalid())
}

/// Runs `select` as one keyset page over `id_column`, which must be unique and time-ordered.
pub async fn fetch_page<E, C>(
    db: &C,
    select: Select<E>,
    id_column: E::Column,
    request: PageRequest,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let select = match (request.direction, request.cursor) {
        (Direction::Forward, Some(c)) => select.filter(id_column.gt(c)),
        (Direction::Backward, Some(c)) => select.filter(id_column.lt(c)),
        (_, None) => select,
    };
    let select = match request.direction {
        Direction::Forward => select.order_by_asc(id_column),
        Direction::Backward => select.order_by_desc(id_column),
    };
    let mut items = select.limit(request.limit + 1).all(db).await?;
    let more = items.len() as u64 > request.limit;
    items.truncate(request.limit as usize);
    let came_from_cursor = request.cursor.is_some();
    Ok(match request.direction {
        Direction::Forward => Page {
            items,
            has_previous: came_from_cursor,
            has_next: more,
        },
        Direction::Backward => {
            items.reverse();
            Page {
                items,
                has_previous: more,
                has_next: came_from_cursor,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_arguments() {
        assert_eq!(
            PageRequest::from_args(None, None, None, None)
                .unwrap()
                .limit,
            50
        );
        assert!(PageRequest::from_args(Some(101), None, None, None).is_err());
        assert!(PageRequest::from_args(Some(-1), None, None, None).is_err());
        assert!(PageRequest::from_args(Some(1), None, Some(1), None).is_err());
        assert!(PageRequest::from_args(None, Some("garbage!"), None, None).is_err());
        let id = Uuid::now_v7();
        let req = PageRequest::from_args(None, None, Some(3), Some(&encode_cursor(id))).unwrap();
        assert_eq!((req.direction, req.cursor), (Direction::Backward, Some(id)));
    }
}
