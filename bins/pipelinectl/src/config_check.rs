//! Validation of configuration changes before `pipelinectl config` publishes them: the same
//! rule checks the rule evaluator applies (`rule_evaluator::rules::Rule::from_definition`),
//! plus the plausibility checks of bookings, channels and org settings. Errors never echo a
//! channel target (PII).

use config_log::Change;
use envelope::payload::{
    common::Booking,
    config::{ChannelDefinition, ChannelKind, ConfigItem, ConfigOp, OrgSettings, RuleDefinition},
};
use rule_evaluator::rules::{Rule, RuleError};

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    /// Org ids are positive.
    #[error("org id must be positive, got {0}")]
    Org(i64),
    /// An id is empty or would break the key.
    #[error("{what} {value:?} must be non-empty, without '/' or whitespace")]
    Id { what: &'static str, value: String },
    /// A negative amount or count.
    #[error("{what} must not be negative, got {value}")]
    Negative { what: &'static str, value: String },
    /// The flight ends before it starts.
    #[error("flight end {end} is before flight start {start}")]
    Flight { start: String, end: String },
    /// Not an ISO 4217 code.
    #[error("currency {0:?} is not an ISO 4217 code (three capital letters, e.g. EUR)")]
    Currency(String),
    /// A rule the evaluator would refuse.
    #[error("rule {id}: {cause}")]
    Rule { id: String, cause: RuleError },
    /// A rule without a name.
    #[error("rule {0}: the name must not be empty")]
    RuleName(String),
    /// A channel target that does not fit its kind (the target itself is not shown: PII).
    #[error("channel {id}: a {kind} target must be {expected}")]
    Target {
        id: String,
        kind: ChannelKind,
        expected: &'static str,
    },
    /// A secret reference that is not a name.
    #[error(
        "channel {id}: --secret-ref must name a secret (1 to 64 of letters, digits, '.', '_', \
         '-'), never hold its value"
    )]
    SecretRef { id: String },
    /// A rate limit below 1.
    #[error("channel {id}: the rate limit must be at least 1 per minute, got {limit}")]
    RateLimit { id: String, limit: i32 },
    /// Not an IANA zone name.
    #[error("timezone {0:?} is not an IANA zone name such as UTC or Europe/Berlin")]
    Timezone(String),
    /// A freshness bound out of range.
    #[error("freshness must be 1 to 3650 days, got {0}")]
    Freshness(i32),
}

/// Check `change` as the consumers will read it. Deletes only need a valid org and key.
pub(crate) fn check(change: &Change) -> Result<(), Invalid> {
    if change.org_id <= 0 {
        return Err(Invalid::Org(change.org_id));
    }
    match &change.item {
        ConfigItem::Booking(b) => booking_ids(b)?,
        ConfigItem::RuleDefinition(r) => id("rule id", &r.rule_id)?,
        ConfigItem::ChannelDefinition(c) => id("channel id", &c.channel_id)?,
        ConfigItem::OrgSettings(_) => {}
    }
    if change.op == ConfigOp::Delete {
        return Ok(());
    }
    match &change.item {
        ConfigItem::Booking(b) => booking(b),
        ConfigItem::RuleDefinition(r) => rule(r),
        ConfigItem::ChannelDefinition(c) => channel(c),
        ConfigItem::OrgSettings(o) => org(o),
    }
}

