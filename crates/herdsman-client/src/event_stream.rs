//! An incremental parser of `text/event-stream`, the Server-Sent Events
//! format, exactly as [WHATWG HTML §9.2.6] interprets it.
//!
//! A [`Parser`] is fed the body's byte chunks as they arrive and hands out
//! each [`Event`] once its blank line has been read, so where the chunks
//! split the stream (inside a line, inside a UTF-8 character, between the
//! CR and the LF of a CRLF) never changes the events. What it does, rule by
//! rule:
//!
//! - the stream is UTF-8; invalid sequences become U+FFFD, and one leading
//!   byte order mark is dropped;
//! - lines end with CRLF, LF or CR;
//! - a line starting with `:` is a comment (a keep-alive) and is ignored;
//! - `field: value` (one space after the colon is dropped; a line without
//!   a colon is a field with an empty value): `event` sets the event type,
//!   `data` appends a line of data (the lines are joined with LF), `id`
//!   sets the last event id (unless its value contains NUL, when the field
//!   is ignored; an empty value clears it), `retry` sets the reconnection
//!   time in milliseconds (only if the value is all ASCII digits); other
//!   fields are ignored;
//! - a blank line dispatches the event, unless it has no data (then only
//!   the event type is reset); the last event id carries over to later
//!   events;
//! - at the end of the stream an event without its blank line is
//!   discarded: call nothing, just drop the parser (or see
//!   [`Parser::pending`]).
//!
//! Memory stays bounded whatever the server sends: a line longer than
//! [`Parser::with_max_line`] or an event (data and type) larger than
//! [`Parser::with_max_event`] is a [`ParseError`], never growth.
//!
//! # Examples
//!
//! ```
//! use herdsman_client::event_stream::Parser;
//!
//! let mut parser = Parser::new();
//! let mut events = parser.feed(b"event: add\r\ndata: 73").unwrap();
//! assert!(events.is_empty(), "the event is not finished");
//! events = parser.feed(b"857293\r\nid: 7\r\n\r\n").unwrap();
//! assert_eq!(events[0].event_type(), "add");
//! assert_eq!(events[0].data(), "73857293");
//! assert_eq!(events[0].last_event_id(), "7");
//! assert_eq!(parser.last_event_id(), "7");
//! ```
//!
//! [WHATWG HTML §9.2.6]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::{fmt, time::Duration};

/// The default [`Parser::with_max_line`]: 256 KiB.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024;

/// The default [`Parser::with_max_event`]: 1 MiB.
pub const DEFAULT_MAX_EVENT: usize = 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    event_type: String,
    data: String,
    last_event_id: String,
}

impl Event {
    /// An event of type `event_type` carrying `data`, with `last_event_id`
    /// (empty for none): what a parser would dispatch.
    pub fn new(
        event_type: impl Into<String>,
        data: impl Into<String>,
        last_event_id: impl Into<String>,
    ) -> Self {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: last_event_id.into(),
        }
    }

    /// The event type: the last `event:` field's value, `message` if there
    /// was none (or it was empty).
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The data: the `data:` fields' values joined with LF.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The data, owned.
    pub fn into_data(self) -> String {
        self.data
    }

    /// The last event id when the event was dispatched (set by this
    /// event's `id:` field or an earlier one), empty if none.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }
}

/// Why a [`Parser`] stopped: the stream broke one of its bounds. The
/// parser refuses any later chunk with the same error; drop the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: Bound,
    limit: usize,
}

/// Which bound a stream broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bound {
    /// A line was longer than [`Parser::with_max_line`].
    Line,
    /// An event's data and type were larger than
    /// [`Parser::with_max_event`].
    Event,
}

impl ParseError {
    /// The bound broken.
    pub fn bound(&self) -> Bound {
        self.kind
    }

    /// Its limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Bound::Line => "line",
            Bound::Event => "event",
        };
        write!(f, "event stream {what} longer than {} bytes", self.limit)
    }
}

impl std::error::Error for ParseError {}

