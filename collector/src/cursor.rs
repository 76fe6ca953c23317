//! Opaque, tamper-proof pagination cursors (pure).
//!
//! A cursor names the last row of the previous page by its position in the
//! tenant's own order, (start time, tenant, request id): values the reader
//! has already seen in that row, and nothing else. No global row id or
//! count goes in, so nothing in it varies with other tenants' traffic. It is
//! sealed with HMAC-SHA256 under the collector's cursor key over the
//! position and a *binding*, the listing it belongs to (who reads: the
//! admin or one tenant token; and the filter set), so a cursor altered, or
//! replayed by another token, tenant or filter set, is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Format marker of the sealed cursors (the first ones carried a row id
/// and no seal).
const VERSION: u8 = 2;
/// Bytes of the HMAC kept in a cursor.
const TAG_LEN: usize = 16;
/// Shortest cursor key accepted.
pub const MIN_KEY_LEN: usize = 32;

/// The secret cursors are sealed under: the same on every replica.
#[derive(Clone, PartialEq, Eq)]
pub struct CursorKey(Vec<u8>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("CURSOR_KEY must be hex of at least {MIN_KEY_LEN} bytes ({} hex digits)", MIN_KEY_LEN * 2)]
    Key,
    #[error("cursor is from an earlier version of this API; restart the listing without a cursor")]
    Old,
    #[error(
        "cursor does not belong to this listing (another tenant, token or set of filters, or altered); \
         restart the listing without a cursor"
    )]
    Foreign,
}

impl CursorKey {
    /// From `CURSOR_KEY` (hex) or the stored key.
    pub fn from_hex(hex_key: &str) -> Result<Self, CursorError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| CursorError::Key)?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(CursorError::Key);
        }
        Ok(Self(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; MIN_KEY_LEN];
        // The OS generator only fails on a broken system; the uuid fallback
        // is still random (v4), never a constant.
        if getrandom::fill(&mut bytes).is_err() {
            for (chunk, id) in bytes
                .chunks_mut(16)
                .zip([uuid::Uuid::new_v4(), uuid::Uuid::new_v4()])
            {
                chunk.copy_from_slice(&id.as_bytes()[..chunk.len()]);
            }
        }
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    fn tag(&self, payload: &[u8], binding: &str) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        // HMAC accepts keys of any length.
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) {
            mac.update(payload);
            // Length-prefixed so payload and binding cannot trade bytes.
            mac.update(&(binding.len() as u64).to_be_bytes());
            mac.update(binding.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        }
        out
    }
}

/// The last row of a page, in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub occurred_at: DateTime<Utc>,
    pub tenant_id: String,
    pub request_id: String,
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The cursor of `pos` in the listing `binding`.
pub fn seal(key: &CursorKey, pos: &Position, binding: &str) -> String {
    let mut payload = vec![VERSION];
    payload.extend_from_slice(&pos.occurred_at.timestamp_micros().to_be_bytes());
    push_str(&mut payload, &pos.tenant_id);
    push_str(&mut payload, &pos.request_id);
    let tag = key.tag(&payload, binding);
    payload.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(payload)
}

/// Reads a cursor of the listing `binding`.
pub fn open(key: &CursorKey, cursor: &str, binding: &str) -> Result<Position, CursorError> {
    let raw = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| CursorError::Foreign)?;
    if raw.first() != Some(&VERSION) {
        // The first cursors were base64 of "<micros>.<row id>".
        let old = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.split_once('.'))
            .is_some_and(|(a, b)| a.parse::<i64>().is_ok() && b.parse::<i64>().is_ok());
        return Err(if old {
            CursorError::Old
        } else {
            CursorError::Foreign
        });
    }
    if raw.len() < 1 + 8 + 4 + 4 + TAG_LEN {
        return Err(CursorError::Foreign);
    }
    let (payload, tag) = raw.split_at(raw.len() - TAG_LEN);
    let expected = key.tag(payload, binding);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
        return Err(CursorError::Foreign);
    }
    let mut rest = &payload[1..];
    let micros = take(&mut rest, 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .ok_or(CursorError::Foreign)?;
    let tenant_id = take_str(&mut rest).ok_or(CursorError::Foreign)?;
    let request_id = take_str(&mut rest).ok_or(CursorError::Foreign)?;
    let occurred_at = Utc
        .timestamp_micros(micros)
        .single()
        .ok_or(CursorError::Foreign)?;
    if !rest.is_empty() {
        return Err(CursorError::Foreign);
    }
    Ok(Position {
        occurred_at,
        tenant_id,
        request_id,
    })
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_str(rest: &mut &[u8]) -> Option<String> {
    let len = take(rest, 4).and_then(|b| <[u8; 4]>::try_from(b).ok())?;
    let bytes = take(rest, u32::from_be_bytes(len) as usize)?;
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> Position {
        Position {
            occurred_at: Utc.timestamp_micros(1_764_000_000_123_456).unwrap(),
            tenant_id: "acme".into(),
            request_id: "req-7".into(),
        }
    }

    #[test]
    fn a_cursor_opens_only_in_its_own_listing_under_its_key() {
        let key = CursorKey::generate();
        let c = seal(&key, &pos(), "tenant-token:4|acme|model=gpt-4o");
        assert_eq!(
            open(&key, &c, "tenant-token:4|acme|model=gpt-4o").unwrap(),
            pos()
        );
        // Deterministic: the same position gives the same cursor.
        assert_eq!(c, seal(&key, &pos(), "tenant-token:4|acme|model=gpt-4o"));
        for other in [
            "tenant-token:5|acme|model=gpt-4o",
            "tenant-token:4|globex|model=gpt-4o",
            "tenant-token:4|acme|model=gpt-4o-mini",
            "admin|acme|model=gpt-4o",
        ] {
            assert_eq!(open(&key, &c, other), Err(CursorError::Foreign), "{other}");
        }
        assert_eq!(
            open(
                &CursorKey::generate(),
                &c,
                "tenant-token:4|acme|model=gpt-4o"
            ),
            Err(CursorError::Foreign)
        );
    }

    #[test]
    fn altered_truncated_old_and_garbage_cursors_are_refused() {
        let key = CursorKey::from_hex(&"ab".repeat(32)).unwrap();
        let c = seal(&key, &pos(), "b");
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        raw[5] ^= 1;
        assert_eq!(
            open(&key, &URL_SAFE_NO_PAD.encode(&raw), "b"),
            Err(CursorError::Foreign)
        );
        assert_eq!(
            open(&key, &c[..c.len() - 4], "b"),
            Err(CursorError::Foreign)
        );
        assert_eq!(open(&key, "not a cursor!", "b"), Err(CursorError::Foreign));
        assert_eq!(open(&key, "", "b"), Err(CursorError::Foreign));
        let old = URL_SAFE_NO_PAD.encode("1796297232728000.4");
        assert_eq!(open(&key, &old, "b"), Err(CursorError::Old));
        assert!(CursorError::Old.to_string().contains("restart the listing"));
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(CursorKey::from_hex("abcd"), Err(CursorError::Key));
        assert_eq!(
            CursorKey::from_hex("zz".repeat(32).as_str()),
            Err(CursorError::Key)
        );
        let k = CursorKey::generate();
        assert_eq!(CursorKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_ne!(CursorKey::generate(), k);
        assert_eq!(format!("{k:?}"), "CursorKey(..)");
    }
}
