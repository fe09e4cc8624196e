//! Test kit for stages: run a [`Processor`] on in-memory events, without Kafka, through the
//! real codec (encode, decode, process, encode outputs).

use envelope::{Codec, Event, Payload, Source};

use crate::processor::{Input, OutRecord, Outputs, ProcessError, Processor};

/// The result of processing one event in memory.
#[derive(Debug)]
pub struct Checked {
    /// Encoded output records, as the runtime would produce them.
    pub records: Vec<OutRecord>,
}

impl Checked {
    /// Decode the outputs of `P`'s topic.
    pub fn events<P: Payload>(&self, codec: &Codec) -> Vec<Event<P>> {
        self.records
            .iter()
            .filter(|r| r.topic == P::TOPIC.name())
            .map(|r| {
                codec
                    .decode_known::<P>(&r.value)
                    .expect("outputs decode with their own schema")
            })
            .collect()
    }
}

/// Encode `event`, decode it as the stage's input, process it, and return the outputs.
pub async fn check<S, P>(stage: &S, event: &Event<P>) -> Result<Checked, ProcessError>
where
    S: Processor<Input = Event<P>>,
    P: Payload,
{
    let codec = Codec::offline();
    let bytes = codec.encode(event).expect("test events encode");
    let input = <Event<P> as Input>::decode(&codec, P::TOPIC, &bytes).await?;
    let source = Source {
        service: S::GROUP.name().to_owned(),
        instance: "test".to_owned(),
    };
    let meta = input.metadata.clone();
    let mut out = Outputs::new(&codec, &meta, &source);
    stage.process(input, &mut out).await?;
    Ok(Checked {
        records: out.into_records(),
    })
}