/// An incremental `text/event-stream` parser ([module docs](self)).
#[derive(Debug, Clone)]
pub struct Parser {
    max_line: usize,
    max_event: usize,
    /// The bytes of the line being read (its end not seen yet).
    line: Vec<u8>,
    /// Whether the first bytes of the stream were checked for a BOM.
    started: bool,
    /// The last byte seen was a CR: an LF right after it ends no line.
    after_cr: bool,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<Duration>,
    failed: Option<ParseError>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser with the default bounds ([`DEFAULT_MAX_LINE`],
    /// [`DEFAULT_MAX_EVENT`]).
    pub fn new() -> Self {
        Parser {
            max_line: DEFAULT_MAX_LINE,
            max_event: DEFAULT_MAX_EVENT,
            line: Vec::new(),
            started: false,
            after_cr: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: String::new(),
            last_event_id: String::new(),
            retry: None,
            failed: None,
        }
    }

    /// The longest line accepted, in bytes (without its line end).
    pub fn with_max_line(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// The largest event accepted: the bytes of its data (with the LFs
    /// joining its lines) and its type.
    pub fn with_max_event(mut self, bytes: usize) -> Self {
        self.max_event = bytes;
        self
    }

    /// A fresh parser with this one's bounds, for a new connection. The
    /// last event id and reconnection time are kept: they belong to the
    /// event source, not to one connection.
    pub fn reconnected(&self) -> Self {
        Parser {
            last_event_id: self.last_event_id.clone(),
            id_buffer: self.last_event_id.clone(),
            retry: self.retry,
            ..Parser::new()
                .with_max_line(self.max_line)
                .with_max_event(self.max_event)
        }
    }

    /// Starts from last event id `id` (empty for none): for a connection
    /// that resumed at a version learnt elsewhere (a polling answer, say).
    pub fn with_last_event_id(mut self, id: &str) -> Self {
        id.clone_into(&mut self.last_event_id);
        id.clone_into(&mut self.id_buffer);
        self
    }

    /// The last event id of the stream: the one to send as `Last-Event-ID`
    /// when reconnecting (empty: send none). Like a browser's, it moves
    /// only when an event block ends, even one without data.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for (`retry:`), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Whether the stream ended inside an event (or a line): what
    /// dropping the parser discards.
    pub fn pending(&self) -> bool {
        !self.line.is_empty() || !self.data.is_empty() || !self.event_type.is_empty()
    }

    /// The bytes held now: of the line being read, and of the event being
    /// built (data and type).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize) {
        (self.line.len(), self.data.len() + self.event_type.len())
    }

    /// Reads `chunk`, returning the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, ParseError> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events)?;
        Ok(events)
    }

