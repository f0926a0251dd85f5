//! Templated sentiment classification written as generation: `the soup was awful. sentiment:` → `negative`.

use super::{Example, Task};
use crate::rng::Rng;
use crate::{LabelMatch, Reward};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentimentConfig {
    /// Leave out the negated templates (`the soup was not good.` is negative), which a bag of
    /// words cannot solve. Off by default.
    pub no_negation: bool,
}

const NOUNS: &[&str] = &[
    "food", "movie", "service", "book", "hotel", "concert", "game", "coffee", "staff", "ending", "show",
    "pizza",
];
const GOOD_ADJ: &[&str] =
    &["great", "wonderful", "excellent", "good", "amazing", "lovely", "delightful", "superb"];
const BAD_ADJ: &[&str] = &["awful", "terrible", "bad", "boring", "horrible", "dreadful", "bland", "poor"];
/// (past tense, base form)
const GOOD_VERB: &[(&str, &str)] =
    &[("loved", "love"), ("enjoyed", "enjoy"), ("liked", "like"), ("adored", "adore")];
const BAD_VERB: &[(&str, &str)] =
    &[("hated", "hate"), ("disliked", "dislike"), ("regretted", "regret"), ("despised", "despise")];

/// The two labels, as the completion must write them.
pub const LABELS: [&str; 2] = ["positive", "negative"];

/// Short templated reviews labelled `positive` or `negative`. Reward: [`LabelMatch`] on `label`.
#[derive(Clone, Debug, Default)]
pub struct Sentiment {
    config: SentimentConfig,
}

impl Sentiment {
    /// The task with these settings.
    pub fn new(config: SentimentConfig) -> Self {
        Self { config }
    }
}

impl Task for Sentiment {
    fn name(&self) -> &str {
        "sentiment"
    }

    fn sample(&self, rng: &mut Rng) -> Example {
        let positive = rng.below(2) == 0;
        let noun = rng.choose(NOUNS);
        let templates = if self.config.no_negation { 3 } else { 5 };
        let text = match rng.below(templates) {
            0 => format!("the {noun} was {}.", rng.choose(if positive { GOOD_ADJ } else { BAD_ADJ })),
            1 => format!("i {} the {noun}.", rng.choose(if positive { GOOD_VERB } else { BAD_VERB }).0),
            2 => {
                let adj = rng.choose(if positive { GOOD_ADJ } else { BAD_ADJ });
                let article = if adj.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                format!("what {article} {adj} {noun}.")
            }
            // Negated: the adjective or verb has the opposite polarity of the label.
            3 => format!("the {noun} was not {}.", rng.choose(if positive { BAD_ADJ } else { GOOD_ADJ })),
            _ => {
                format!("i did not {} the {noun}.", rng.choose(if positive { BAD_VERB } else { GOOD_VERB }).1)
            }
        };
        let label = if positive { LABELS[0] } else { LABELS[1] };
        Example {
            prompt: format!("{text} sentiment:"),
            reference: json!({ "label": label }),
            completion: label.to_string(),
        }
    }

    fn reward(&self) -> Box<dyn Reward> {
        Box::new(LabelMatch::new(&LABELS))
    }

    fn config(&self) -> Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }
}
