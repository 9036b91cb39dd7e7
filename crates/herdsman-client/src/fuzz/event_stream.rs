//! [`Parser`] against random bytes, cut anywhere, under any bounds.
//!
//! Properties: no panic; what the parser holds between chunks stays within
//! its bounds, and so does each event; with bounds the stream cannot
//! reach, the events, the last event id and the reconnection time are
//! those of [`reference`] (the standard's algorithm read literally, over
//! the whole stream), wherever the chunks are cut.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::event_stream::{Event, Parser};

/// A stream, where to cut it, and the parser's bounds.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// The bytes.
    pub stream: Vec<u8>,
    /// Cut points (taken modulo the stream's length + 1).
    pub cuts: Vec<u16>,
    /// The longest line.
    pub max_line: u8,
    /// The largest event.
    pub max_event: u8,
}

/// The algorithm of WHATWG HTML §9.2.6 read literally, over the whole
/// stream at once: its events, last event id and reconnection time.
pub fn reference(stream: &[u8]) -> (Vec<Event>, String, Option<Duration>) {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let (mut events, mut data, mut kind) = (Vec::new(), String::new(), String::new());
    let (mut buffer, mut last, mut retry) = (String::new(), String::new(), None);
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = &rest[end..];
        rest = rest.strip_prefix("\r\n").unwrap_or(&rest[1..]);
        if line.is_empty() {
            last.clone_from(&buffer);
            if data.is_empty() {
                kind.clear();
                continue;
            }
            data.pop();
            let name = if kind.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut kind)
            };
            events.push(Event::new(name, std::mem::take(&mut data), last.clone()));
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                retry = Some(Duration::from_millis(value.parse().unwrap_or(u64::MAX)));
            }
            _ => {}
        }
    }
    (events, last, retry)
}

/// `stream` cut at `cuts`.
pub fn split<'s>(stream: &'s [u8], cuts: &[u16]) -> Vec<&'s [u8]> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(&stream[start..cut]);
        start = cut;
    }
    chunks.push(&stream[start..]);
    chunks
}

/// Checks the properties for `input`; panics if one fails.
pub fn check(input: &Input) {
    let chunks = split(&input.stream, &input.cuts);
    let (max_line, max_event) = (usize::from(input.max_line), usize::from(input.max_event));
    let mut bounded = Parser::new()
        .with_max_line(max_line)
        .with_max_event(max_event);
    let mut events = Vec::new();
    for chunk in &chunks {
        if bounded.feed_into(chunk, &mut events).is_err() {
            break;
        }
        let (line, event) = bounded.buffered();
        assert!(line <= max_line + 3, "a line of {line} bytes held");
        assert!(event <= max_event, "an event of {event} bytes held");
    }
    for e in &events {
        assert!(e.data().len() <= max_event, "{e:?}");
    }

    let mut unbounded = Parser::new();
    let mut events = Vec::new();
    for chunk in &chunks {
        unbounded
            .feed_into(chunk, &mut events)
            .expect("bounds above the stream's length");
    }
    let (expected, last, retry) = reference(&input.stream);
    assert_eq!(events, expected);
    assert_eq!(unbounded.last_event_id(), last);
    assert_eq!(unbounded.retry(), retry);
}

/// Builds an [`Input`] from `data` and checks it.
pub fn run(data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(&input);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_parser_holds_its_bounds_and_reads_as_the_reference_for_arbitrary_input(
            data in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            run(&data);
        }
    }
}