    /// Reads `chunk`, pushing the events it completed onto `events`.
    ///
    /// On an error the events completed before it are in `events` (and
    /// [`last_event_id`](Self::last_event_id) is theirs), so a client
    /// resumes right after them.
    pub fn feed_into(
        &mut self,
        mut chunk: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ParseError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.extend_line(chunk)?;
                break;
            };
            self.extend_line(&chunk[..end])?;
            self.after_cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            let line = std::mem::take(&mut self.line);
            let result = self.process_line(&line, events);
            // Keep the line's allocation for the next one.
            self.line = line;
            self.line.clear();
            result?;
        }
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        // Saturating: a bound of `usize::MAX` means "unbounded".
        if self.line.len() + bytes.len() > self.max_line.saturating_add(self.bom_allowance()) {
            return Err(self.fail(Bound::Line, self.max_line));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// The first line may carry a BOM on top of the line bound.
    fn bom_allowance(&self) -> usize {
        if self.started {
            0
        } else {
            BOM.len()
        }
    }

    fn fail(&mut self, kind: Bound, limit: usize) -> ParseError {
        let err = ParseError { kind, limit };
        self.failed = Some(err.clone());
        err
    }

    fn process_line(&mut self, mut line: &[u8], events: &mut Vec<Event>) -> Result<(), ParseError> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
            if line.len() > self.max_line {
                return Err(self.fail(Bound::Line, self.max_line));
            }
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
                self.check_event_size()?;
            }
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.check_event_size()?;
            }
            b"id" if !value.contains(&0) => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits past u64's range are a time no one waits for.
                let ms = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
                self.retry = Some(Duration::from_millis(ms));
            }
            _ => {}
        }
        Ok(())
    }

    fn check_event_size(&mut self) -> Result<(), ParseError> {
        if self.data.len() + self.event_type.len() > self.max_event {
            return Err(self.fail(Bound::Event, self.max_event));
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        let event_type = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        events.push(Event {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::__fuzz::event_stream::{reference, split};
    use proptest::prelude::*;

    fn parse(stream: &[u8]) -> Vec<Event> {
        Parser::new().feed(stream).unwrap()
    }

    fn ev(event_type: &str, data: &str, id: &str) -> Event {
        Event::new(event_type, data, id)
    }

    // The examples of WHATWG HTML §9.2.6, "Interpreting an event stream".

    #[test]
    fn the_standards_stock_example_is_one_event_with_three_data_lines() {
        let stream = b"data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(parse(stream), [ev("message", "YHOO\n+2\n10", "")]);
    }

    #[test]
    fn the_standards_four_blocks_example_sets_and_clears_the_id() {
        let stream =
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let mut parser = Parser::new();
        let events = parser.feed(stream).unwrap();
        assert_eq!(
            events,
            [
                ev("message", "first event", "1"),
                ev("message", "second event", ""),
                ev("message", " third event", ""),
            ]
        );
        assert_eq!(parser.last_event_id(), "");
    }

    #[test]
    fn the_standards_empty_data_example_fires_two_events_and_discards_the_last_block() {
        let mut parser = Parser::new();
        let events = parser.feed(b"data\n\ndata\ndata\n\ndata:").unwrap();
        assert_eq!(events, [ev("message", "", ""), ev("message", "\n", "")]);
        assert!(parser.pending(), "the last block waits for its blank line");
    }

    #[test]
    fn the_standards_space_example_gives_two_identical_events() {
        let events = parse(b"data:test\n\ndata: test\n\n");
        assert_eq!(
            events,
            [ev("message", "test", ""), ev("message", "test", "")]
        );
    }

    #[test]
    fn the_standards_first_example_gives_three_messages() {
        let stream = b"data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n";
        assert_eq!(
            parse(stream),
            [
                ev("message", "This is the first message.", ""),
                ev(
                    "message",
                    "This is the second message, it\nhas two lines.",
                    ""
                ),
                ev("message", "This is the third message.", ""),
            ]
        );
    }

    #[test]
    fn the_standards_event_type_example_names_each_event() {
        let stream = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
        assert_eq!(
            parse(stream),
            [
                ev("add", "73857293", ""),
                ev("remove", "2153", ""),
                ev("add", "113411", ""),
            ]
        );
    }

    #[test]
    fn an_unterminated_last_event_is_discarded_at_the_end_of_the_stream() {
        let mut parser = Parser::new();
        let events = parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n").unwrap();
        assert_eq!(events, [ev("message", "a", "1")]);
        assert_eq!(parser.last_event_id(), "1", "id 2 was never dispatched");
        assert!(parser.pending());
    }

    #[test]
    fn cr_lf_and_crlf_all_end_lines_even_split_across_chunks() {
        let mut parser = Parser::new();
        let mut events = parser.feed(b"data: a\rdata: b\r").unwrap();
        events.extend(parser.feed(b"\ndata: c\n\r").unwrap());
        events.extend(parser.feed(b"\n").unwrap());
        assert_eq!(events, [ev("message", "a\nb\nc", "")]);
        assert!(!parser.pending());
    }

    #[test]
    fn one_leading_bom_is_dropped_and_a_second_is_not() {
        assert_eq!(parse(b"\xEF\xBB\xBFdata: a\n\n"), [ev("message", "a", "")]);
        // The second BOM makes the field name `\u{FEFF}data`: ignored.
        assert_eq!(parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
        let mut parser = Parser::new();
        assert!(parser.feed(b"\xEF").unwrap().is_empty());
        assert!(parser.feed(b"\xBB").unwrap().is_empty());
        assert_eq!(
            parser.feed(b"\xBFdata: a\n\n").unwrap(),
            [ev("message", "a", "")]
        );
    }

    #[test]
    fn an_id_with_nul_is_ignored_and_an_empty_id_clears_it() {
        let mut parser = Parser::new();
        let events = parser
            .feed(b"id: 7\ndata: a\n\nid: 8\0\ndata: b\n\nid:\ndata: c\n\n")
            .unwrap();
        assert_eq!(
            events,
            [
                ev("message", "a", "7"),
                ev("message", "b", "7"),
                ev("message", "c", "")
            ]
        );
    }

    #[test]
    fn an_id_without_data_still_moves_the_last_event_id() {
        let mut parser = Parser::new();
        assert!(parser.feed(b"id: 9\n\n").unwrap().is_empty());
        assert_eq!(parser.last_event_id(), "9");
    }

    #[test]
    fn retry_takes_only_digits() {
        let mut parser = Parser::new();
        parser.feed(b"retry: 2500\n\n").unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(2500)));
        for bad in [
            &b"retry: 25s\n"[..],
            b"retry: -1\n",
            b"retry: 1.5\n",
            b"retry:\n",
            b"retry:  7\n",
        ] {
            parser.feed(bad).unwrap();
            assert_eq!(parser.retry(), Some(Duration::from_millis(2500)), "{bad:?}");
        }
        parser.feed(b"retry: 99999999999999999999999\n").unwrap();
        assert_eq!(parser.retry(), Some(Duration::from_millis(u64::MAX)));
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let events = parse(b": keep-alive\nfoo: bar\ndata: a\n:x\n\n");
        assert_eq!(events, [ev("message", "a", "")]);
    }

    #[test]
    fn an_empty_event_field_means_message_and_the_type_resets_after_each_block() {
        let events = parse(b"event: x\n\nevent:\ndata: a\n\ndata: b\n\n");
        assert_eq!(events, [ev("message", "a", ""), ev("message", "b", "")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let events = parse(b"data: a\xFFb\n\n");
        assert_eq!(events, [ev("message", "a\u{FFFD}b", "")]);
    }

    #[test]
    fn an_unbounded_parser_reads_lines_and_events_without_overflow() {
        let mut parser = Parser::new()
            .with_max_line(usize::MAX)
            .with_max_event(usize::MAX);
        let events = parser
            .feed("\u{feff}data: a\nretry: 7\n\n".as_bytes())
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data(), "a");
        assert_eq!(parser.retry(), Some(Duration::from_millis(7)));
    }

    #[test]
    fn a_long_line_is_an_error_and_the_parser_stays_failed() {
        let mut parser = Parser::new().with_max_line(8);
        let mut events = Vec::new();
        let err = parser
            .feed_into(b"data: 1\n\ndata: 123456789", &mut events)
            .unwrap_err();
        assert_eq!((err.bound(), err.limit()), (Bound::Line, 8));
        assert_eq!(events, [ev("message", "1", "")], "what came before is kept");
        assert_eq!(parser.feed(b"\n\n").unwrap_err(), err);
        assert_eq!(err.to_string(), "event stream line longer than 8 bytes");
    }

    #[test]
    fn a_large_event_is_an_error() {
        let mut parser = Parser::new().with_max_event(10);
        let err = parser.feed(b"data: 12345\ndata: 12345\n").unwrap_err();
        assert_eq!((err.bound(), err.limit()), (Bound::Event, 10));
    }

    #[test]
    fn a_parser_resumed_at_an_id_gives_it_to_events_without_their_own() {
        let mut parser = Parser::new().with_last_event_id("7");
        assert_eq!(parser.last_event_id(), "7");
        assert_eq!(
            parser.feed(b"data: a\n\n").unwrap(),
            [ev("message", "a", "7")]
        );
    }

    #[test]
    fn a_reconnected_parser_keeps_the_id_and_the_retry_only() {
        let mut parser = Parser::new().with_max_line(100);
        parser
            .feed(b"retry: 10\nid: 3\ndata: a\n\ndata: half")
            .unwrap();
        let mut next = parser.reconnected();
        assert!(!next.pending());
        assert_eq!(next.last_event_id(), "3");
        assert_eq!(next.retry(), Some(Duration::from_millis(10)));
        assert_eq!(
            next.feed(b"data: b\n\n").unwrap(),
            [ev("message", "b", "3")]
        );
    }

    /// Streams made of the pieces that matter: fields, line ends of the
    /// three kinds, comments, BOMs, NUL, non-ASCII and broken UTF-8.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"data"[..]),
            Just(&b"data: "[..]),
            Just(&b"data:"[..]),
            Just(&b"event: "[..]),
            Just(&b"id: "[..]),
            Just(&b"id"[..]),
            Just(&b"retry: "[..]),
            Just(&b"12"[..]),
            Just(&b":"[..]),
            Just(&b": comment"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n\n"[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\0"[..]),
            Just("é€😀".as_bytes()),
            Just(&b"\xF0\x9F"[..]),
            Just(&b"\xFF"[..]),
            Just(&b" x"[..]),
            Just(&b"value"[..]),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_events_of_the_reference_reading(
            stream in stream(),
            cuts in prop::collection::vec(any::<u16>(), 0..12),
        ) {
            let mut parser = Parser::new();
            let mut events = Vec::new();
            for chunk in split(&stream, &cuts) {
                parser.feed_into(chunk, &mut events).unwrap();
            }
            let (expected, last, retry) = reference(&stream);
            prop_assert_eq!(events, expected);
            prop_assert_eq!(parser.last_event_id(), last.as_str());
            prop_assert_eq!(parser.retry(), retry);
        }

        #[test]
        fn byte_by_byte_gives_the_same_events_as_one_chunk(stream in stream()) {
            let mut parser = Parser::new();
            let mut events = Vec::new();
            for byte in &stream {
                parser.feed_into(std::slice::from_ref(byte), &mut events).unwrap();
            }
            prop_assert_eq!(events, parse(&stream));
        }

        #[test]
        fn random_bytes_never_panic_and_stay_within_the_bounds(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            cuts in prop::collection::vec(any::<u16>(), 0..8),
            max_line in 0usize..64,
            max_event in 0usize..64,
        ) {
            let mut parser = Parser::new().with_max_line(max_line).with_max_event(max_event);
            let mut events = Vec::new();
            for chunk in split(&bytes, &cuts) {
                if parser.feed_into(chunk, &mut events).is_err() {
                    break;
                }
                prop_assert!(parser.line.len() <= max_line + BOM.len());
                prop_assert!(parser.data.len() + parser.event_type.len() <= max_event);
            }
            for event in &events {
                prop_assert!(event.data().len() + event.event_type().len() <= max_event + "message".len());
            }
        }
    }
}
