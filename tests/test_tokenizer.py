import pytest

from depth2img.checkpoint.tokenizer import find_bpe_vocab, load_clip_tokenizer
from tests.references import reference

PROMPTS = ["a photo of a cat", "Ünïcödé, punctuation!!! and   spaces", "a" * 300, ""]


def test_vocabulary_and_special_tokens():
    tokenizer = load_clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id == 0
    assert tokenizer.model_max_length == 77
    assert find_bpe_vocab().name == "bpe_simple_vocab_16e6.txt.gz"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_open_clip_tokenize(prompt):
    """open_clip's own tokenizer is the reference SD 2 uses; it needs torchvision, so env (b) only."""
    open_clip = reference("open_clip")
    expected = open_clip.tokenize([prompt])[0].tolist()
    ours = load_clip_tokenizer()(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    if len(prompt) > 200:  # open_clip keeps EOT as the last token when truncating; so does SD 2's pipeline
        assert ours[:76] == expected[:76]
    else:
        assert ours == expected
