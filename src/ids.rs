//! Public identifiers: a kind prefix and a UUIDv7 (`cus_0193…`), parsed at the edge.

use uuid::Uuid;

use crate::error::AppError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Account,
    ApiKey,
    Customer,
    Connection,
    CreditEntry,
    Event,
    SyncRun,
    Record,
    WebhookEndpoint,
    WebhookDelivery,
    BulkOperation,
    PortalSession,
    Flow,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Account,
        Kind::ApiKey,
        Kind::Customer,
        Kind::Connection,
        Kind::CreditEntry,
        Kind::Event,
        Kind::SyncRun,
        Kind::Record,
        Kind::WebhookEndpoint,
        Kind::WebhookDelivery,
        Kind::BulkOperation,
        Kind::PortalSession,
        Kind::Flow,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Account => "acc",
            Kind::ApiKey => "key",
            Kind::Customer => "cus",
            Kind::Connection => "con",
            Kind::CreditEntry => "crd",
            Kind::Event => "evt",
            Kind::SyncRun => "run",
            Kind::Record => "rec",
            Kind::WebhookEndpoint => "whe",
            Kind::WebhookDelivery => "whd",
            Kind::BulkOperation => "blk",
            Kind::PortalSession => "pts",
            Kind::Flow => "flw",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::ApiKey => "API key",
            Kind::Customer => "customer",
            Kind::Connection => "connection",
            Kind::CreditEntry => "credit ledger entry",
            Kind::Event => "event",
            Kind::SyncRun => "sync run",
            Kind::Record => "record",
            Kind::WebhookEndpoint => "webhook endpoint",
            Kind::WebhookDelivery => "webhook delivery",
            Kind::BulkOperation => "bulk operation",
            Kind::PortalSession => "portal session",
            Kind::Flow => "flow",
        }
    }
}

/// A new time-ordered id: keyset pagination by id is pagination by creation.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

pub fn encode(kind: Kind, id: Uuid) -> String {
    format!("{}_{}", kind.prefix(), id.simple())
}

/// Parses an id of the given kind; anything else is `BAD_USER_INPUT` naming the kind.
pub fn decode(kind: Kind, text: &str) -> Result<Uuid, AppError> {
    parse(text)
        .filter(|(k, _)| *k == kind)
        .map(|(_, id)| id)
        .ok_or_else(|| {
            AppError::bad_input(format!("`{text:.80}` is not a valid {} id", kind.noun()))
        })
}

/// Splits any public id into its kind and UUID.
pub fn parse(text: &str) -> Option<(Kind, Uuid)> {
    let (prefix, rest) = text.split_once('_')?;
    let kind = Kind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
    if rest.len() != 32 {
        return None;
    }
    Uuid::try_parse(rest).ok().map(|id| (kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_kinds() {
        let id = new_id();
        let text = encode(Kind::Customer, id);
        assert_eq!(decode(Kind::Customer, &text).unwrap(), id);
        assert!(decode(Kind::Account, &text).is_err());
        assert!(decode(Kind::Customer, "cus_nothex").is_err());
        assert!(parse("").is_none());
    }
}