fn id(what: &'static str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_whitespace) {
        return Err(Invalid::Id {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn booking_ids(b: &Booking) -> Result<(), Invalid> {
    id("campaign id", &b.campaign_id)?;
    if let Some(li) = &b.line_item_id {
        id("line item id", li)?;
    }
    Ok(())
}

fn currency(code: &str) -> Result<(), Invalid> {
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(Invalid::Currency(code.to_owned()))
    }
}

fn booking(b: &Booking) -> Result<(), Invalid> {
    if b.booked_impressions < 0 {
        return Err(Invalid::Negative {
            what: "booked impressions",
            value: b.booked_impressions.to_string(),
        });
    }
    for (what, v) in [
        ("booked budget", b.booked_budget),
        ("booking revenue", b.booking_revenue),
    ] {
        if v.value().is_sign_negative() && !v.value().is_zero() {
            return Err(Invalid::Negative {
                what,
                value: v.to_string(),
            });
        }
    }
    if b.flight_end < b.flight_start {
        return Err(Invalid::Flight {
            start: b.flight_start.to_string(),
            end: b.flight_end.to_string(),
        });
    }
    if let Some(c) = &b.currency {
        currency(c)?;
    }
    Ok(())
}

fn rule(r: &RuleDefinition) -> Result<(), Invalid> {
    if r.name.trim().is_empty() {
        return Err(Invalid::RuleName(r.rule_id.clone()));
    }
    Rule::from_definition(r).map_err(|cause| Invalid::Rule {
        id: r.rule_id.clone(),
        cause,
    })?;
    Ok(())
}

fn channel(c: &ChannelDefinition) -> Result<(), Invalid> {
    let target = c.target.trim();
    let plausible = match c.kind {
        ChannelKind::Webhook | ChannelKind::Slack => http_url(target),
        ChannelKind::Email => email(target),
        ChannelKind::InApp => !target.is_empty() && !target.chars().any(char::is_whitespace),
    };
    if !plausible || target != c.target {
        return Err(Invalid::Target {
            id: c.channel_id.clone(),
            kind: c.kind,
            expected: match c.kind {
                ChannelKind::Webhook | ChannelKind::Slack => "an http:// or https:// URL",
                ChannelKind::Email => "an e-mail address (name@domain)",
                ChannelKind::InApp => "an audience name without whitespace, e.g. ops",
            },
        });
    }
    if let Some(s) = &c.secret_ref {
        let name = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'));
        if !name {
            return Err(Invalid::SecretRef {
                id: c.channel_id.clone(),
            });
        }
    }
    if let Some(limit) = c.rate_limit_per_minute
        && limit < 1
    {
        return Err(Invalid::RateLimit {
            id: c.channel_id.clone(),
            limit,
        });
    }
    Ok(())
}

fn http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn org(o: &OrgSettings) -> Result<(), Invalid> {
    let tz = o.timezone.as_str();
    let zone_chars = tz
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    let plausible = matches!(tz, "UTC" | "GMT")
        || (zone_chars
            && tz.contains('/')
            && tz.starts_with(|c: char| c.is_ascii_uppercase())
            && !tz.ends_with('/'));
    if !plausible {
        return Err(Invalid::Timezone(o.timezone.clone()));
    }
    currency(&o.currency)?;
    if !(1..=3650).contains(&o.freshness_days) {
        return Err(Invalid::Freshness(o.freshness_days));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use envelope::{
        Date, Money,
        payload::common::{Comparator, Metric, Severity},
    };

    use super::*;

    fn change(org_id: i64, item: ConfigItem) -> Change {
        Change {
            org_id,
            op: ConfigOp::Upsert,
            item,
            reason: None,
        }
    }

    fn booking_item(start: (i32, u32, u32), end: (i32, u32, u32), budget: &str) -> ConfigItem {
        ConfigItem::Booking(Booking {
            campaign_id: "c1".into(),
            line_item_id: None,
            booked_impressions: 10,
            booked_budget: budget.parse::<Money>().expect("money"),
            booking_revenue: Money::ZERO,
            flight_start: Date::ymd(start.0, start.1, start.2).expect("date"),
            flight_end: Date::ymd(end.0, end.1, end.2).expect("date"),
            currency: Some("EUR".into()),
        })
    }

    fn rule_item(comparator: Comparator, window: &str) -> ConfigItem {
        ConfigItem::RuleDefinition(RuleDefinition {
            rule_id: "r1".into(),
            name: "r".into(),
            metric: Metric::PacingRate,
            comparator,
            threshold: "70".parse().expect("ratio"),
            window: window.into(),
            severity: Severity::Warning,
            channels: vec![],
            cooldown_seconds: 60,
            enabled: true,
            campaign_id: None,
        })
    }

    fn channel_item(kind: ChannelKind, target: &str, secret: Option<&str>) -> ConfigItem {
        ConfigItem::ChannelDefinition(ChannelDefinition {
            channel_id: "ch".into(),
            kind,
            target: target.into(),
            secret_ref: secret.map(Into::into),
            rate_limit_per_minute: None,
            enabled: true,
        })
    }

    #[test]
    fn bookings_need_a_positive_org_an_ordered_flight_and_no_negative_amounts() {
        let ok = booking_item((2025, 1, 1), (2025, 1, 1), "0");
        assert_eq!(check(&change(1, ok.clone())), Ok(()));
        assert_eq!(check(&change(0, ok)), Err(Invalid::Org(0)));
        assert!(matches!(
            check(&change(1, booking_item((2025, 1, 2), (2025, 1, 1), "1"))),
            Err(Invalid::Flight { .. })
        ));
        assert!(matches!(
            check(&change(
                1,
                booking_item((2025, 1, 1), (2025, 1, 2), "-0.01")
            )),
            Err(Invalid::Negative { .. })
        ));
    }

    #[test]
    fn rules_pass_the_evaluators_own_checks() {
        assert_eq!(
            check(&change(1, rule_item(Comparator::Lt, "daily"))),
            Ok(())
        );
        assert!(matches!(
            check(&change(1, rule_item(Comparator::DropPct, "daily"))),
            Err(Invalid::Rule { .. })
        ));
        assert!(matches!(
            check(&change(1, rule_item(Comparator::Lt, "hourly"))),
            Err(Invalid::Rule { .. })
        ));
    }

    #[test]
    fn channel_targets_fit_their_kind_and_secrets_are_names() {
        let ok = [
            channel_item(
                ChannelKind::Webhook,
                "https://hooks.example.com/x",
                Some("hook-token"),
            ),
            channel_item(ChannelKind::Slack, "http://127.0.0.1:9/s", None),
            channel_item(ChannelKind::Email, "ops@example.com", None),
            channel_item(ChannelKind::InApp, "ops", None),
        ];
        for item in ok {
            assert_eq!(check(&change(1, item)), Ok(()));
        }
        let bad = [
            channel_item(ChannelKind::Webhook, "ftp://x", None),
            channel_item(ChannelKind::Slack, "https://", None),
            channel_item(ChannelKind::Email, "ops.example.com", None),
            channel_item(ChannelKind::InApp, "", None),
        ];
        for item in bad {
            let err = check(&change(1, item)).expect_err("refused");
            assert!(matches!(err, Invalid::Target { .. }), "{err}");
            assert!(!err.to_string().contains("example"), "no target in {err}");
        }
        let secret = channel_item(
            ChannelKind::Webhook,
            "https://h.example/x",
            Some("Bearer abc"),
        );
        assert!(matches!(
            check(&change(1, secret)),
            Err(Invalid::SecretRef { .. })
        ));
    }

    #[test]
    fn org_settings_need_a_zone_a_currency_and_a_freshness_bound() {
        let org = |tz: &str, cur: &str, days| {
            change(
                1,
                ConfigItem::OrgSettings(OrgSettings {
                    name: None,
                    timezone: tz.into(),
                    currency: cur.into(),
                    freshness_days: days,
                }),
            )
        };
        assert_eq!(check(&org("Europe/Berlin", "EUR", 7)), Ok(()));
        assert_eq!(check(&org("UTC", "USD", 1)), Ok(()));
        assert!(matches!(
            check(&org("berlin", "EUR", 7)),
            Err(Invalid::Timezone(_))
        ));
        assert!(matches!(
            check(&org("UTC", "euro", 7)),
            Err(Invalid::Currency(_))
        ));
        assert!(matches!(
            check(&org("UTC", "EUR", 0)),
            Err(Invalid::Freshness(0))
        ));
    }
}
