//! Counting tokens when no upstream reported them: OpenAI's `o200k_base` byte-pair encoding,
//! bundled in the binary (tiktoken-rs ships its rank files; nothing is downloaded) and loaded once,
//! on first use. Counts made here are stored as `estimated`: a subnet's model has its own tokenizer.
//! Admission uses the cheaper [`super::estimate_tokens`], before any answer exists.

/// Loads the encoding on a thread of its own (≈0.1 s in release), so no request waits for it.
pub fn warm_up() {
    std::thread::spawn(|| count_tokens(""));
}

/// Tokens of `text` under `o200k_base` (special-token text counts as ordinary text).
pub fn count_tokens(text: &str) -> i64 {
    tiktoken_rs::o200k_base_singleton().count_ordinary(text) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_tiktoken() {
        // tiktoken.get_encoding("o200k_base").encode("hello world") == [24912, 2375]
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
        assert!(count_tokens("supercalifragilisticexpialidocious") > 1);
    }
}
