//! What the commands share on the terminal: progress bars, thousands separators, the mistakes listing.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, or `None` when stderr is not a terminal.
pub fn progress_bar(total: u64, unit: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"))
            .expect("valid template"),
    );
    Some(bar)
}

/// The evaluator's progress as a bar of images, one bar per pass.
#[derive(Debug, Default)]
pub struct ImagesBar(Mutex<Option<ProgressBar>>);

impl kiln_pack::eval::Progress for ImagesBar {
    fn start(&self, total: usize) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = progress_bar(total as u64, "images");
    }

    fn update(&self, done: usize) {
        if let Some(bar) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.set_position(done as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Lists the first `count` test digits whose prediction differs from the label (nothing for 0).
pub fn print_mistakes(predicted: &[u8], labels: &[u8], count: usize) {
    if count == 0 {
        return;
    }
    let wrong: Vec<usize> = kiln_pack::eval::mistakes(predicted, labels).collect();
    println!("Wrong on {} of {} test digits; the first {}:", wrong.len(), predicted.len(), count.min(wrong.len()));
    for &i in wrong.iter().take(count) {
        println!("  test #{i:>5}: label {}, predicted {}", labels[i], predicted[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(16_067_786), "16,067,786");
    }
}
