//! The systems catalog: every system with a working connector, its tier, deployments,
//! entities and credential fields, and what a connection to it costs.

use std::fmt;

use serde_json::{Map, Value};

use crate::error::AppError;

pub use entity::enums::{Deployment, EntityType, WriteOperation};

/// What kind of system a connectable system is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemCategory {
    /// Computerised maintenance management system.
    Cmms,
    /// Enterprise asset management system.
    Eam,
    /// Enterprise resource planning system.
    Erp,
    /// Warehouse management system.
    Wms,
}

/// What a credential field accepts.
#[derive(Clone, Copy, Debug)]
pub enum FieldKind {
    Text,
    Integer {
        min: i64,
        max: i64,
    },
    OneOf(&'static [&'static str]),
    /// A JSON object (its shape is the connector's to check).
    Object,
}

#[derive(Clone, Copy, Debug)]
pub struct CredentialField {
    pub name: &'static str,
    pub label: &'static str,
    pub secret: bool,
    pub required: bool,
    pub kind: FieldKind,
}

#[derive(Debug)]
pub struct System {
    pub key: &'static str,
    pub name: &'static str,
    pub vendor: &'static str,
    pub category: SystemCategory,
    /// 1 (simple cloud CMMS), 2 (mid-size ERP) or 3 (SAP-class).
    pub tier: u8,
    pub deployments: &'static [Deployment],
    pub entities: &'static [EntityType],
    /// What a bulk write may do: the entity types written back, each with its operations.
    pub writes: &'static [(EntityType, &'static [WriteOperation])],
    pub credential_fields: &'static [CredentialField],
}

/// Every write operation.
pub const ALL_WRITES: &[WriteOperation] = &[
    WriteOperation::Create,
    WriteOperation::Update,
    WriteOperation::Delete,
];

impl System {
    /// The entity types its connector writes back.
    pub fn writable_entities(&self) -> Vec<EntityType> {
        self.writes.iter().map(|(entity, _)| *entity).collect()
    }

    /// The operations its connector performs on `entity` (none when it is read-only).
    pub fn write_operations(&self, entity: EntityType) -> &'static [WriteOperation] {
        self.writes
            .iter()
            .find(|(e, _)| *e == entity)
            .map_or(&[], |(_, operations)| operations)
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key)
    }
}

/// Credits a connection costs: tier 1 = 1, tier 2 = 2, tier 3 = 4; on-premises doubles.
pub fn credit_cost(tier: u8, deployment: Deployment) -> i32 {
    let base = match tier {
        1 => 1,
        2 => 2,
        _ => 4,
    };
    match deployment {
        Deployment::Cloud => base,
        Deployment::OnPremises => base * 2,
    }
}

impl System {
    pub fn credit_cost(&self, deployment: Deployment) -> i32 {
        credit_cost(self.tier, deployment)
    }

    pub fn offers(&self, deployment: Deployment) -> bool {
        self.deployments.contains(&deployment)
    }

    /// Checks credentials against the credential fields; errors name the field.
    pub fn validate_credentials(
        &self,
        credentials: &Value,
    ) -> Result<Map<String, Value>, AppError> {
        let Value::Object(map) = credentials else {
            return Err(AppError::bad_input("`credentials` must be a JSON object"));
        };
        if let Some(unknown) = map
            .keys()
            .find(|k| !self.credential_fields.iter().any(|f| f.name == k.as_str()))
        {
            return Err(AppError::bad_input(format!(
                "`credentials.{unknown:.64}` is not a credential field of {}",
                self.key
            )));
        }
        for field in self.credential_fields {
            match map.get(field.name) {
                None | Some(Value::Null) if field.required => {
                    return Err(AppError::bad_input(format!(
                        "`credentials.{}` is required",
                        field.name
                    )));
                }
                None | Some(Value::Null) => {}
                Some(value) => check_field(field, value)?,
            }
        }
        Ok(map.clone())
    }

    /// Credentials with every secret field replaced, safe to show or log.
    pub fn redact(&self, credentials: &Map<String, Value>) -> Map<String, Value> {
        credentials
            .iter()
            .map(|(name, value)| {
                let secret = self
                    .credential_fields
                    .iter()
                    .any(|f| f.name == name && f.secret);
                (
                    name.clone(),
                    if secret {
                        Value::from("[redacted]")
                    } else {
                        value.clone()
                    },
                )
            })
            .collect()
    }
}

const MAX_TEXT_LEN: usize = 4096;
const MAX_OBJECT_LEN: usize = 16 * 1024;

