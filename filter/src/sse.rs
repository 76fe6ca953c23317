//! Incremental, bounded Server-Sent Events framer (WHATWG HTML "event
//! stream interpretation").
//!
//! Bytes go in with arbitrary chunking (a chunk may end inside a UTF-8
//! character or between `\r` and `\n`); complete events come out through a
//! callback. Lines end with `\r\n`, `\n` or `\r`; lines starting with `:` are
//! comments; `data:` lines are joined with `\n`; one space after the colon is
//! stripped; a blank line dispatches; an event without data is not
//! dispatched; a leading UTF-8 BOM is skipped. `id` and `retry` are ignored.
//!
//! Memory is bounded by the `max_event_bytes` budget given to
//! [`SseFramer::new`]: an event whose data exceeds it keeps only a head
//! window (first quarter) and a rolling tail window (the rest) and is
//! reported `truncated`. Provider usage is at the end of large terminal
//! events (the Responses API `response.completed` repeats the whole output),
//! so the tail window is where extractors look for it.

use std::borrow::Cow;

use crate::capture::BoundedBuf;

/// Default total state budget of a framer.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024;

/// Longest `event:` name kept (longer names are cut).
pub const MAX_EVENT_NAME_BYTES: usize = 64;

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched event, borrowed from the framer for the callback's
/// duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, `None` when absent or empty (i.e. "message").
    pub event: Option<&'a str>,
    /// The whole data when not `truncated`, else its head window.
    pub data: &'a str,
    /// Empty unless `truncated`: the last bytes of the data (starting on a
    /// character boundary when the window allows it).
    pub tail: &'a str,
    /// Data exceeded the framer's budget; the middle was dropped.
    pub truncated: bool,
    /// Total data bytes of the event, including dropped ones.
    pub data_len: u64,
    /// `false` for the event flushed by [`SseFramer::finish`], which the
    /// stream ended before terminating with a blank line.
    pub terminated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Data,
    Event,
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    Start,
    Field,
    Value(FieldKind),
    Comment,
}

