//! Prompts grouped into risk categories, and turning a clip's logits into a result a person
//! can act on: the best prompt, its category and risk when confident enough, the top few,
//! and every score (raw logit and probability) for diagnostics.

use serde::Serialize;

pub use crate::config::{Category, Risk};

/// The flat prompt list the model scores, and which category each belongs to.
#[derive(Debug, Clone)]
pub struct PromptSet {
    pub categories: Vec<Category>,
    pub prompts: Vec<String>,
    pub category_of: Vec<usize>,
}

impl PromptSet {
    pub fn new(categories: Vec<Category>) -> Self {
        let mut prompts = Vec::new();
        let mut category_of = Vec::new();
        for (i, c) in categories.iter().enumerate() {
            for p in &c.prompts {
                prompts.push(p.clone());
                category_of.push(i);
            }
        }
        Self {
            categories,
            prompts,
            category_of,
        }
    }

    /// Plain prompts without categories (diagnostics: `classify --prompts FILE`).
    pub fn uncategorised(prompts: Vec<String>) -> Self {
        Self::new(vec![Category {
            name: "custom".into(),
            risk: Risk::Low,
            threshold: 0.0,
            prompts,
        }])
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub prompt: String,
    pub category: String,
    pub logit: f32,
    pub probability: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The best-scoring prompt.
    pub detected_action: String,
    /// Its category, when its probability reaches the category's threshold.
    pub category: Option<String>,
    /// The category's risk, when the category counts.
    pub risk: Option<Risk>,
    /// Softmax probability of the best prompt over all prompts.
    pub confidence: f32,
    pub top_k: Vec<Score>,
    /// Every prompt, in configuration order.
    pub all_scores: Vec<Score>,
}

/// Softmax in f64 (logit scales of 100 overflow f32 `exp` otherwise).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

impl PromptSet {
    /// Judge a clip's logits (one per prompt, in order).
    pub fn classify(&self, logits: &[f32], top_k: usize) -> Classification {
        assert_eq!(logits.len(), self.len(), "one logit per prompt");
        let probs = softmax(logits);
        let all: Vec<Score> = self
            .prompts
            .iter()
            .zip(&self.category_of)
            .zip(logits.iter().zip(&probs))
            .map(|((p, &c), (&logit, &probability))| Score {
                prompt: p.clone(),
                category: self.categories[c].name.clone(),
                logit,
                probability,
            })
            .collect();
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let best = order[0];
        let cat = &self.categories[self.category_of[best]];
        let counts = probs[best] >= cat.threshold;
        Classification {
            detected_action: all[best].prompt.clone(),
            category: counts.then(|| cat.name.clone()),
            risk: counts.then_some(cat.risk),
            confidence: probs[best],
            top_k: order.iter().take(top_k).map(|&i| all[i].clone()).collect(),
            all_scores: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_prompt_names_its_category_only_above_threshold() {
        let set = PromptSet::new(vec![
            Category {
                name: "suspicious".into(),
                risk: Risk::High,
                threshold: 0.6,
                prompts: vec!["loitering".into(), "peeking".into()],
            },
            Category {
                name: "normal".into(),
                risk: Risk::Low,
                threshold: 0.1,
                prompts: vec!["walking by".into()],
            },
        ]);
        let c = set.classify(&[10.0, 1.0, 2.0], 2);
        assert_eq!(c.detected_action, "loitering");
        assert_eq!(
            (c.category.as_deref(), c.risk),
            (Some("suspicious"), Some(Risk::High))
        );
        assert!(c.confidence > 0.99);
        assert_eq!(c.top_k.len(), 2);
        assert_eq!(c.top_k[1].prompt, "walking by");
        let sum: f32 = c.all_scores.iter().map(|s| s.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let unsure = set.classify(&[1.0, 0.9, 0.8], 3);
        assert_eq!(unsure.detected_action, "loitering");
        assert_eq!((unsure.category, unsure.risk), (None, None));
        // Large logits (scale 100) do not overflow.
        assert!(softmax(&[1000.0, 0.0]).iter().all(|p| p.is_finite()));
    }
}
