//! A reference parser of `text/event-stream` (WHATWG HTML, "Server-sent
//! events", §9.2.6 "Interpreting an event stream"), to read the encoder's
//! output back as a browser would.

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
    let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut parsed = Parsed::default();
    let (mut data, mut kind, mut id) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            parsed.last_event_id.clone_from(&id);
            if data.is_empty() {
                kind.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            parsed.events.push(Dispatched {
                kind: if kind.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut kind)
                },
                data: std::mem::take(&mut data),
                last_event_id: id.clone(),
            });
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                parsed.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }
    parsed
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
