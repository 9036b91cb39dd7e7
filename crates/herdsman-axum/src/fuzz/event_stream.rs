//! The encoder's output read back as a client reads it: through
//! herdsman-client's event-stream parser (WHATWG HTML, "Server-sent
//! events", §9.2.6, proptested there against a literal reading of the
//! rules), unbounded, in the shape the property checks compare.

use herdsman_client::event_stream::Parser;

/// One dispatched event, as `EventSource` hands it to listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The event type (`message` when none was named).
    pub kind: String,
    /// The data, lines joined with LF.
    pub data: String,
    /// The last event ID when it was dispatched.
    pub last_event_id: String,
}

/// What a stream tells a client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The events dispatched, in order.
    pub events: Vec<Dispatched>,
    /// The last event ID at the end.
    pub last_event_id: String,
    /// The last reconnection time set, in milliseconds.
    pub retry: Option<u64>,
}

/// Parses a whole stream; a last line without its end of line is not
/// processed, as the rules say.
pub fn parse(stream: &str) -> Parsed {
    let mut parser = Parser::new()
        .with_max_line(usize::MAX)
        .with_max_event(usize::MAX);
    let events = parser
        .feed(stream.as_bytes())
        .expect("an unbounded parser never fails");
    Parsed {
        events: events
            .into_iter()
            .map(|event| Dispatched {
                kind: event.event_type().to_owned(),
                last_event_id: event.last_event_id().to_owned(),
                data: event.into_data(),
            })
            .collect(),
        last_event_id: parser.last_event_id().to_owned(),
        retry: parser
            .retry()
            .map(|retry| u64::try_from(retry.as_millis()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_parser_reads_the_specifications_examples() {
        let parsed = parse("data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(parsed.events[0].data, "YHOO\n+2\n10");
        let parsed = parse(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
        let data: Vec<&str> = parsed.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["first event", "second event"]);
        assert_eq!(parsed.events[0].last_event_id, "1");
        assert_eq!(parsed.events[1].last_event_id, "");
        let parsed = parse("data\n\ndata\ndata\n\ndata:");
        let data: Vec<&str> = parsed.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["", "\n"]);
        let parsed = parse("event: add\r\ndata: x\rretry: 250\r\n\r\n");
        assert_eq!(parsed.events[0].kind, "add");
        assert_eq!(parsed.retry, Some(250));
    }
}
