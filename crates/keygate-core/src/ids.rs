//! Typed identifiers. Every entity id is a UUIDv7 made by the service layer, wrapped in
//! its own type so a credential id can never be passed where a workspace id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an id read back from storage or a request.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A tenant.
    WorkspaceId
);
id_type!(
    /// A person (or host-app user) known to keygate.
    UserId
);
id_type!(
    /// A stored provider secret.
    CredentialId
);
id_type!(
    /// A data-encryption key; also written into every sealed record's header.
    DataKeyId
);
id_type!(
    /// A keygate API token.
    TokenId
);
id_type!(
    /// An audit event.
    AuditEventId
);
id_type!(
    /// A metered call.
    UsageEventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_order_by_creation() {
        let a = CredentialId::new();
        let b = CredentialId::new();
        assert!(a < b, "UUIDv7 ids sort by creation time");
        assert_eq!(a.to_string().parse::<CredentialId>().ok(), Some(a));
        assert!("not-a-uuid".parse::<CredentialId>().is_err());
    }
}
