//! Shared domain vocabulary of `common/entity.avsc`: DSPs, entity references, actors,
//! bookings and the enums rules speak in.

use serde::{Deserialize, Serialize};

use crate::values::{Date, Money};

macro_rules! avro_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $symbol:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $symbol)] $variant,)*
        }

        impl $name {
            /// Every symbol, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The Avro symbol.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $symbol,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!(concat!("unknown ", stringify!($name), " {:?}"), s))
            }
        }
    };
}
pub(crate) use avro_enum;

avro_enum!(
    /// The report sources adpipe understands.
    DspType {
        /// Google Display & Video 360.
        Dv360 = "dv360",
        /// The Trade Desk.
        Ttd = "ttd",
        /// Meta Marketing API.
        Meta = "meta",
        /// CRM / booking sheets.
        Crm = "crm",
    }
);

avro_enum!(
    /// Kinds of things events refer to.
    EntityType {
        /// A client organisation.
        Organization = "organization",
        /// An advertiser account.
        Advertiser = "advertiser",
        /// A campaign.
        Campaign = "campaign",
        /// A DV360 insertion order.
        InsertionOrder = "insertion_order",
        /// A line item.
        LineItem = "line_item",
        /// A TTD ad group or Meta ad set.
        AdGroup = "ad_group",
        /// A booking.
        Booking = "booking",
        /// An alert rule.
        Rule = "rule",
        /// A notification channel.
        Channel = "channel",
        /// An alert.
        Alert = "alert",
        /// A pipeline stage.
        Pipeline = "pipeline",
        /// A report pull.
        Report = "report",
        /// A user.
        User = "user",
        /// Anything else.
        Other = "other",
    }
);

avro_enum!(
    /// Who performed an action.
    ActorType {
        /// A person.
        User = "user",
        /// An adpipe service.
        Service = "service",
        /// The platform itself (schedules, retention).
        System = "system",
    }
);

avro_enum!(
    /// What a report row describes.
    RowKind {
        /// Delivery: impressions, clicks, spend.
        Delivery = "delivery",
        /// A booking (CRM sheets).
        Booking = "booking",
    }
);

avro_enum!(
    /// How urgent an alert is.
    Severity {
        /// For information.
        Info = "info",
        /// Needs attention.
        Warning = "warning",
        /// Needs action now.
        Critical = "critical",
    }
);

avro_enum!(
    /// Metrics rules can test.
    Metric {
        /// Pacing rate, percent.
        PacingRate = "pacing_rate",
        /// Margin, percent.
        MarginPct = "margin_pct",
        /// Spend.
        Spend = "spend",
        /// Projected flight spend.
        ProjectedSpend = "projected_spend",
        /// Impressions.
        Impressions = "impressions",
        /// Clicks.
        Clicks = "clicks",
        /// Conversions.
        Conversions = "conversions",
        /// Cost per mille.
        Cpm = "cpm",
        /// Click-through rate, percent.
        Ctr = "ctr",
        /// Conversion rate, percent.
        Cvr = "cvr",
        /// Mean data-quality score.
        QualityScore = "quality_score",
    }
);

avro_enum!(
    /// How a rule compares a metric with its threshold.
    Comparator {
        /// Below.
        Lt = "lt",
        /// At or below.
        Lte = "lte",
        /// Above.
        Gt = "gt",
        /// At or above.
        Gte = "gte",
        /// Equal.
        Eq = "eq",
        /// Not equal.
        Ne = "ne",
        /// Above the trailing average by more than threshold percent.
        AboveTrailingAvgPct = "above_trailing_avg_pct",
        /// Below the trailing average by more than threshold percent.
        DropPct = "drop_pct",
    }
);

/// A reference to a domain entity of one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct EntityRef {
    /// Kind of entity.
    pub entity_type: EntityType,
    /// Its id within the org.
    pub entity_id: String,
    /// Display name when known.
    pub name: Option<String>,
}

/// The user or service behind a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Actor {
    /// Kind of actor.
    pub actor_type: ActorType,
    /// Stable opaque id (user id or service name), never an e-mail address.
    pub actor_id: String,
    /// Human name: PII, never logged.
    pub display_name: Option<String>,
}

/// What was sold for a campaign or line item: the basis of pacing and margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Booking {
    /// Campaign.
    pub campaign_id: String,
    /// Line item; `None` = whole campaign.
    pub line_item_id: Option<String>,
    /// Impressions sold.
    pub booked_impressions: i64,
    /// Media budget.
    pub booked_budget: Money,
    /// What the client pays.
    pub booking_revenue: Money,
    /// First delivery day (inclusive).
    pub flight_start: Date,
    /// Last delivery day (inclusive).
    pub flight_end: Date,
    /// ISO 4217 code; `None` = org currency.
    pub currency: Option<String>,
}
