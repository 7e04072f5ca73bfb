"""Text transformers for the GBDA chapter: the offline corpus, the shared BERT tokenizer and models, the attack."""

from vitedu.text.hub import load_reference_encoder, load_tokenizer, package_dir

__all__ = ["load_reference_encoder", "load_tokenizer", "package_dir"]
