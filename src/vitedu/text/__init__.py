"""Text transformers for the GBDA chapter: the offline corpus, the shared BERT tokenizer and models, the attack."""

from vitedu.text.hub import load_reference_encoder, load_tokenizer, package_dir

__all__ = ["load_reference_encoder", "load_tokenizer", "package_dir"]

from vitedu.text.data import (LABELS, TextSplit, clean, encode, label_id, load_corpus, load_hub_dataset, load_split,
                              pad_ids)
from vitedu.text.models import (CausalLM, TextClassifier, TextModelConfig, TrainConfig, accuracy, perplexity,
                                pretrained_models, train_text_model)

__all__ += ["LABELS", "TextSplit", "clean", "encode", "label_id", "load_corpus", "load_hub_dataset", "load_split",
            "pad_ids", "CausalLM", "TextClassifier", "TextModelConfig", "TrainConfig", "accuracy", "perplexity",
            "pretrained_models", "train_text_model"]

from vitedu.text.baseline import EmbeddingNeighbours, attack_ids
from vitedu.text.bertscore import BERTScorer, idf_weights
from vitedu.text.gbda import (GBDA, GBDAConfig, GBDAResult, changed_tokens, fluency_loss, gumbel_softmax, highlight,
                              highlight_html, margin_loss, sentence_perplexity)

__all__ += ["EmbeddingNeighbours", "attack_ids", "BERTScorer", "idf_weights", "GBDA", "GBDAConfig", "GBDAResult",
            "changed_tokens", "fluency_loss", "gumbel_softmax", "highlight", "highlight_html", "margin_loss",
            "sentence_perplexity"]
