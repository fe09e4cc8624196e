//! `silver`: the silver-processor stage binary (bronze.data.cleaned → silver.data.processed).

use silver::stage::{Silver, SilverRules};

fn main() {
    runtime::run::<Silver, SilverRules>(
        "silver-processor: casts, validates, deduplicates and scores bronze rows \
         (bronze.data.cleaned -> silver.data.processed)",
        |rules| Ok(Silver::new(rules)),
    );
}