fn check_field(field: &CredentialField, value: &Value) -> Result<(), AppError> {
    let name = field.name;
    match (field.kind, value) {
        (FieldKind::Text, Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_TEXT_LEN => {
            Ok(())
        }
        (FieldKind::Text, _) => Err(AppError::bad_input(format!(
            "`credentials.{name}` must be a non-empty string of at most {MAX_TEXT_LEN} bytes"
        ))),
        (FieldKind::Integer { min, max }, Value::Number(n))
            if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) =>
        {
            Ok(())
        }
        (FieldKind::Integer { min, max }, _) => Err(AppError::bad_input(format!(
            "`credentials.{name}` must be a whole number from {min} to {max}"
        ))),
        (FieldKind::OneOf(options), Value::String(s)) if options.contains(&s.as_str()) => Ok(()),
        (FieldKind::OneOf(options), _) => Err(AppError::bad_input(format!(
            "`credentials.{name}` must be one of: {}",
            options.join(", ")
        ))),
        (FieldKind::Object, Value::Object(_)) if value.to_string().len() <= MAX_OBJECT_LEN => {
            Ok(())
        }
        (FieldKind::Object, _) => Err(AppError::bad_input(format!(
            "`credentials.{name}` must be a JSON object of at most {MAX_OBJECT_LEN} bytes"
        ))),
    }
}

const ALL_ENTITIES: &[EntityType] = &[
    EntityType::Site,
    EntityType::Location,
    EntityType::Asset,
    EntityType::WorkOrder,
    EntityType::Part,
    EntityType::PurchaseOrder,
    EntityType::Vendor,
    EntityType::User,
];

/// The simulated CMMS inside the server (see `connectors::demo`).
pub static DEMO: System = System {
    key: "demo",
    name: "Millwright Demo CMMS",
    vendor: "Millwright",
    category: SystemCategory::Cmms,
    tier: 1,
    deployments: &[Deployment::Cloud, Deployment::OnPremises],
    entities: ALL_ENTITIES,
    writes: &[
        (EntityType::Asset, ALL_WRITES),
        (EntityType::WorkOrder, ALL_WRITES),
    ],
    credential_fields: &[
        CredentialField {
            name: "api_key",
            label: "API key",
            secret: true,
            required: true,
            kind: FieldKind::Text,
        },
        CredentialField {
            name: "scale",
            label: "Records per entity",
            secret: false,
            required: false,
            kind: FieldKind::Integer {
                min: 0,
                max: 1_000_000,
            },
        },
        CredentialField {
            name: "simulate",
            label: "Simulated behaviour",
            secret: false,
            required: false,
            kind: FieldKind::OneOf(&["none", "auth_expired", "offline", "rate_limited", "flaky"]),
        },
    ],
};

const fn field(
    name: &'static str,
    label: &'static str,
    secret: bool,
    required: bool,
) -> CredentialField {
    CredentialField {
        name,
        label,
        secret,
        required,
        kind: FieldKind::Text,
    }
}

/// MaintainX, a cloud CMMS (see `connectors::maintainx`).
pub static MAINTAINX: System = System {
    key: "maintainx",
    name: "MaintainX",
    vendor: "MaintainX",
    category: SystemCategory::Cmms,
    tier: 1,
    deployments: &[Deployment::Cloud],
    entities: &[
        EntityType::Location,
        EntityType::Asset,
        EntityType::WorkOrder,
        EntityType::Part,
        EntityType::PurchaseOrder,
        EntityType::Vendor,
        EntityType::User,
    ],
    writes: &[(EntityType::WorkOrder, ALL_WRITES)],
    credential_fields: &[
        field("api_key", "API key", true, true),
        field(
            "base_url",
            "API base URL (default https://api.getmaintainx.com/v1)",
            false,
            false,
        ),
    ],
};

/// IBM Maximo, an enterprise EAM (see `connectors::maximo`).
pub static IBM_MAXIMO: System = System {
    key: "ibm_maximo",
    name: "IBM Maximo",
    vendor: "IBM",
    category: SystemCategory::Eam,
    tier: 3,
    deployments: &[Deployment::Cloud, Deployment::OnPremises],
    entities: ALL_ENTITIES,
    writes: &[(EntityType::WorkOrder, ALL_WRITES)],
    credential_fields: &[
        field(
            "base_url",
            "Maximo root URL (https://host/maximo)",
            false,
            true,
        ),
        field("api_key", "API key", true, true),
    ],
};

const SAP_AUTH: &[&str] = &["basic", "oauth_client_credentials"];

