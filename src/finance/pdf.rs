//! A statement as a PDF a customer can be sent: A4, the DejaVu Sans Mono font embedded (vendored in
//! `assets/fonts`, nothing read or downloaded at run time), one line per item, new pages as needed.
//! Deterministic: the document id and dates derive from the statement, so the same statement
//! renders to the same bytes.

use printpdf::{IndirectFontRef, Mm, OffsetDateTime, PdfDocument, PdfLayerReference};

use super::statement::Statement;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

const TOP: f32 = 280.0;
const BOTTOM: f32 = 20.0;
const LEFT: f32 = 15.0;
const LINE: f32 = 5.0;

struct Pages<'a> {
    doc: &'a printpdf::PdfDocumentReference,
    font: IndirectFontRef,
    layer: PdfLayerReference,
    y: f32,
}

impl Pages<'_> {
    fn line(&mut self, text: &str, size: f32) {
        if self.y < BOTTOM {
            let (page, layer) = self.doc.add_page(Mm(210.0), Mm(297.0), "statement");
            self.layer = self.doc.get_page(page).get_layer(layer);
            self.y = TOP;
        }
        self.layer
            .use_text(text, size, Mm(LEFT), Mm(self.y), &self.font);
        self.y -= LINE * size / 9.0;
    }
}

/// `label` then `amount` right-aligned to a fixed column.
fn row(label: &str, amount: &str) -> String {
    let label: String = label.chars().take(58).collect();
    format!("{label:<58}{amount:>24}")
}

/// Renders `s`.
pub fn render(s: &Statement) -> Result<Vec<u8>, String> {
    let title = format!("Statement {} — {}", s.month, s.account_name);
    let (doc, page, layer) = PdfDocument::new(&title, Mm(210.0), Mm(297.0), "statement");
    let stamp = chrono::NaiveDateTime::parse_from_str(&s.period_end, "%Y-%m-%dT%H:%M:%SZ")
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(0);
    let date = OffsetDateTime::from_unix_timestamp(stamp).map_err(|e| e.to_string())?;
    // 32 letters from the statement's identity: the document id, and the trailer's.
    let id: String = crate::crypto::sha256_hex(format!("{}/{}", s.account_id, s.month).as_bytes())
        .bytes()
        .take(32)
        .map(|b| char::from(b'A' + (b % 16)))
        .collect();
    let doc = doc
        .with_document_id(id.clone())
        .with_creation_date(date)
        .with_mod_date(date)
        .with_metadata_date(date);
    let font = doc
        .add_external_font(std::io::Cursor::new(FONT))
        .map_err(|e| e.to_string())?;
    let mut p = Pages {
        layer: doc.get_page(page).get_layer(layer),
        doc: &doc,
        font,
        y: TOP,
    };
    let cur = s.currency.to_ascii_uppercase();
    p.line(&format!("Statement — {}", s.month), 16.0);
    p.line("", 9.0);
    p.line(
        &format!("Account:  {} ({})", s.account_name, s.account_id),
        9.0,
    );
    p.line(&format!("Provider: {}", s.tenant), 9.0);
    p.line(
        &format!("Period:   {} to {} (UTC)", s.period_start, s.period_end),
        9.0,
    );
    p.line(
        &format!(
            "Currency: {cur}{}",
            if s.closed {
                ""
            } else {
                "   (month not closed: provisional)"
            }
        ),
        9.0,
    );
    p.line("", 9.0);
    p.line(&row("Opening balance", &s.opening_balance), 9.0);
    p.line("", 9.0);
    if !s.topups.is_empty() {
        p.line("Top-ups", 10.0);
        for t in &s.topups {
            p.line(
                &row(
                    &format!("  {} ({} payments)", t.provider, t.count),
                    &t.amount,
                ),
                9.0,
            );
        }
    }
    if !s.usage.is_empty() {
        p.line("Usage", 10.0);
        for u in &s.usage {
            let label = format!(
                "  {} — {} requests, {}+{} tokens",
                u.model, u.requests, u.prompt_tokens, u.completion_tokens
            );
            p.line(&row(&label, &u.amount), 9.0);
        }
    }
    if !s.refunds_and_disputes.is_empty() {
        p.line("Refunds and disputes", 10.0);
        for r in &s.refunds_and_disputes {
            p.line(
                &row(
                    &format!("  {} {} ({})", r.provider, r.kind, r.count),
                    &r.amount,
                ),
                9.0,
            );
        }
    }
    for (title, lines) in [("Adjustments", &s.adjustments), ("Other", &s.other)] {
        if !lines.is_empty() {
            p.line(title, 10.0);
            for o in lines {
                p.line(&row(&format!("  {} ({})", o.kind, o.count), &o.amount), 9.0);
            }
        }
    }
    p.line("", 9.0);
    p.line(&row("Closing balance", &s.closing_balance), 9.0);
    drop(p);
    let mut bytes = doc.save_to_bytes().map_err(|e| e.to_string())?;
    stable_id(&mut bytes, &id);
    Ok(bytes)
}

/// printpdf draws the trailer's `/ID[(…)(…)]` at random: both strings are replaced, in place and
/// at the same length (no offset moves), by `id`.
fn stable_id(pdf: &mut [u8], id: &str) {
    let marker = b"/ID[(";
    let Some(at) = pdf.windows(marker.len()).rposition(|w| w == marker) else {
        return;
    };
    let first = at + marker.len();
    let len = pdf[first..].iter().position(|&b| b == b')').unwrap_or(0);
    let second = first + len + 2;
    if len != id.len()
        || pdf.get(second - 2..second) != Some(b")(".as_slice())
        || pdf.len() < second + len
    {
        return;
    }
    pdf[first..first + len].copy_from_slice(id.as_bytes());
    pdf[second..second + len].copy_from_slice(id.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Statement {
        Statement {
            object: "statement".into(),
            tenant: "acme".into(),
            account_id: "0193a0c2-0000-7000-8000-000000000001".into(),
            account_name: "Acme Research".into(),
            currency: "usd".into(),
            month: "2026-11".into(),
            period_start: "2026-11-01T00:00:00Z".into(),
            period_end: "2026-12-01T00:00:00Z".into(),
            closed: true,
            opening_balance_nano: 0,
            opening_balance: "0.000000000".into(),
            topups: vec![],
            usage: vec![],
            refunds_and_disputes: vec![],
            adjustments: vec![],
            other: vec![],
            closing_balance_nano: 0,
            closing_balance: "0.000000000".into(),
        }
    }

    #[test]
    fn the_same_statement_renders_to_the_same_bytes() {
        let (a, b) = (render(&sample()).unwrap(), render(&sample()).unwrap());
        let diff: Vec<usize> = a
            .iter()
            .zip(&b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, _)| i)
            .collect();
        if let Some(&first) = diff.first() {
            panic!(
                "{} bytes differ, first at {first}: {:?}",
                diff.len(),
                String::from_utf8_lossy(&a[first.saturating_sub(80)..(first + 80).min(a.len())])
            );
        }
        assert_eq!(a.len(), b.len());
    }
}
