//! Bounded byte capture and window-based JSON field extraction.
//!
//! [`BoundedBuf`] keeps a whole body while it fits in its budget; past it, it
//! keeps a head window (the first quarter of the budget) and a rolling tail
//! window (the rest), so its retained capacity never exceeds the budget no
//! matter how many bytes go through it.
//!
//! The `find_*` helpers locate a `"usage":{...}` object or a `"model":"..."`
//! string inside such a window without parsing the whole document, for
//! bodies and SSE events too large to keep.

/// Longest model string kept, in bytes.
pub const MAX_MODEL_BYTES: usize = 256;

/// How many candidate occurrences of a key the window finders try.
const MAX_CANDIDATES: usize = 8;

/// Longest JSON string value scanned by [`find_string_field`].
const MAX_STRING_SCAN: usize = 2048;

/// A rolling window over the last `cap` bytes pushed into it.
#[derive(Debug, Default)]
struct TailWindow {
    cap: usize,
    buf: Vec<u8>,
    /// Index of the oldest byte once `buf` is full.
    pos: usize,
}

impl TailWindow {
    fn new(cap: usize) -> Self {
        TailWindow {
            cap,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.cap == 0 || bytes.is_empty() {
            return;
        }
        if self.buf.capacity() < self.cap {
            self.buf.reserve_exact(self.cap - self.buf.len());
        }
        if bytes.len() >= self.cap {
            self.buf.clear();
            self.buf
                .extend_from_slice(bytes.get(bytes.len() - self.cap..).unwrap_or_default());
            self.pos = 0;
            return;
        }
        let mut rest = bytes;
        if self.buf.len() < self.cap {
            let take = (self.cap - self.buf.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.buf.extend_from_slice(now);
            rest = later;
        }
        while !rest.is_empty() {
            let n = (self.cap - self.pos).min(rest.len());
            let (now, later) = rest.split_at(n);
            if let Some(dst) = self.buf.get_mut(self.pos..self.pos + n) {
                dst.copy_from_slice(now);
            }
            self.pos = (self.pos + n) % self.cap;
            rest = later;
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        let (a, b) = self.buf.split_at(self.pos.min(self.buf.len()));
        out.extend_from_slice(b);
        out.extend_from_slice(a);
        out
    }

    fn release(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
    }

    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// A byte buffer with a hard memory budget: whole content while it fits,
/// head + tail windows afterwards.
#[derive(Debug)]
pub struct BoundedBuf {
    max: usize,
    head_cap: usize,
    /// The whole content, or the head window once overflowed.
    buf: Vec<u8>,
    tail: TailWindow,
    total: u64,
    overflowed: bool,
}

impl BoundedBuf {
    /// A buffer retaining at most `max_bytes` (at least 16) bytes.
    pub fn new(max_bytes: usize) -> Self {
        let max = max_bytes.max(16);
        let head_cap = max / 4;
        BoundedBuf {
            max,
            head_cap,
            buf: Vec::new(),
            tail: TailWindow::new(max - head_cap),
            total: 0,
            overflowed: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.overflowed {
            self.tail.push(bytes);
            return;
        }
        let need = self.buf.len().saturating_add(bytes.len());
        if need <= self.max {
            if need > self.buf.capacity() {
                let target = need
                    .max(self.buf.capacity().saturating_mul(2))
                    .max(64)
                    .min(self.max);
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.buf.extend_from_slice(bytes);
            return;
        }
        // Overflow: the tail gets the last bytes of buf ++ bytes, the head
        // keeps the first `head_cap` bytes.
        self.overflowed = true;
        let tail_cap = self.max - self.head_cap;
        if bytes.len() < tail_cap {
            let from_buf = tail_cap - bytes.len();
            let start = self.buf.len().saturating_sub(from_buf);
            self.tail.push(self.buf.get(start..).unwrap_or_default());
        }
        self.tail.push(bytes);
        if self.buf.len() >= self.head_cap {
            self.buf.truncate(self.head_cap);
        } else {
            let missing = self.head_cap - self.buf.len();
            self.buf
                .extend_from_slice(bytes.get(..missing).unwrap_or(bytes));
        }
        self.buf.shrink_to(self.head_cap);
    }

    /// Forget the content; keeps at most `max` bytes of capacity around.
    pub fn clear(&mut self) {
        if self.overflowed {
            self.tail.release();
        }
        self.buf.clear();
        self.total = 0;
        self.overflowed = false;
    }

    /// Bytes pushed since creation or the last [`clear`](Self::clear).
    pub fn total_len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Whether bytes were dropped (only head and tail windows remain).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The whole content, unless it overflowed.
    pub fn whole(&self) -> Option<&[u8]> {
        if self.overflowed {
            None
        } else {
            Some(&self.buf)
        }
    }

    /// The whole content, or the head window after an overflow.
    pub fn head(&self) -> &[u8] {
        &self.buf
    }

    /// The tail window (a copy); empty unless overflowed.
    pub fn tail(&self) -> Vec<u8> {
        if self.overflowed {
            self.tail.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Heap bytes held; never more than the budget given to [`new`](Self::new)
    /// (outside the transient moment of an overflow).
    pub fn retained_bytes(&self) -> usize {
        self.buf.capacity() + self.tail.capacity()
    }
}

/// Cap a model string at [`MAX_MODEL_BYTES`] (on a char boundary), trimmed;
/// `None` when empty.
pub fn cap_model(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut end = s.len().min(MAX_MODEL_BYTES);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).map(str::to_owned)
}

fn skip_ws(hay: &[u8], mut i: usize) -> usize {
    while let Some(b) = hay.get(i) {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay.get(from..)?, needle).map(|at| at + from)
}

fn rfind_before(hay: &[u8], needle: &[u8], end: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let mut start = end.min(hay.len() - needle.len() + 1);
    while start > 0 {
        start -= 1;
        if hay.get(start..start + needle.len()) == Some(needle) {
            return Some(start);
        }
    }
    None
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find_from(hay, needle, 0).is_some()
}

fn quoted_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.push(b'"');
    k.extend_from_slice(key.as_bytes());
    k.push(b'"');
    k
}

/// If a `"key"` occurrence at `at` is a real key (not an escaped quote) and
/// is followed by `:` and then `expect`, the index of `expect`.
fn value_start(hay: &[u8], at: usize, key_len: usize, expect: u8) -> Option<usize> {
    if at > 0 && hay.get(at - 1) == Some(&b'\\') {
        return None;
    }
    let i = skip_ws(hay, at + key_len);
    if hay.get(i) != Some(&b':') {
        return None;
    }
    let i = skip_ws(hay, i + 1);
    (hay.get(i) == Some(&expect)).then_some(i)
}

/// End (exclusive) of the balanced JSON object starting at `start` (`{`),
/// string-aware; `None` if the window ends first.
fn object_end(hay: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    for (off, &b) in hay.get(start..)?.iter().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(start + off + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The last `"key": {...}` object in `window` that is complete and parses.
#[cfg(test)]
pub fn find_last_object(window: &[u8], key: &str) -> Option<serde_json::Value> {
    find_last_object_span(window, key).and_then(|s| serde_json::from_slice(s).ok())
}

/// The text of [`find_last_object`]'s object (checked as `serde_json`
/// checks a `Value`, without building one).
pub fn find_last_object_span<'a>(window: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let k = quoted_key(key);
    let mut end = window.len();
    let mut tried = 0;
    while let Some(at) = rfind_before(window, &k, end) {
        end = at;
        let Some(open) = value_start(window, at, k.len(), b'{') else {
            continue;
        };
        tried += 1;
        if let Some(close) = object_end(window, open) {
            if let Some(slice) = window.get(open..close) {
                // `value_start` found its `{`: valid JSON is an object.
                if crate::typed::is_valid_json(slice) {
                    return Some(slice);
                }
            }
        }
        if tried >= MAX_CANDIDATES {
            break;
        }
    }
    None
}

fn string_at(window: &[u8], open: usize) -> Option<String> {
    let mut esc = false;
    let scan = window.get(open + 1..)?;
    for (off, &b) in scan.iter().enumerate().take(MAX_STRING_SCAN) {
        if esc {
            esc = false;
        } else if b == b'\\' {
            esc = true;
        } else if b == b'"' {
            let slice = window.get(open..open + off + 2)?;
            return serde_json::from_slice::<String>(slice).ok();
        }
    }
    None
}

/// A `"key":"value"` string in `window`: the first occurrence when `first`,
/// else the last. Values longer than 2 KiB are ignored.
pub fn find_string_field(window: &[u8], key: &str, first: bool) -> Option<String> {
    let k = quoted_key(key);
    let mut tried = 0;
    if first {
        let mut from = 0;
        while let Some(at) = find_from(window, &k, from) {
            from = at + 1;
            if let Some(open) = value_start(window, at, k.len(), b'"') {
                if let Some(s) = string_at(window, open) {
                    return Some(s);
                }
                tried += 1;
                if tried >= MAX_CANDIDATES {
                    break;
                }
            }
        }
    } else {
        let mut end = window.len();
        while let Some(at) = rfind_before(window, &k, end) {
            end = at;
            if let Some(open) = value_start(window, at, k.len(), b'"') {
                if let Some(s) = string_at(window, open) {
                    return Some(s);
                }
                tried += 1;
                if tried >= MAX_CANDIDATES {
                    break;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounded_buf_keeps_whole_when_small() {
        let mut b = BoundedBuf::new(100);
        b.push(b"hello ");
        b.push(b"world");
        assert_eq!(b.whole(), Some(&b"hello world"[..]));
        assert!(!b.overflowed());
        assert!(b.tail().is_empty());
        assert!(b.retained_bytes() <= 100);
    }

    #[test]
    fn bounded_buf_head_and_tail_after_overflow() {
        let mut b = BoundedBuf::new(100);
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(7) {
            b.push(c);
        }
        assert!(b.overflowed());
        assert_eq!(b.total_len(), 1000);
        assert_eq!(b.head(), &data[..25]);
        assert_eq!(b.tail(), &data[1000 - 75..]);
        assert!(b.retained_bytes() <= 100, "{}", b.retained_bytes());
        b.clear();
        assert!(b.is_empty());
        b.push(b"abc");
        assert_eq!(b.whole(), Some(&b"abc"[..]));
    }

    #[test]
    fn bounded_buf_overflow_in_one_push() {
        let mut b = BoundedBuf::new(40);
        b.push(b"0123456789");
        let big: Vec<u8> = (0..200u8).collect();
        b.push(&big);
        let mut all = b"0123456789".to_vec();
        all.extend_from_slice(&big);
        assert_eq!(b.head(), &all[..10]);
        assert_eq!(b.tail(), &all[all.len() - 30..]);
    }

    #[test]
    fn bounded_buf_overflow_just_past_max() {
        let mut b = BoundedBuf::new(40);
        let all: Vec<u8> = (0..41u8).collect();
        b.push(&all[..40]);
        assert!(!b.overflowed());
        b.push(&all[40..]);
        assert!(b.overflowed());
        assert_eq!(b.head(), &all[..10]);
        assert_eq!(b.tail(), &all[11..]);
    }

    #[test]
    fn finds_last_usage_object() {
        let w = br#"..."text":"a \"usage\":{\"x\":1} b"}],"usage":{"input_tokens":5,"nested":{"a":"}"}},"x":1"#;
        let v = find_last_object(w, "usage").unwrap();
        assert_eq!(v["input_tokens"], 5);
        assert_eq!(v["nested"]["a"], "}");
    }

    #[test]
    fn skips_incomplete_last_object() {
        let w = br#"{"usage":{"a":1}},{"usage" : {"a":2,"b":"#;
        let v = find_last_object(w, "usage").unwrap();
        assert_eq!(v["a"], 1);
        assert!(find_last_object(b"no usage here", "usage").is_none());
        assert!(find_last_object(br#""usage":null"#, "usage").is_none());
    }

    #[test]
    fn finds_string_fields() {
        let w = br#"{"id":"x","model" : "gpt-\u00e9","o":{"model":"other"}}"#;
        assert_eq!(
            find_string_field(w, "model", true).as_deref(),
            Some("gpt-é")
        );
        assert_eq!(
            find_string_field(w, "model", false).as_deref(),
            Some("other")
        );
        assert_eq!(
            find_string_field(br#""model":"unterminated"#, "model", true),
            None
        );
        assert_eq!(find_string_field(br#""model":5"#, "model", true), None);
    }

    #[test]
    fn caps_models() {
        assert_eq!(cap_model("  "), None);
        assert_eq!(cap_model(" gpt-4o ").as_deref(), Some("gpt-4o"));
        let long = "é".repeat(300);
        let capped = cap_model(&long).unwrap();
        assert!(capped.len() <= MAX_MODEL_BYTES);
        assert!(capped.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn bounded_buf_matches_model(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..40), max in 16usize..200) {
            let mut b = BoundedBuf::new(max);
            let mut all = Vec::new();
            for c in &chunks {
                b.push(c);
                all.extend_from_slice(c);
                prop_assert!(b.retained_bytes() <= max);
            }
            if all.len() <= max {
                prop_assert_eq!(b.whole(), Some(&all[..]));
            } else {
                let h = max / 4;
                prop_assert_eq!(b.head(), &all[..h]);
                prop_assert_eq!(b.tail(), all[all.len() - (max - h)..].to_vec());
            }
        }

        #[test]
        fn finders_never_panic(w in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = find_last_object(&w, "usage");
            let _ = find_string_field(&w, "model", true);
            let _ = find_string_field(&w, "model", false);
        }

        #[test]
        fn finders_never_panic_jsonish(s in r#"[{}":, a-z\\usagemodel0-9\[\]]{0,200}"#) {
            let _ = find_last_object(s.as_bytes(), "usage");
            let _ = find_string_field(s.as_bytes(), "model", true);
            let _ = find_string_field(s.as_bytes(), "model", false);
        }
    }
}