const SAP_FIELDS: &[CredentialField] = &[
    field(
        "base_url",
        "SAP system URL (scheme, host, port)",
        false,
        true,
    ),
    CredentialField {
        name: "auth",
        label: "Authentication",
        secret: false,
        required: true,
        kind: FieldKind::OneOf(SAP_AUTH),
    },
    field("username", "User (basic)", false, false),
    field("password", "Password (basic)", true, false),
    field(
        "token_url",
        "OAuth token URL (client credentials)",
        false,
        false,
    ),
    field("client_id", "OAuth client ID", false, false),
    field("client_secret", "OAuth client secret", true, false),
    field("sap_client", "SAP client (sap-client)", false, false),
    field(
        "maintenance_order_type",
        "Order type of work orders created in S/4HANA (default PM01)",
        false,
        false,
    ),
];

/// SAP S/4HANA through its OData V2 A2X services (see `connectors::sap`).
pub static SAP_S4HANA: System = System {
    key: "sap_s4hana",
    name: "SAP S/4HANA",
    vendor: "SAP",
    category: SystemCategory::Erp,
    tier: 3,
    deployments: &[Deployment::Cloud, Deployment::OnPremises],
    entities: &[
        EntityType::Location,
        EntityType::Asset,
        EntityType::WorkOrder,
        EntityType::Part,
        EntityType::PurchaseOrder,
        EntityType::Vendor,
    ],
    writes: &[
        (
            EntityType::Asset,
            &[WriteOperation::Create, WriteOperation::Update],
        ),
        (
            EntityType::WorkOrder,
            &[WriteOperation::Create, WriteOperation::Update],
        ),
    ],
    credential_fields: SAP_FIELDS,
};

/// SAP ECC through SAP Gateway OData V2 services (see `connectors::sap`).
pub static SAP_ECC: System = System {
    key: "sap_ecc",
    name: "SAP ECC",
    vendor: "SAP",
    category: SystemCategory::Erp,
    tier: 3,
    deployments: &[Deployment::OnPremises],
    entities: &[
        EntityType::Location,
        EntityType::Asset,
        EntityType::WorkOrder,
        EntityType::Part,
        EntityType::PurchaseOrder,
        EntityType::Vendor,
    ],
    writes: &[],
    credential_fields: &[
        SAP_FIELDS[0],
        SAP_FIELDS[1],
        SAP_FIELDS[2],
        SAP_FIELDS[3],
        SAP_FIELDS[4],
        SAP_FIELDS[5],
        SAP_FIELDS[6],
        SAP_FIELDS[7],
        CredentialField {
            name: "services",
            label: "Gateway services per entity (JSON; see the docs for the defaults)",
            secret: false,
            required: false,
            kind: FieldKind::Object,
        },
    ],
};

/// Every system with a working connector.
pub static SYSTEMS: &[&System] = &[&DEMO, &MAINTAINX, &IBM_MAXIMO, &SAP_S4HANA, &SAP_ECC];

pub fn find(key: &str) -> Option<&'static System> {
    SYSTEMS.iter().copied().find(|s| s.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credit_costs_follow_tier_and_deployment() {
        assert_eq!(credit_cost(1, Deployment::Cloud), 1);
        assert_eq!(credit_cost(2, Deployment::Cloud), 2);
        assert_eq!(credit_cost(3, Deployment::Cloud), 4, "cloud SAP S/4HANA");
        assert_eq!(
            credit_cost(3, Deployment::OnPremises),
            8,
            "on-premises SAP ECC"
        );
        assert_eq!(DEMO.credit_cost(Deployment::OnPremises), 2);
    }

    #[test]
    fn credentials_are_checked_field_by_field() {
        assert!(DEMO.validate_credentials(&json!({"api_key": "k"})).is_ok());
        for (bad, field) in [
            (json!({}), "api_key"),
            (json!({"api_key": ""}), "api_key"),
            (json!({"api_key": 5}), "api_key"),
            (json!({"api_key": "k", "scale": -1}), "scale"),
            (json!({"api_key": "k", "scale": "100"}), "scale"),
            (json!({"api_key": "k", "scale": 1.5}), "scale"),
            (json!({"api_key": "k", "simulate": "explode"}), "simulate"),
            (json!({"api_key": "k", "password": "x"}), "password"),
        ] {
            let err = DEMO.validate_credentials(&bad).unwrap_err().to_string();
            assert!(err.contains(field), "{bad} -> {err}");
        }
        assert!(DEMO.validate_credentials(&json!([1])).is_err());
    }
}
