//! CLIP's byte-pair tokenizer as the text graph expects it: NFC-normalised text, BOS,
//! tokens, EOS, padded to the context length, with an attention mask of 1 through EOS.
//!
//! `instant-clip-tokenizer` gives the same ids as Hugging Face's CLIPTokenizer for ordinary
//! prompts (checked against a fixture). It does not NFC-normalise, so we do; and it pads
//! with 0 where HF pads with EOS, which changes nothing the model sees: the mask and the
//! causal attention keep padding out of the EOS position the text embedding is read from.

use instant_clip_tokenizer::{Token, Tokenizer};
use unicode_normalization::UnicodeNormalization;

/// The CLIP text context length.
pub const CONTEXT: usize = 77;

pub struct ClipTokenizer {
    inner: Tokenizer,
}

/// Token ids and attention mask of several prompts, row-major [P, CONTEXT].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub prompts: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// Prompts cut at the context length.
    pub truncated: usize,
}

impl Default for ClipTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClipTokenizer {
    /// Build the tokenizer from the vocabulary compiled into the binary (~50 ms: do it once).
    pub fn new() -> Self {
        Self {
            inner: Tokenizer::new(),
        }
    }

    pub fn encode(&self, prompts: &[impl AsRef<str>]) -> Encoded {
        let mut ids = vec![0i64; prompts.len() * CONTEXT];
        let mut mask = vec![0i64; prompts.len() * CONTEXT];
        let mut tokens: Vec<Token> = Vec::new();
        let mut truncated = 0;
        for (p, text) in prompts.iter().enumerate() {
            let text: String = text.as_ref().nfc().collect();
            tokens.clear();
            tokens.push(self.inner.start_of_text());
            self.inner.encode(&text, &mut tokens);
            if tokens.len() > CONTEXT - 1 {
                tokens.truncate(CONTEXT - 1);
                truncated += 1;
            }
            tokens.push(self.inner.end_of_text());
            let row = p * CONTEXT;
            for (i, t) in tokens.iter().enumerate() {
                ids[row + i] = i64::from(t.to_u16());
                mask[row + i] = 1;
            }
        }
        Encoded {
            prompts: prompts.len(),
            input_ids: ids,
            attention_mask: mask,
            truncated,
        }
    }
}
