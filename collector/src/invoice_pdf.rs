//! Invoices as PDF (pure: an invoice's figures in, the document's bytes out).
//!
//! A4 pages laid out by hand with `printpdf`: a header with the number,
//! tenant, period and currency, one row per invoice line, and the subtotal,
//! credits and total, on as many pages as the lines need ("Page i of n" on
//! each). The text is set in DejaVu Sans, embedded in the file (the font
//! ships in the binary, `assets/fonts`, under its own licence), so every
//! reader shows the same glyphs and text extraction gets the characters
//! back.

use std::io::Cursor;

use printpdf::{IndirectFontRef, Mm, PdfDocument, PdfLayerReference};

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts`).
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// One row of the lines table, already formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfLine {
    pub description: String,
    pub quantity: String,
    pub unit_price: String,
    pub amount: String,
}

/// Everything the document shows, already formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfInvoice {
    /// "Invoice INV-…" or "Draft invoice".
    pub title: String,
    pub number: Option<String>,
    pub tenant_id: String,
    pub period: String,
    pub period_range: String,
    pub currency: String,
    pub issued: String,
    pub lines: Vec<PdfLine>,
    pub subtotal: String,
    pub credits: String,
    pub total: String,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render the invoice as PDF: {0}")]
pub struct PdfError(String);

const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 297.0;
const MARGIN: f32 = 18.0;
const ROW: f32 = 5.6;
const BODY_PT: f32 = 8.5;
/// Rows of the lines table on the first page (under the header) and on
/// the next ones.
pub const ROWS_FIRST_PAGE: usize = 36;
pub const ROWS_PER_PAGE: usize = 44;
/// Longest description kept on one row; longer ones continue on the next.
const DESCRIPTION_CHARS: usize = 50;

/// Approximate advance of a DejaVu Sans character at `pt` points, in mm
/// (digits, the figures right-aligned here, are 0.636 em).
fn text_width(text: &str, pt: f32) -> f32 {
    text.chars().count() as f32 * 0.636 * pt * 0.3528
}

/// Columns: the description from the left, the three figures right-aligned
/// at these edges (mm from the left). The token class is in the description
/// ("gpt-4o: cached input tokens"), so it has no column of its own.
const COL_QTY_RIGHT: f32 = 134.0;
const COL_PRICE_RIGHT: f32 = 170.0;
const COL_AMOUNT_RIGHT: f32 = PAGE_W - MARGIN;

struct Page {
    layer: PdfLayerReference,
    y: f32,
}

impl Page {
    fn text(&self, font: &IndirectFontRef, text: &str, pt: f32, x: f32) {
        self.layer.use_text(text, pt, Mm(x), Mm(self.y), font);
    }

    fn right(&self, font: &IndirectFontRef, text: &str, pt: f32, right_edge: f32) {
        self.text(font, text, pt, right_edge - text_width(text, pt));
    }
}

/// Splits a description into rows of at most [`DESCRIPTION_CHARS`].
fn wrap(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(DESCRIPTION_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// How many pages `rows` table rows take.
pub fn page_count(rows: usize) -> usize {
    // The totals (4 rows) and notes stay with the last rows.
    let rows = rows + 4;
    if rows <= ROWS_FIRST_PAGE {
        1
    } else {
        1 + (rows - ROWS_FIRST_PAGE).div_ceil(ROWS_PER_PAGE)
    }
}

/// The invoice as a PDF document.
pub fn render(inv: &PdfInvoice) -> Result<Vec<u8>, PdfError> {
    let title = inv.number.clone().unwrap_or_else(|| inv.title.clone());
    let (doc, first_page, first_layer) =
        PdfDocument::new(&title, Mm(PAGE_W), Mm(PAGE_H), "invoice");
    let font = doc
        .add_external_font(Cursor::new(FONT))
        .map_err(|e| PdfError(e.to_string()))?;

    // Table rows: wrapped descriptions give a line several rows.
    let mut rows: Vec<[String; 4]> = Vec::with_capacity(inv.lines.len());
    for l in &inv.lines {
        for (i, part) in wrap(&l.description).into_iter().enumerate() {
            rows.push(if i == 0 {
                [
                    part,
                    l.quantity.clone(),
                    l.unit_price.clone(),
                    l.amount.clone(),
                ]
            } else {
                [part, String::new(), String::new(), String::new()]
            });
        }
    }
    if rows.is_empty() {
        rows.push([
            "No billable usage.".into(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    let pages = page_count(rows.len());
    let mut layers = vec![doc.get_page(first_page).get_layer(first_layer)];
    for _ in 1..pages {
        let (p, l) = doc.add_page(Mm(PAGE_W), Mm(PAGE_H), "invoice");
        layers.push(doc.get_page(p).get_layer(l));
    }

    let mut rows = rows.into_iter().peekable();
    for (index, layer) in layers.into_iter().enumerate() {
        let mut page = Page {
            layer,
            y: PAGE_H - MARGIN,
        };
        if index == 0 {
            page.text(&font, &inv.title, 16.0, MARGIN);
            page.y -= 9.0;
            for (k, v) in [
                ("Tenant", inv.tenant_id.as_str()),
                ("Period", inv.period_range.as_str()),
                ("Currency", inv.currency.as_str()),
                ("Issued", inv.issued.as_str()),
            ] {
                page.text(&font, k, 9.5, MARGIN);
                page.text(&font, v, 9.5, MARGIN + 24.0);
                page.y -= 5.2;
            }
            page.y -= 4.0;
        } else {
            page.text(&font, &format!("{title} (continued)"), 10.0, MARGIN);
            page.y -= 8.0;
        }
        page.text(&font, "Description", 9.0, MARGIN);
        page.right(&font, "Quantity", 9.0, COL_QTY_RIGHT);
        page.right(&font, "Unit price", 9.0, COL_PRICE_RIGHT);
        page.right(&font, "Amount", 9.0, COL_AMOUNT_RIGHT);
        page.y -= ROW + 0.6;
        let capacity = if index == 0 {
            ROWS_FIRST_PAGE
        } else {
            ROWS_PER_PAGE
        };
        let last = index + 1 == pages;
        // The last page keeps room for the totals.
        let take = if last { capacity - 4 } else { capacity };
        for _ in 0..take {
            let Some(r) = rows.next() else { break };
            page.text(&font, &r[0], BODY_PT, MARGIN);
            page.right(&font, &r[1], BODY_PT, COL_QTY_RIGHT);
            page.right(&font, &r[2], BODY_PT, COL_PRICE_RIGHT);
            page.right(&font, &r[3], BODY_PT, COL_AMOUNT_RIGHT);
            page.y -= ROW;
        }
        if last {
            page.y -= 2.0;
            for (label, value, pt) in [
                ("Subtotal", &inv.subtotal, 9.5),
                ("Prepaid credits applied", &inv.credits, 9.5),
                ("Total due", &inv.total, 11.5),
            ] {
                page.right(&font, label, pt, COL_PRICE_RIGHT);
                page.right(&font, value, pt, COL_AMOUNT_RIGHT);
                page.y -= ROW + 0.4;
            }
            page.y -= 3.0;
            for note in &inv.notes {
                for part in note
                    .split_whitespace()
                    .fold(vec![String::new()], |mut acc, w| {
                        let cur = acc.last_mut().map(|s| s.len()).unwrap_or(0);
                        if cur + w.len() + 1 > 110 {
                            acc.push(String::new());
                        }
                        if let Some(s) = acc.last_mut() {
                            if !s.is_empty() {
                                s.push(' ');
                            }
                            s.push_str(w);
                        }
                        acc
                    })
                {
                    page.text(&font, &part, 7.5, MARGIN);
                    page.y -= 4.0;
                }
            }
        }
        page.y = MARGIN - 6.0;
        page.right(
            &font,
            &format!("Page {} of {pages}", index + 1),
            8.0,
            COL_AMOUNT_RIGHT,
        );
    }
    doc.save_to_bytes().map_err(|e| PdfError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice(lines: usize) -> PdfInvoice {
        PdfInvoice {
            title: "Invoice INV-2026-822B33AD87-000001".into(),
            number: Some("INV-2026-822B33AD87-000001".into()),
            tenant_id: "acme".into(),
            period: "2026-10".into(),
            period_range: "2026-10-01 – 2026-11-01 (UTC, end exclusive)".into(),
            currency: "EUR".into(),
            issued: "2026-11-02T00:00:00Z".into(),
            lines: (0..lines)
                .map(|i| PdfLine {
                    description: format!("model-{i}: input tokens"),
                    quantity: "1000 tokens".into(),
                    unit_price: "3 / 1M tokens".into(),
                    amount: "0.01 EUR".into(),
                })
                .collect(),
            subtotal: "0.59 EUR".into(),
            credits: "0.00 EUR".into(),
            total: "0.59 EUR".into(),
            notes: vec!["Each line is the exact sum of per-request charges.".into()],
        }
    }

    #[test]
    fn a_pdf_with_the_font_embedded_and_one_page_per_table_page() {
        let pdf = render(&invoice(3)).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("FontFile2"), "the TrueType font is embedded");
        assert!(text.contains("DejaVuSans"));
        assert_eq!(page_count(0), 1);
        assert_eq!(page_count(ROWS_FIRST_PAGE - 4), 1);
        assert_eq!(page_count(ROWS_FIRST_PAGE - 3), 2);
        assert_eq!(page_count(ROWS_FIRST_PAGE - 4 + ROWS_PER_PAGE), 2);
        assert_eq!(page_count(ROWS_FIRST_PAGE - 3 + ROWS_PER_PAGE), 3);
        // A long invoice renders on several pages.
        let long = render(&invoice(200)).unwrap();
        assert!(long.len() > pdf.len());
    }

    #[test]
    fn long_descriptions_wrap() {
        assert_eq!(wrap(""), [""]);
        let w = wrap(&"x".repeat(DESCRIPTION_CHARS * 2 + 1));
        assert_eq!(w.len(), 3);
        assert_eq!(w[2], "x");
    }
}
