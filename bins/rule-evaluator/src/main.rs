//! `rule-evaluator`: the rule-evaluator stage binary (gold.data.ready + config.changes →
//! rules.alerts.triggered, state in PostgreSQL).

use rule_evaluator::stage::{RuleArgs, RuleEvaluator};

fn main() {
    runtime::run::<RuleEvaluator, RuleArgs>(
        "rule-evaluator: each org's rules over gold aggregates; alerts fire once, repeat \
         after their cooldown and resolve when the condition clears (gold.data.ready + \
         config.changes -> rules.alerts.triggered)",
        |args| Ok(RuleEvaluator::from_args(args)),
    );
}
