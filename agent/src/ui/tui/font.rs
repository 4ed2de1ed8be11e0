//! A big-glyph font for the approval-code alphabet, drawn with block characters.
//!
//! Glyphs are 5x7 pixel bitmaps. A [`BigText`] scales them by `s` and packs two pixel
//! rows into one text row with the half blocks `▀` `▄` and the full block `█`: on the
//! Linux VT's 8x16 font a half-block pixel is 8x8, so one column by half a row is a
//! square pixel. Only those three characters (and space) are used: they are in CP437
//! (0xDF, 0xDC, 0xDB), so both the framebuffer console's default font and VGA text mode
//! draw them; the quadrant blocks (U+2596..) are not, and would show as `?`.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::Widget;

/// The characters an approval code is made of (no 0/O, 1/I/L).
pub const ALPHABET: &str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// Pixel width and height of every glyph.
pub const GLYPH_W: usize = 5;
pub const GLYPH_H: usize = 7;

/// The bitmap of `c` (rows of `#` and space), or `None` when it is not in the font.
/// Lowercase letters are drawn as their capitals.
pub fn glyph(c: char) -> Option<[&'static str; GLYPH_H]> {
    Some(match c.to_ascii_uppercase() {
        '2' => [
            " ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####",
        ],
        '3' => [
            "#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### ",
        ],
        '4' => [
            "   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # ",
        ],
        '5' => [
            "#####", "#    ", "#### ", "    #", "    #", "#   #", " ### ",
        ],
        '6' => [
            "  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### ",
        ],
        '7' => [
            "#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   ",
        ],
        '8' => [
            " ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### ",
        ],
        '9' => [
            " ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  ",
        ],
        'A' => [
            " ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #",
        ],
        'B' => [
            "#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### ",
        ],
        'C' => [
            " ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### ",
        ],
        'D' => [
            "#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### ",
        ],
        'E' => [
            "#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####",
        ],
        'F' => [
            "#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    ",
        ],
        'G' => [
            " ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####",
        ],
        'H' => [
            "#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #",
        ],
        'J' => [
            "  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  ",
        ],
        'K' => [
            "#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #",
        ],
        'M' => [
            "#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #",
        ],
        'N' => [
            "#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #",
        ],
        'P' => [
            "#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    ",
        ],
        'Q' => [
            " ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #",
        ],
        'R' => [
            "#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #",
        ],
        'S' => [
            " ####", "#    ", "#    ", " ### ", "    #", "    #", "#### ",
        ],
        'T' => [
            "#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
        'U' => [
            "#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### ",
        ],
        'V' => [
            "#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  ",
        ],
        'W' => [
            "#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # ",
        ],
        'X' => [
            "#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #",
        ],
        'Y' => [
            "#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  ",
        ],
        'Z' => [
            "#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####",
        ],
        _ => return None,
    })
}

/// Whether pixel (`x`, `y`) of `c` is set; characters outside the font are blank.
fn pixel(c: char, x: usize, y: usize) -> bool {
    glyph(c).is_some_and(|g| g[y].as_bytes().get(x) == Some(&b'#'))
}

/// A line of big glyphs, `scale` columns per pixel, with one pixel column between glyphs.
pub struct BigText<'a> {
    pub text: &'a str,
    pub scale: u16,
    pub style: Style,
}

impl BigText<'_> {
    /// Columns used by `chars` glyphs at `scale`.
    pub fn width(chars: usize, scale: u16) -> u16 {
        let s = scale as usize;
        (chars * GLYPH_W * s + chars.saturating_sub(1) * s) as u16
    }

    /// Text rows used at `scale`: two pixel rows per text row.
    pub fn height(scale: u16) -> u16 {
        (GLYPH_H * scale as usize).div_ceil(2) as u16
    }

    /// The largest scale (up to 4) at which `chars` glyphs fit in `area`; 0 if none does.
    pub fn fit(chars: usize, area: Rect) -> u16 {
        (1..=4)
            .rev()
            .find(|&s| Self::width(chars, s) <= area.width && Self::height(s) <= area.height)
            .unwrap_or(0)
    }

    /// Whether the scaled pixel at column `col`, half-row `half` is set.
    fn lit(&self, col: usize, half: usize) -> bool {
        let s = self.scale as usize;
        let (x, y) = (col / s, half / s);
        if y >= GLYPH_H {
            return false;
        }
        let (i, px) = (x / (GLYPH_W + 1), x % (GLYPH_W + 1));
        px < GLYPH_W && self.text.chars().nth(i).is_some_and(|c| pixel(c, px, y))
    }
}

impl Widget for BigText<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if self.scale == 0 {
            return;
        }
        let w = Self::width(self.text.chars().count(), self.scale).min(area.width);
        let h = Self::height(self.scale).min(area.height);
        for row in 0..h {
            for col in 0..w {
                let top = self.lit(col as usize, row as usize * 2);
                let bottom = self.lit(col as usize, row as usize * 2 + 1);
                let symbol = match (top, bottom) {
                    (true, true) => "█",
                    (true, false) => "▀",
                    (false, true) => "▄",
                    (false, false) => continue,
                };
                if let Some(cell) = buf.cell_mut((area.x + col, area.y + row)) {
                    cell.set_symbol(symbol).set_style(self.style);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alphabet_char_is_defined_and_5x7() {
        for c in ALPHABET.chars() {
            let g = glyph(c).unwrap_or_else(|| panic!("{c} has no glyph"));
            for row in g {
                assert_eq!(row.len(), GLYPH_W, "{c}: {row:?}");
                assert!(row.bytes().all(|b| b == b'#' || b == b' '), "{c}: {row:?}");
            }
            assert!(g.iter().any(|r| r.contains('#')), "{c} is blank");
        }
        assert_eq!(glyph('b'), glyph('B'));
        for c in ['0', '1', 'I', 'L', 'O', '-'] {
            assert!(glyph(c).is_none(), "{c} is not in the code alphabet");
        }
    }

    #[test]
    fn glyphs_are_distinct() {
        let all: Vec<_> = ALPHABET.chars().map(|c| glyph(c).unwrap()).collect();
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {}", &ALPHABET[i..=i], &ALPHABET[j..=j]);
            }
        }
    }

    #[test]
    fn sizes_and_fit() {
        assert_eq!(BigText::width(6, 1), 35);
        assert_eq!(BigText::width(6, 2), 70);
        assert_eq!(BigText::height(1), 4);
        assert_eq!(BigText::height(2), 7);
        assert_eq!(BigText::height(3), 11);
        // 80x25 VGA text: scale 2 in a 78-column panel; 128 columns: scale 3.
        assert_eq!(BigText::fit(6, Rect::new(0, 0, 78, 9)), 2);
        assert_eq!(BigText::fit(6, Rect::new(0, 0, 126, 20)), 3);
        assert_eq!(BigText::fit(6, Rect::new(0, 0, 126, 8)), 2);
        assert_eq!(BigText::fit(6, Rect::new(0, 0, 30, 8)), 0);
    }

    #[test]
    fn renders_half_blocks() {
        let area = Rect::new(0, 0, 5, 4);
        let mut buf = Buffer::empty(area);
        BigText {
            text: "E",
            scale: 1,
            style: Style::default(),
        }
        .render(area, &mut buf);
        // Rows 0+1: "#####" over "#    "; rows 2+3: "#    " over "#### "; ...
        let want = Buffer::with_lines(["█▀▀▀▀", "█▄▄▄ ", "█    ", "▀▀▀▀▀"]);
        assert_eq!(buf, want);
    }
}