/// Incremental SSE framer with a fixed memory budget.
#[derive(Debug)]
pub struct SseFramer {
    state: LineState,
    skip_space: bool,
    after_cr: bool,
    bom_matched: usize,
    bom_done: bool,
    name: [u8; 8],
    name_len: usize,
    name_overflow: bool,
    event_name: Vec<u8>,
    data: BoundedBuf,
    data_lines: u64,
    dispatched: u64,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseFramer {
    /// A framer whose retained heap stays within `max_event_bytes` (with a
    /// floor of 256 bytes).
    pub fn new(max_event_bytes: usize) -> Self {
        let data_budget = max_event_bytes
            .max(256)
            .saturating_sub(MAX_EVENT_NAME_BYTES);
        SseFramer {
            state: LineState::Start,
            skip_space: false,
            after_cr: false,
            bom_matched: 0,
            bom_done: false,
            name: [0; 8],
            name_len: 0,
            name_overflow: false,
            event_name: Vec::new(),
            data: BoundedBuf::new(data_budget),
            data_lines: 0,
            dispatched: 0,
        }
    }

    /// Feed bytes; complete events are passed to `on_event`.
    pub fn push<F: FnMut(&SseEvent<'_>)>(&mut self, chunk: &[u8], mut on_event: F) {
        let mut rest = chunk;
        while !self.bom_done {
            let Some((&b, after)) = rest.split_first() else {
                return;
            };
            if BOM.get(self.bom_matched) == Some(&b) {
                self.bom_matched += 1;
                rest = after;
                if self.bom_matched == BOM.len() {
                    self.bom_done = true;
                }
            } else {
                self.bom_done = true;
                let matched = self.bom_matched;
                self.feed(BOM.get(..matched).unwrap_or_default(), &mut on_event);
            }
        }
        self.feed(rest, &mut on_event);
    }

    /// How many leading bytes of `chunk` are whole events that end before
    /// `first_wanted(chunk)` (the offset of the first byte that may belong to
    /// a wanted event, `None` for none), so the caller may drop them unread (the
    /// framer's state after them is what feeding them would leave, bar the
    /// dispatch counter). Zero unless the framer is between events.
    ///
    /// After any `\n\n` a blank line has just ended, whatever came before
    /// (`\r\n` or a lone `\r` ended the previous line), so the framer is at
    /// the start of a line with no pending event there.
    pub fn skippable_prefix(
        &mut self,
        chunk: &[u8],
        first_wanted: impl Fn(&[u8]) -> Option<usize>,
    ) -> usize {
        // A first chunk that cannot start a BOM settles it, as `push` would.
        if !self.bom_done && self.bom_matched == 0 && chunk.first().is_some_and(|&b| b != BOM[0]) {
            self.bom_done = true;
        }
        if !self.between_events() {
            return 0;
        }
        let searched = chunk
            .get(..first_wanted(chunk).unwrap_or(chunk.len()))
            .unwrap_or_default();
        memchr::memmem::rfind(searched, b"\n\n").map_or(0, |at| at + 2)
    }

    /// At the start of a line with no event being built (and the BOM
    /// settled): where [`skippable_prefix`](Self::skippable_prefix) can act.
    pub fn between_events(&self) -> bool {
        self.bom_done
            && self.state == LineState::Start
            && !self.after_cr
            && self.data_lines == 0
            && self.event_name.is_empty()
    }

    /// End of stream. An event still being built (no terminating blank
    /// line) is flushed to `on_event` with `terminated: false` (the spec
    /// discards it; callers decide). Returns whether the stream ended in
    /// the middle of a line or an event.
    pub fn finish<F: FnMut(&SseEvent<'_>)>(&mut self, mut on_event: F) -> bool {
        if !self.bom_done {
            self.bom_done = true;
            let matched = self.bom_matched;
            self.feed(BOM.get(..matched).unwrap_or_default(), &mut on_event);
        }
        let partial =
            self.state != LineState::Start || self.data_lines > 0 || !self.event_name.is_empty();
        if self.state == LineState::Field {
            let kind = self.field_kind();
            self.begin_value(kind);
        }
        self.state = LineState::Start;
        self.after_cr = false;
        self.dispatch(false, &mut on_event);
        partial
    }

    /// Number of events dispatched so far.
    pub fn dispatched(&self) -> u64 {
        self.dispatched
    }

    /// Heap bytes held by the framer (bounded by the constructor budget).
    pub fn retained_bytes(&self) -> usize {
        self.data.retained_bytes() + self.event_name.capacity()
    }

    fn field_kind(&self) -> FieldKind {
        if self.name_overflow {
            return FieldKind::Ignored;
        }
        match self.name.get(..self.name_len) {
            Some(b"data") => FieldKind::Data,
            Some(b"event") => FieldKind::Event,
            _ => FieldKind::Ignored,
        }
    }

    fn begin_value(&mut self, kind: FieldKind) {
        match kind {
            FieldKind::Data => {
                if self.data_lines > 0 {
                    self.data.push(b"\n");
                }
                self.data_lines = self.data_lines.saturating_add(1);
            }
            FieldKind::Event => self.event_name.clear(),
            FieldKind::Ignored => {}
        }
    }

    fn append_value(&mut self, kind: FieldKind, val: &[u8]) {
        match kind {
            FieldKind::Data => self.data.push(val),
            FieldKind::Event => {
                let room = MAX_EVENT_NAME_BYTES.saturating_sub(self.event_name.len());
                if room > 0 && !val.is_empty() {
                    if self.event_name.capacity() == 0 {
                        self.event_name.reserve_exact(MAX_EVENT_NAME_BYTES);
                    }
                    self.event_name
                        .extend_from_slice(val.get(..room.min(val.len())).unwrap_or_default());
                }
            }
            FieldKind::Ignored => {}
        }
    }

    fn feed<F: FnMut(&SseEvent<'_>)>(&mut self, bytes: &[u8], on_event: &mut F) {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.state {
                LineState::Start => match b {
                    b'\n' | b'\r' => {
                        self.after_cr = b == b'\r';
                        self.dispatch(true, on_event);
                        i += 1;
                    }
                    b':' => {
                        self.state = LineState::Comment;
                        i += 1;
                    }
                    _ => {
                        self.state = LineState::Field;
                        self.name_len = 0;
                        self.name_overflow = false;
                    }
                },
                LineState::Field => {
                    match b {
                        b':' => {
                            let kind = self.field_kind();
                            self.begin_value(kind);
                            self.state = LineState::Value(kind);
                            self.skip_space = true;
                        }
                        b'\n' | b'\r' => {
                            // A field name alone: the value is empty.
                            let kind = self.field_kind();
                            self.begin_value(kind);
                            self.state = LineState::Start;
                            self.after_cr = b == b'\r';
                        }
                        _ => {
                            if let Some(slot) = self.name.get_mut(self.name_len) {
                                *slot = b;
                                self.name_len += 1;
                            } else {
                                self.name_overflow = true;
                            }
                        }
                    }
                    i += 1;
                }
                LineState::Value(_) | LineState::Comment => {
                    let rest = bytes.get(i..).unwrap_or_default();
                    let end = memchr::memchr2(b'\n', b'\r', rest);
                    let mut val = rest.get(..end.unwrap_or(rest.len())).unwrap_or_default();
                    if let LineState::Value(kind) = self.state {
                        if self.skip_space && !val.is_empty() {
                            if val.first() == Some(&b' ') {
                                val = val.get(1..).unwrap_or_default();
                            }
                            self.skip_space = false;
                        }
                        self.append_value(kind, val);
                    }
                    match end {
                        Some(e) => {
                            self.after_cr = rest.get(e) == Some(&b'\r');
                            self.state = LineState::Start;
                            i += e + 1;
                        }
                        None => i = bytes.len(),
                    }
                }
            }
        }
    }

    fn dispatch<F: FnMut(&SseEvent<'_>)>(&mut self, terminated: bool, on_event: &mut F) {
        if self.data_lines > 0 {
            let name = utf8_lossy(&self.event_name);
            let truncated = self.data.overflowed();
            let data = utf8_lossy(self.data.head());
            let tail_bytes = self.data.tail();
            // Skip continuation bytes so the tail starts on a char boundary.
            let skip = tail_bytes
                .iter()
                .take(3)
                .take_while(|&&b| (0x80..0xC0).contains(&b))
                .count();
            let tail: Cow<'_, str> = utf8_lossy(tail_bytes.get(skip..).unwrap_or_default());
            let ev = SseEvent {
                event: if name.is_empty() { None } else { Some(&name) },
                data: &data,
                tail: &tail,
                truncated,
                data_len: self.data.total_len(),
                terminated,
            };
            self.dispatched = self.dispatched.saturating_add(1);
            on_event(&ev);
        }
        self.data.clear();
        self.data_lines = 0;
        self.event_name.clear();
    }
}

