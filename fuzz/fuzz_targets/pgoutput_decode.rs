//! Arbitrary bytes into the pgoutput decoder: the first byte picks the protocol version and
//! parallel streaming, the rest is a sequence of length-prefixed messages decoded by one decoder,
//! so the streamed-block state is exercised too. Any panic is a bug.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use outboxd::pg::pgoutput::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(u32::from(first % 4) + 1).with_parallel_streaming(first & 0x80 != 0);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (message, next) = tail.split_at(len);
        let _ = decoder.decode(Bytes::copy_from_slice(message));
        rest = next;
    }
});
