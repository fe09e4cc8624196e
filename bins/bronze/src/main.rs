//! `bronze`: the bronze-processor stage binary (connector.data.raw → bronze.data.cleaned).

use bronze::stage::{Bronze, BronzeRules};

fn main() {
    runtime::run::<Bronze, BronzeRules>(
        "bronze-processor: parses raw DSP report rows per dsp_type onto one common row shape, \
         drops rows pulled twice, checks completeness and freshness \
         (connector.data.raw -> bronze.data.cleaned)",
        |rules| Ok(Bronze::new(rules)),
    );
}