/// UTF-8 view of `bytes`: borrowed when valid (the fast, common case), with
/// replacement characters otherwise.
fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        event: Option<String>,
        data: String,
        tail: String,
        truncated: bool,
        data_len: u64,
        terminated: bool,
    }

    fn own(e: &SseEvent<'_>) -> Owned {
        Owned {
            event: e.event.map(str::to_owned),
            data: e.data.to_owned(),
            tail: e.tail.to_owned(),
            truncated: e.truncated,
            data_len: e.data_len,
            terminated: e.terminated,
        }
    }

    fn run(chunks: &[&[u8]], max: usize) -> (Vec<Owned>, bool) {
        let mut f = SseFramer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |e| out.push(own(e)));
        }
        let partial = f.finish(|e| out.push(own(e)));
        (out, partial)
    }

    fn simple(input: &[u8]) -> Vec<(Option<String>, String)> {
        run(&[input], DEFAULT_MAX_EVENT_BYTES)
            .0
            .into_iter()
            .filter(|e| e.terminated)
            .map(|e| (e.event, e.data))
            .collect()
    }

    #[test]
    fn basic_events_and_line_endings() {
        let s = b"event: a\ndata: one\n\ndata:two\r\ndata:  three\r\n\r\ndata: four\r\rdata\n\n";
        assert_eq!(
            simple(s),
            vec![
                (Some("a".into()), "one".into()),
                (None, "two\n three".into()),
                (None, "four".into()),
                (None, "".into()),
            ]
        );
    }

    /// Events fed with skipping (as the tracker does) versus fed whole.
    fn events_with_skips(stream: &[u8], cut: usize, needles: &[&str]) -> Vec<Owned> {
        let first_wanted = |chunk: &[u8]| {
            needles
                .iter()
                .filter_map(|n| memchr::memmem::find(chunk, n.as_bytes()))
                .min()
        };
        let mut framer = SseFramer::new(1 << 16);
        let mut out = Vec::new();
        for chunk in stream.chunks(cut.max(1)) {
            let skip = framer.skippable_prefix(chunk, first_wanted);
            framer.push(chunk.get(skip..).unwrap_or_default(), |ev| {
                out.push(own(ev))
            });
        }
        framer.finish(|ev| out.push(own(ev)));
        out
    }

    #[test]
    fn skipping_drops_only_events_without_needles() {
        let stream = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata: one\r\n\r\ndata: two\r\rdata: {\"usage\":{}}\n\ndata: three\n\ndata: [DONE]\n\n";
        let all = run(&[stream], 1 << 16).0;
        for cut in 1..=stream.len() {
            let kept = events_with_skips(stream, cut, &["\"usage\"", "[DONE]"]);
            let wanted: Vec<_> = all
                .iter()
                .filter(|e| e.data.contains("\"usage\"") || e.data.contains("[DONE]"))
                .cloned()
                .collect();
            // Every needle event arrives intact; skipped ones only ever lack a needle.
            for w in &wanted {
                assert!(kept.contains(w), "cut {cut}: lost {w:?}");
            }
            for k in &kept {
                assert!(all.contains(k), "cut {cut}: invented {k:?}");
            }
        }
        // One whole chunk: the events up to the last `\n\n` before the usage
        // are skipped; `\r`-terminated ones have no `\n\n` and are fed.
        let kept = events_with_skips(stream, stream.len(), &["\"usage\""]);
        let data: Vec<_> = kept.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["one", "two", "{\"usage\":{}}", "three", "[DONE]"]);
    }

    proptest! {
        #[test]
        fn skipping_never_loses_a_needle_event(
            events in proptest::collection::vec(("[a-z ]{0,12}", any::<bool>(), 0usize..3), 1..12),
            cut in 1usize..40,
        ) {
            let ends = ["\n\n", "\r\n\r\n", "\r\r"];
            let mut stream = String::new();
            for (text, usage, end) in &events {
                let body = if *usage { format!("{{\"usage\":\"{text}\"}}") } else { text.clone() };
                stream.push_str(&format!("data: {body}{}", ends[*end]));
            }
            let all = run(&[stream.as_bytes()], 1 << 16).0;
            let kept = events_with_skips(stream.as_bytes(), cut, &["\"usage\""]);
            for e in all.iter().filter(|e| e.data.contains("\"usage\"")) {
                prop_assert!(kept.contains(e));
            }
            for k in &kept {
                prop_assert!(all.contains(k));
            }
        }
    }

    #[test]
    fn comments_ids_unknown_fields_and_empty_events() {
        let s = b": keepalive\n\nid: 7\nretry: 10\nfoo: bar\n\nevent: ping\n\ndata: x\n\n";
        assert_eq!(simple(s), vec![(None, "x".into())]);
        // The event name is reset after a dataless blank line.
    }

    #[test]
    fn event_name_resets_per_event_and_last_wins() {
        let s = b"event: a\nevent: b\ndata: 1\n\ndata: 2\n\n";
        assert_eq!(
            simple(s),
            vec![(Some("b".into()), "1".into()), (None, "2".into())]
        );
        assert_eq!(simple(b"event:\ndata: 1\n\n"), vec![(None, "1".into())]);
    }

    #[test]
    fn bom_is_stripped_even_when_split() {
        let (ev, _) = run(&[b"\xEF", b"\xBB", b"\xBFdata: hi\n\n"], 1024);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "hi");
        // A partial BOM that does not complete is fed back as data.
        let (ev, _) = run(&[b"\xEF", b"data: hi\n\n"], 1024);
        assert!(ev.is_empty());
    }

    #[test]
    fn utf8_split_inside_char() {
        let s = "data: h\u{e9}llo \u{1F600}\n\n".as_bytes();
        for cut in 0..s.len() {
            let (ev, partial) = run(&[&s[..cut], &s[cut..]], 1024);
            assert!(!partial);
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0].data, "h\u{e9}llo \u{1F600}");
        }
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let (ev, _) = run(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], 1024);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a\nb");
    }

    #[test]
    fn unterminated_event_is_flushed_unterminated() {
        let (ev, partial) = run(&[b"data: a\n\ndata: {\"x\":1}"], 1024);
        assert!(partial);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].terminated);
        assert!(!ev[1].terminated);
        assert_eq!(ev[1].data, "{\"x\":1}");
        let (ev, partial) = run(&[b"data: a\n\n"], 1024);
        assert!(!partial);
        assert_eq!(ev.len(), 1);
        let (ev, partial) = run(&[b"data: a\n\n: comment in progress"], 1024);
        assert!(partial);
        assert_eq!(ev.len(), 1);
        let (ev, partial) = run(&[b"data"], 1024);
        assert!(partial);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "");
    }

    #[test]
    fn huge_event_is_truncated_with_head_and_tail() {
        let mut s = b"event: big\ndata: {\"start\":1,\"text\":\"".to_vec();
        s.extend(std::iter::repeat_n(b'x', 200_000));
        s.extend_from_slice(b"\",\"usage\":{\"n\":1}}\n\ndata: small\n\n");
        let mut f = SseFramer::new(4096);
        let mut out = Vec::new();
        for c in s.chunks(1000) {
            f.push(c, |e| out.push(own(e)));
            assert!(f.retained_bytes() <= 4096, "{}", f.retained_bytes());
        }
        assert!(!f.finish(|e| out.push(own(e))));
        assert_eq!(out.len(), 2);
        assert!(out[0].truncated);
        assert_eq!(out[0].event.as_deref(), Some("big"));
        assert!(out[0].data.starts_with("{\"start\":1"));
        assert!(out[0].tail.ends_with("\"usage\":{\"n\":1}}"));
        assert_eq!(out[0].data_len, s.len() as u64 - 11 - 6 - 2 - 13);
        assert!(!out[1].truncated);
        assert_eq!(out[1].data, "small");
        assert_eq!(out[1].tail, "");
    }

    #[test]
    fn long_field_names_are_ignored() {
        assert_eq!(
            simple(b"datadatadata: x\ndata: y\n\n"),
            vec![(None, "y".into())]
        );
    }

    fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: x".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b": c".to_vec()),
            Just("\u{e9}\u{1F600}".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn chunking_never_changes_events(input in stream_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..8), max in 256usize..2048) {
            let (whole, p1) = run(&[&input], max);
            let mut idx: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            idx.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for i in idx {
                chunks.push(&input[prev..i]);
                prev = i;
            }
            chunks.push(&input[prev..]);
            let (split, p2) = run(&chunks, max);
            prop_assert_eq!(whole, split);
            prop_assert_eq!(p1, p2);
        }

        #[test]
        fn arbitrary_bytes_bounded(input in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..300, max in 0usize..1024) {
            let mut f = SseFramer::new(max);
            let budget = max.max(256);
            for c in input.chunks(chunk) {
                f.push(c, |e| { let _ = e.data.len(); });
                prop_assert!(f.retained_bytes() <= budget);
            }
            f.finish(|_| {});
        }
    }
}
