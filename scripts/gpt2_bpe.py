"""GPT-2's BPE as a tiktoken Encoding built offline from a rank table (gpt2.tiktoken), for scripts/prepare-data
and scripts/check-hf. tiktoken's own get_encoding("gpt2") downloads its table at run time."""
import tiktoken
from tiktoken.load import load_tiktoken_bpe

# GPT-2's pre-tokenizer pattern and its one special token, as tiktoken's own "gpt2" encoding has them.
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT = 50256


def encoding(table_path):
    enc = tiktoken.Encoding(name="gpt2", pat_str=PATTERN, mergeable_ranks=load_tiktoken_bpe(table_path),
                            special_tokens={"<|endoftext|>": END_OF_TEXT})
    assert enc.encode("Hello world") == [15496, 995], enc.encode("Hello world")
    return enc
